// dvi_probe: the data of an offline comparison of draft heads (docs/online-learning.md,
// "Choosing the head"). For every generated position of the target's greedy answers to bench
// prompts (Spec-Bench turns, each answer fed back, as `draftwise bench` runs them), it writes
// the exit hidden states h_E at several exit layers, the target's top-64 logits and its
// argmax, which prompt and turn the position belongs to and whether the prompt is held back
// (every 4th of its category, as `bench --holdout 4` holds them back), plus the LM head and
// the final norm's gain in fp32. tools/dvi_probe_train.py trains heads on them.
//
//   dvi_probe MODEL PROMPTS OUTDIR [--cpu] [--max-tokens N] [--layers E,E,...]
//
// Files (raw little-endian arrays): h<E>.f32 [N, hidden] for each exit layer (default 4, 6,
// 8, 10, 12, 16, 20), top_values.f32 and
// top_ids.i32 [N, 64], argmax.i32, prompt.i32, turn.i32, held.i32 [N], lm_head.f32
// [vocab, hidden], final_norm.f32 [hidden], meta.json.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <numeric>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "engine/benchmark.h"
#include "target/cpu_decoder.h"
#include "tools/model_loader.h"

namespace {

using namespace draftwise;

constexpr int kTopK = 64;
constexpr int kHoldout = 4;
const std::vector<int> kDefaultLayers = {4, 6, 8, 10, 12, 16, 20};

template <typename T>
bool write_array(const std::string& path, const std::vector<T>& values) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(values.data()), static_cast<std::streamsize>(values.size() * sizeof(T)));
  return static_cast<bool>(out);
}

int fail(const std::string& message) {
  std::fprintf(stderr, "dvi_probe: %s\n", message.c_str());
  return 1;
}

struct Dump {
  std::map<int, std::vector<float>> exit_hidden;  // by exit layer
  std::vector<float> top_values;
  std::vector<int32_t> top_ids, argmax, prompt, turn, held;
  int64_t differing = 0;  // positions whose argmax is not the generated token (near-ties)
};

// One turn: the target's logits at every generated position (one pass over prompt + answer),
// and h_E there at every exit layer.
Status dump_turn(Decoder& decoder, std::span<const int32_t> prompt, std::span<const int32_t> answer, int32_t prompt_index,
                 int32_t turn, bool held, std::span<const int> layers, Dump& dump) {
  const int64_t vocab = decoder.config().vocab_size;
  std::vector<int32_t> tokens(prompt.begin(), prompt.end());
  tokens.insert(tokens.end(), answer.begin(), answer.end() - 1);
  std::vector<int32_t> rows(answer.size());
  std::iota(rows.begin(), rows.end(), static_cast<int32_t>(prompt.size()) - 1);
  const SequenceId sequence = decoder.create_sequence();
  std::vector<float> logits;
  const ForwardRequest request{sequence, tokens, rows};
  const Status ran = decoder.forward(std::span(&request, 1), logits);
  decoder.release_sequence(sequence);
  DW_TRY(ran);
  std::vector<int32_t> order(static_cast<size_t>(vocab));
  for (size_t r = 0; r < rows.size(); ++r) {
    const float* row = logits.data() + r * static_cast<size_t>(vocab);
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + kTopK, order.end(),
                      [&](int32_t a, int32_t b) { return row[a] > row[b] || (row[a] == row[b] && a < b); });
    for (int k = 0; k < kTopK; ++k) {
      dump.top_ids.push_back(order[static_cast<size_t>(k)]);
      dump.top_values.push_back(row[order[static_cast<size_t>(k)]]);
    }
    dump.argmax.push_back(order[0]);
    dump.differing += order[0] != answer[r];
    dump.prompt.push_back(prompt_index);
    dump.turn.push_back(turn);
    dump.held.push_back(held ? 1 : 0);
  }
  for (const int layer : layers) {
    const SequenceId draft = decoder.create_sequence();
    std::vector<float> hidden, draft_logits;
    const DraftHead head{layer, {}, nullptr, &hidden};
    const ForwardRequest pass{draft, tokens, rows};
    const Status drafted = decoder.forward_draft(std::span(&pass, 1), head, draft_logits);
    decoder.release_sequence(draft);
    DW_TRY(drafted);
    std::vector<float>& kept = dump.exit_hidden[layer];
    kept.insert(kept.end(), hidden.begin(), hidden.end());
  }
  return {};
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) return fail("usage: dvi_probe MODEL PROMPTS OUTDIR [--cpu] [--max-tokens N] [--layers E,E,...]");
  const std::string model_path = argv[1], prompts_path = argv[2], out = argv[3];
  BackendOptions backend;
  backend.device.cuda = true;
  int64_t max_tokens = 64;
  std::vector<int> layers = kDefaultLayers;
  for (int i = 4; i < argc; ++i) {
    if (std::strcmp(argv[i], "--cpu") == 0) {
      backend.device.cuda = false;
    } else if (std::strcmp(argv[i], "--max-tokens") == 0 && i + 1 < argc) {
      max_tokens = std::atoll(argv[++i]);
    } else if (std::strcmp(argv[i], "--layers") == 0 && i + 1 < argc) {
      layers.clear();
      std::stringstream list(argv[++i]);
      for (std::string item; std::getline(list, item, ',');) layers.push_back(std::atoi(item.c_str()));
    } else {
      return fail(std::string("unknown argument ") + argv[i]);
    }
  }
  Expected<LoadedModel> model = load_model_file(model_path, backend);
  if (!model.ok()) return fail(model.error().message);
  if (!model->tokenizer || !model->tokenizer->chat_template()) return fail(model_path + ": needs a chat template");
  const Tokenizer& tokenizer = *model->tokenizer;
  Expected<ChatTemplate> chat = recognize_chat_template(tokenizer);
  if (!chat.ok()) return fail(chat.error().message);
  Expected<std::vector<BenchPrompt>> prompts = read_bench_prompts(prompts_path);
  if (!prompts.ok()) return fail(prompts.error().message);
  Decoder& decoder = *model->decoder;

  // ar's greedy answers, exactly as bench generates them.
  BenchConfig config;
  config.max_tokens = max_tokens;
  config.sampling.temperature = 0.0;
  config.stop_token_ids = chat_stop_token_ids(decoder, tokenizer);
  BenchFormat format;
  format.render = [&](std::span<const ChatMessage> messages) -> Expected<std::vector<int32_t>> {
    DW_ASSIGN_OR_RETURN(const std::string text, chat->render(messages, /*add_generation_prompt=*/true));
    return tokenizer.encode(text, EncodeOptions{.add_special = false, .parse_special = true});
  };
  format.answer_text = [&](std::span<const int32_t> tokens) { return tokenizer.decode(tokens, /*skip_special=*/true); };
  std::vector<BenchMode> modes(1);
  modes[0].name = "ar";
  Expected<std::vector<PromptOutcome>> outcomes = run_bench(decoder, *prompts, modes, config, format, nullptr);
  if (!outcomes.ok()) return fail(outcomes.error().message);

  Dump dump;
  std::map<std::string, int> seen;
  for (const PromptOutcome& outcome : *outcomes) {
    const bool held = ++seen[(*prompts)[outcome.prompt].category] % kHoldout == 0;
    const ModeOutcome& ar = outcome.modes.front();
    for (size_t turn = 0; turn < ar.turns.size(); ++turn) {
      if (ar.turns[turn].size() < 2) continue;
      if (Status dumped = dump_turn(decoder, ar.prompts[turn], ar.turns[turn], static_cast<int32_t>(outcome.prompt),
                                    static_cast<int32_t>(turn), held, layers, dump);
          !dumped.ok()) {
        return fail(dumped.error().message);
      }
    }
  }

  // The LM head and the final norm in fp32, from the CPU reference's copy.
  BackendOptions host;
  Expected<LoadedModel> reference = load_model_file(model_path, host);
  if (!reference.ok()) return fail(reference.error().message);
  const auto* cpu = dynamic_cast<const CpuDecoder*>(reference->decoder.get());
  if (cpu == nullptr) return fail("the reference model is not on the CPU");
  bool written = write_array(out + "/lm_head.f32", std::vector<float>(cpu->lm_head().begin(), cpu->lm_head().end())) &&
                 write_array(out + "/final_norm.f32",
                             std::vector<float>(cpu->final_norm_gain().begin(), cpu->final_norm_gain().end()));
  for (const int layer : layers) {
    written = written && write_array(out + "/h" + std::to_string(layer) + ".f32", dump.exit_hidden[layer]);
  }
  written = written && write_array(out + "/top_values.f32", dump.top_values) &&
            write_array(out + "/top_ids.i32", dump.top_ids) && write_array(out + "/argmax.i32", dump.argmax) &&
            write_array(out + "/prompt.i32", dump.prompt) && write_array(out + "/turn.i32", dump.turn) &&
            write_array(out + "/held.i32", dump.held);
  std::vector<std::string> categories;
  for (const BenchPrompt& prompt : *prompts) categories.push_back(prompt.category);
  const nlohmann::json meta = {{"records", dump.argmax.size()},
                               {"hidden", decoder.config().hidden_size},
                               {"vocab", decoder.config().vocab_size},
                               {"layers", layers},
                               {"top_k", kTopK},
                               {"eps", decoder.config().rms_norm_eps},
                               {"categories", categories},
                               {"device", decoder.device_name()}};
  std::ofstream(out + "/meta.json") << meta.dump();
  if (!written) return fail("cannot write under " + out);
  std::printf("%zu positions (%lld whose argmax is not the generated token) written to %s\n", dump.argmax.size(),
              static_cast<long long>(dump.differing), out.c_str());
  return 0;
}
