#include "tools/niah_bench.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <numeric>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "engine/chat_template.h"
#include "kernels/sha256.h"
#include "target/qttt.h"
#include "tools/bench_report.h"
#include "tools/cli_args.h"
#include "tools/model_loader.h"
#include "tools/niah_haystack.h"
#include "tools/niah_report.h"

namespace draftwise {

namespace {

using Clock = std::chrono::steady_clock;

// Prompt tokens a prefill pass takes at most (as GenerationOptions::prefill_chunk).
constexpr int64_t kPrefillChunk = 512;
// The context positions whose qTTT loss is reported: the last ones before the answer.
constexpr int64_t kContextLossPositions = 256;
constexpr const char* kDefaultFiller = "data/spec_bench/question_dev.jsonl";

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

struct NiahArgs {
  std::string model;
  std::string random_weights;
  std::string out;
  std::string lengths;
  std::string depths = "0.1,0.5,0.9";
  std::string trials = "2";
  std::string qttt = "on";
  std::string seed = "0";
  std::string max_tokens = "8";
  std::string filler;
  BackendArgs backend;
};

struct NiahSettings {
  std::vector<int64_t> lengths;  // empty: powers of two up to the model's limit
  std::vector<double> depths;
  int64_t trials = 0;
  QttOptions qttt;
  uint64_t seed = 0;
  int64_t max_tokens = 0;
  std::string filler_path;
};

std::vector<std::string> split_commas(const std::string& text) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t comma = std::min(text.find(',', start), text.size());
    std::string part = text.substr(start, comma - start);
    while (!part.empty() && part.front() == ' ') part.erase(part.begin());
    while (!part.empty() && part.back() == ' ') part.pop_back();
    parts.push_back(std::move(part));
    start = comma + 1;
  }
  return parts;
}

// The filler named, or the dev prompts: in the current folder, else in the source tree.
std::string filler_path(const std::string& given) {
  if (!given.empty()) return given;
  std::error_code error;
  if (std::filesystem::exists(kDefaultFiller, error)) return kDefaultFiller;
  return (std::filesystem::path(DRAFTWISE_SOURCE_DIR) / kDefaultFiller).string();
}

// The flags that need no model, checked before it loads.
Expected<NiahSettings> parse_settings(const NiahArgs& args, const ArgParser& parser) {
  NiahSettings settings;
  const int models = int{!args.model.empty()} + int{!args.random_weights.empty()};
  if (models != 1) return make_error("give one of --model PATH and --random-weights CONFIG.json");
  if (args.out.empty()) return make_error("--out is required");
  if (parser.given("lengths")) {
    for (const std::string& part : split_commas(args.lengths)) {
      DW_ASSIGN_OR_RETURN(const int64_t length, parse_integer_option("--lengths", part));
      if (length < 2) return make_error("--lengths: every length must be at least 2 tokens, got {}", length);
      if (std::find(settings.lengths.begin(), settings.lengths.end(), length) != settings.lengths.end()) {
        return make_error("--lengths: {} is given twice", length);
      }
      settings.lengths.push_back(length);
    }
  }
  for (const std::string& part : split_commas(args.depths)) {
    DW_ASSIGN_OR_RETURN(const double depth, parse_number_option("--depths", part));
    if (depth < 0 || depth > 1) return make_error("--depths: {} is outside [0, 1]", part);
    if (std::find(settings.depths.begin(), settings.depths.end(), depth) != settings.depths.end()) {
      return make_error("--depths: {} is given twice", part);
    }
    settings.depths.push_back(depth);
  }
  DW_ASSIGN_OR_RETURN(settings.trials, parse_integer_option("--trials", args.trials));
  if (settings.trials < 1) return make_error("--trials must be at least 1, got {}", settings.trials);
  if (args.qttt == "off") {
    return make_error(
        "--qttt off: the benchmark measures with and without qTTT; give on or a spec such as "
        "steps=16,span=128");
  }
  Expected<QttOptions> qttt = parse_qtt_spec(args.qttt);
  // parse_qtt_spec's errors start "qttt: ", so that "--" makes them name the flag.
  if (!qttt.ok()) return make_error("--{}", qttt.error().message);
  settings.qttt = *qttt;
  DW_ASSIGN_OR_RETURN(const int64_t seed, parse_integer_option("--seed", args.seed));
  if (seed < 0) return make_error("--seed must be ≥ 0, got {}", seed);
  settings.seed = static_cast<uint64_t>(seed);
  DW_ASSIGN_OR_RETURN(settings.max_tokens, parse_integer_option("--max-tokens", args.max_tokens));
  if (settings.max_tokens < 1) return make_error("--max-tokens must be positive, got {}", settings.max_tokens);
  settings.filler_path = filler_path(args.filler);
  return settings;
}

// Powers of two from 1024 up to the longest prompt that leaves room for the answer, and that
// longest one.
std::vector<int64_t> default_lengths(int64_t longest) {
  std::vector<int64_t> lengths;
  for (int64_t length = 1024; length <= longest; length *= 2) lengths.push_back(length);
  if (lengths.empty() || lengths.back() < longest) lengths.push_back(longest);
  return lengths;
}

// Whether `text` holds `number` with no digit right before or after it.
bool holds_number(std::string_view text, std::string_view number) {
  const auto digit = [](char c) { return c >= '0' && c <= '9'; };
  for (size_t at = text.find(number); at != std::string_view::npos; at = text.find(number, at + 1)) {
    const bool before = at > 0 && digit(text[at - 1]);
    const bool after = at + number.size() < text.size() && digit(text[at + number.size()]);
    if (!before && !after) return true;
  }
  return false;
}

// A shell-ready spelling of the command line, for the report.
std::string command_line(const std::vector<std::string>& args) {
  std::string command = "draftwise bench --niah";
  for (const std::string& arg : args) {
    const bool plain = !arg.empty() && std::all_of(arg.begin(), arg.end(), [](char c) {
      return std::isalnum(static_cast<unsigned char>(c)) ||
             std::string_view("_./:=,@+-").find(c) != std::string_view::npos;
    });
    command += " ";
    if (plain) {
      command += arg;
    } else {
      command += "'";
      for (const char c : arg) command += c == '\'' ? std::string("'\\''") : std::string(1, c);
      command += "'";
    }
  }
  return command;
}

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  std::tm parts{};
  gmtime_r(&now, &parts);
  char text[32];
  std::strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", &parts);
  return text;
}

// What a case's decode needs besides the decoder.
struct AnswerSetup {
  const Tokenizer* tokenizer = nullptr;
  std::vector<int32_t> stop_token_ids;
  int64_t max_tokens = 0;
};

struct GreedyAnswer {
  std::vector<int32_t> tokens;
  std::string text;
  bool correct = false;
  double seconds = 0;  // every pass of the decode, the one of the prompt's last token included
};

struct AnswerSide {
  double logprob = 0;  // Σ log p(answer_i | prompt, answer_<i)
  double context_loss = 0;
  GreedyAnswer greedy;
};

struct NiahCase {
  int64_t length = 0;
  double depth = 0;
  int64_t trial = 0;
  Needle needle;
  NiahPrompt prompt;
  double prefill_seconds = 0;
  int64_t context_loss_first = 0;
  int64_t context_loss_count = 0;
  AnswerSide without, with;
  QttReport adaptation;
};

// Frees a sequence on every way out.
class SequenceGuard {
 public:
  explicit SequenceGuard(Decoder& decoder) : decoder_(decoder), sequence_(decoder.create_sequence()) {}
  ~SequenceGuard() { decoder_.release_sequence(sequence_); }
  SequenceGuard(const SequenceGuard&) = delete;
  SequenceGuard& operator=(const SequenceGuard&) = delete;
  SequenceId id() const { return sequence_; }

 private:
  Decoder& decoder_;
  SequenceId sequence_;
};

// The tokens in prefill passes of at most kPrefillChunk, no logits.
Status prefill(Decoder& decoder, SequenceId sequence, std::span<const int32_t> tokens) {
  std::vector<int32_t> none;
  for (size_t first = 0; first < tokens.size(); first += kPrefillChunk) {
    const ForwardRequest chunk{
        sequence, tokens.subspan(first, std::min<size_t>(kPrefillChunk, tokens.size() - first)), {}};
    DW_TRY(decoder.forward_greedy(std::span(&chunk, 1), none));
  }
  return {};
}

// Σ log p(answer_i | prompt, answer_<i) for a sequence holding all of the prompt but its last
// token: one pass over [last prompt token, the answer but its last token], every row's logits.
// The sequence is cut back after it.
Expected<double> answer_logprob(Decoder& decoder, SequenceId sequence, int32_t last_prompt_token,
                                std::span<const int32_t> answer) {
  const int64_t length = decoder.sequence_length(sequence);
  std::vector<int32_t> tokens = {last_prompt_token};
  tokens.insert(tokens.end(), answer.begin(), answer.end() - 1);
  std::vector<int32_t> rows(tokens.size());
  std::iota(rows.begin(), rows.end(), 0);
  std::vector<float> logits;  // [answer, vocab]
  const ForwardRequest request{sequence, tokens, rows};
  DW_TRY(decoder.forward(std::span(&request, 1), logits));
  DW_TRY(decoder.truncate_sequence(sequence, length));
  const size_t vocab = static_cast<size_t>(decoder.config().vocab_size);
  double total = 0;
  for (size_t i = 0; i < answer.size(); ++i) {
    const std::span<const float> row(logits.data() + i * vocab, vocab);
    const double largest = *std::max_element(row.begin(), row.end());
    double sum = 0;
    for (const float value : row) sum += std::exp(static_cast<double>(value) - largest);
    total += static_cast<double>(row[static_cast<size_t>(answer[i])]) - largest - std::log(sum);
  }
  if (!std::isfinite(total)) return make_error("the model gave non-finite logits for the answer");
  return total;
}

// The greedy continuation of the prompt, from its last token, up to max_tokens or a stop
// token; the sequence is cut back after it.
Expected<GreedyAnswer> greedy_answer(Decoder& decoder, SequenceId sequence, int32_t last_prompt_token,
                                     const Needle& needle, const AnswerSetup& setup) {
  const int64_t length = decoder.sequence_length(sequence);
  GreedyAnswer answer;
  int32_t next = last_prompt_token;
  const int32_t row = 0;
  std::vector<int32_t> picked;
  const Clock::time_point start = Clock::now();
  while (static_cast<int64_t>(answer.tokens.size()) < setup.max_tokens) {
    const ForwardRequest request{sequence, std::span(&next, 1), std::span(&row, 1)};
    DW_TRY(decoder.forward_greedy(std::span(&request, 1), picked));
    next = picked.front();
    answer.tokens.push_back(next);
    if (std::find(setup.stop_token_ids.begin(), setup.stop_token_ids.end(), next) != setup.stop_token_ids.end()) break;
  }
  answer.seconds = seconds_since(start);
  DW_TRY(decoder.truncate_sequence(sequence, length));
  answer.text = setup.tokenizer->decode(answer.tokens, /*skip_special=*/true);
  answer.correct = holds_number(answer.text, needle.number);
  return answer;
}

// The context loss, the answer's log-probability and the greedy answer, with the sequence's
// adaptation as it stands.
Expected<AnswerSide> measure_answer(Decoder& decoder, SequenceId sequence, const NiahCase& run,
                                    const AnswerSetup& setup) {
  AnswerSide side;
  const std::span<const int32_t> prompt = run.prompt.tokens;
  DW_ASSIGN_OR_RETURN(side.context_loss,
                      decoder.query_loss(sequence, prompt, run.context_loss_first, run.context_loss_count, nullptr));
  DW_ASSIGN_OR_RETURN(side.logprob, answer_logprob(decoder, sequence, prompt.back(), run.prompt.answer));
  DW_ASSIGN_OR_RETURN(side.greedy, greedy_answer(decoder, sequence, prompt.back(), run.needle, setup));
  return side;
}

Status run_case(Decoder& decoder, NiahCase& run, const QttOptions& options, const AnswerSetup& setup) {
  const std::span<const int32_t> prompt = run.prompt.tokens;
  const int64_t context = static_cast<int64_t>(prompt.size()) - 1;
  run.context_loss_count = std::min(kContextLossPositions, context);
  run.context_loss_first = context - run.context_loss_count;
  const SequenceGuard sequence(decoder);
  const Clock::time_point start = Clock::now();
  DW_TRY(prefill(decoder, sequence.id(), prompt.first(static_cast<size_t>(context))));
  run.prefill_seconds = seconds_since(start);
  DW_ASSIGN_OR_RETURN(run.without, measure_answer(decoder, sequence.id(), run, setup));
  // As a request with GenerationOptions::qttt: the context is the whole prompt, of which the
  // sequence holds all but the last token.
  DW_ASSIGN_OR_RETURN(run.adaptation, decoder.adapt_queries(sequence.id(), prompt, options));
  DW_ASSIGN_OR_RETURN(run.with, measure_answer(decoder, sequence.id(), run, setup));
  return {};
}

// First calls pay for allocations, kernel loading and graph captures: one small untimed flow
// (a prefill chunk, an answer pass, a decode step, a qTTT step) keeps them out of the figures.
Status warm_up(Decoder& decoder, const NiahPrompt& prompt, const QttOptions& options) {
  const std::span<const int32_t> tokens =
      std::span(prompt.tokens).first(std::min<size_t>(prompt.tokens.size(), kPrefillChunk + 1));
  const SequenceGuard sequence(decoder);
  DW_TRY(prefill(decoder, sequence.id(), tokens.first(tokens.size() - 1)));
  DW_TRY(answer_logprob(decoder, sequence.id(), tokens.back(), prompt.answer));
  std::vector<int32_t> picked;
  const int32_t row = 0;
  const ForwardRequest step{sequence.id(), tokens.last(1), std::span(&row, 1)};
  DW_TRY(decoder.forward_greedy(std::span(&step, 1), picked));
  DW_TRY(decoder.truncate_sequence(sequence.id(), static_cast<int64_t>(tokens.size()) - 1));
  QttOptions one_step = options;
  one_step.steps = 1;
  DW_TRY(decoder.adapt_queries(sequence.id(), tokens, one_step));
  return {};
}

nlohmann::json side_json(const AnswerSide& side) {
  const double passes = static_cast<double>(side.greedy.tokens.size());
  return {{"answer", side.greedy.text},
          {"answer_token_ids", side.greedy.tokens},
          {"correct", side.greedy.correct},
          {"answer_logprob", side.logprob},
          {"context_loss", side.context_loss},
          {"decode_tokens", side.greedy.tokens.size()},
          {"decode_seconds", side.greedy.seconds},
          {"decode_seconds_per_token", passes > 0 ? side.greedy.seconds / passes : 0.0}};
}

nlohmann::json case_json(const NiahCase& run, const ModelConfig& config, const Tokenizer& tokenizer) {
  const int64_t prompt_tokens = static_cast<int64_t>(run.prompt.tokens.size());
  const int64_t prefilled = prompt_tokens - 1;
  const double prefill = prefill_flops(config, prefilled);
  const double decode_token = decode_token_flops(config, prompt_tokens);
  const auto per_token = [](const GreedyAnswer& answer) {
    return answer.tokens.empty() ? 0.0 : answer.seconds / static_cast<double>(answer.tokens.size());
  };
  return {{"length", run.length},
          {"depth", run.depth},
          {"trial", run.trial},
          {"prompt_tokens", prompt_tokens},
          {"needle",
           {{"name", run.needle.name},
            {"number", run.needle.number},
            {"fact", run.needle.fact},
            {"position", run.prompt.needle_position},
            {"tokens", run.prompt.needle_tokens},
            {"depth", run.prompt.depth}}},
          {"haystack_position", run.prompt.haystack_position},
          {"filler_tokens", run.prompt.filler_tokens},
          {"expected_answer", tokenizer.decode(run.prompt.answer)},
          {"expected_answer_token_ids", run.prompt.answer},
          {"context_loss_positions", {run.context_loss_first, run.context_loss_first + run.context_loss_count}},
          {"without_qttt", side_json(run.without)},
          {"with_qttt", side_json(run.with)},
          {"qttt",
           {{"steps", run.adaptation.losses.size()},
            {"span", run.adaptation.span},
            {"context", run.adaptation.context},
            {"losses", run.adaptation.losses},
            {"seconds", run.adaptation.seconds},
            {"flops", run.adaptation.flops},
            {"parameter_bytes", run.adaptation.parameter_bytes}}},
          {"cost",
           {{"prefill_tokens", prefilled},
            {"prefill_seconds", run.prefill_seconds},
            {"prefill_flops", prefill},
            {"adaptation_seconds", run.adaptation.seconds},
            {"adaptation_flops", run.adaptation.flops},
            {"decode_seconds_per_token", per_token(run.without.greedy)},
            {"decode_seconds_per_token_with_qttt", per_token(run.with.greedy)},
            {"decode_token_flops", decode_token},
            {"adaptation_over_prefill_seconds",
             run.prefill_seconds > 0 ? run.adaptation.seconds / run.prefill_seconds : 0.0},
            {"adaptation_over_prefill_flops", prefill > 0 ? run.adaptation.flops / prefill : 0.0},
            {"adaptation_in_decode_tokens", decode_token > 0 ? run.adaptation.flops / decode_token : 0.0}}}};
}

// Counts and means over a group of cases (their JSON).
nlohmann::json summary_json(const std::vector<const nlohmann::json*>& cases) {
  const double count = static_cast<double>(cases.size());
  const auto mean = [&](const auto& value_of) {
    double total = 0;
    for (const nlohmann::json* run : cases) total += value_of(*run);
    return count > 0 ? total / count : 0.0;
  };
  int64_t right_without = 0, right_with = 0;
  for (const nlohmann::json* run : cases) {
    right_without += (*run)["without_qttt"]["correct"].get<bool>() ? 1 : 0;
    right_with += (*run)["with_qttt"]["correct"].get<bool>() ? 1 : 0;
  }
  nlohmann::json cost = nlohmann::json::object();
  for (const auto& [name, value] : cases.front()->at("cost").items()) {
    cost[name] = mean([&, name = name](const nlohmann::json& run) { return run["cost"][name].get<double>(); });
  }
  return {{"cases", cases.size()},
          {"correct_without_qttt", right_without},
          {"correct_with_qttt", right_with},
          {"accuracy_without_qttt", static_cast<double>(right_without) / count},
          {"accuracy_with_qttt", static_cast<double>(right_with) / count},
          {"mean_answer_logprob_without_qttt",
           mean([](const nlohmann::json& run) { return run["without_qttt"]["answer_logprob"].get<double>(); })},
          {"mean_answer_logprob_with_qttt",
           mean([](const nlohmann::json& run) { return run["with_qttt"]["answer_logprob"].get<double>(); })},
          {"mean_context_loss_without_qttt",
           mean([](const nlohmann::json& run) { return run["without_qttt"]["context_loss"].get<double>(); })},
          {"mean_context_loss_with_qttt",
           mean([](const nlohmann::json& run) { return run["with_qttt"]["context_loss"].get<double>(); })},
          {"mean_prompt_tokens", mean([](const nlohmann::json& run) { return run["prompt_tokens"].get<double>(); })},
          {"mean_needle_depth", mean([](const nlohmann::json& run) { return run["needle"]["depth"].get<double>(); })},
          {"cost", cost}};
}

// Overall, per length, and per length and depth, in the order of the flags.
nlohmann::json summaries_json(const nlohmann::json& cases, const NiahSettings& settings,
                              const std::vector<int64_t>& lengths) {
  const auto select = [&](const std::function<bool(const nlohmann::json&)>& keep) {
    std::vector<const nlohmann::json*> chosen;
    for (const nlohmann::json& run : cases) {
      if (keep(run)) chosen.push_back(&run);
    }
    return chosen;
  };
  nlohmann::json summary = {{"overall", summary_json(select([](const nlohmann::json&) { return true; }))},
                            {"lengths", nlohmann::json::array()},
                            {"cells", nlohmann::json::array()}};
  for (const int64_t length : lengths) {
    nlohmann::json entry = {{"length", length}};
    entry.update(summary_json(select([&](const nlohmann::json& run) { return run["length"] == length; })));
    summary["lengths"].push_back(std::move(entry));
    for (const double depth : settings.depths) {
      nlohmann::json cell = {{"length", length}, {"depth", depth}};
      cell.update(summary_json(
          select([&](const nlohmann::json& run) { return run["length"] == length && run["depth"] == depth; })));
      summary["cells"].push_back(std::move(cell));
    }
  }
  return summary;
}

int report_error(const Error& error) {
  print_error("draftwise bench --niah: " + error.message);
  return 1;
}

}  // namespace

int run_niah_bench(const std::vector<std::string>& cli) {
  NiahArgs args;
  ArgParser parser("bench --niah",
                   "The needle-in-a-haystack benchmark of qTTT: a fact placed at several depths of real filler "
                   "text, a question about it at the end; accuracy, the answer's log-probability and the "
                   "context "
                   "loss without and with qTTT at several prompt lengths, and the cost of the adaptation "
                   "against "
                   "prefill and decode. Writes DIR/niah.json, DIR/niah.md, DIR/niah.svg and "
                   "DIR/niah_logprob.svg.");
  parser.add_option("model", &args.model, "PATH", "GGUF file or Hugging Face model folder, with a tokenizer");
  parser.add_option("random-weights", &args.random_weights, "CONFIG.json",
                    "seeded random weights in a config's shape (needs --tokenizer)");
  parser.add_option("out", &args.out, "DIR", "where niah.json, niah.md and the plots go (created if missing)");
  parser.add_option("lengths", &args.lengths, "1024,4096",
                    "prompt lengths in tokens, each with room for the answer in the context (default: powers of "
                    "two from 1024 up to the model's limit, and that limit)");
  parser.add_option("depths", &args.depths, "0.1,0.5",
                    "where the needle goes, as shares of the filler's tokens in [0, 1] (default 0.1,0.5,0.9)");
  parser.add_option("trials", &args.trials, "N", "needles per length and depth, each a different one (default 2)");
  parser.add_option(
      "qttt", &args.qttt, "SPEC",
      fmt::format("the adaptation: on ({}) or some of those keys (docs/qttt.md; default on)", qtt_spec(QttOptions{})));
  parser.add_option("seed", &args.seed, "S", "picks the needles (default 0)");
  parser.add_option("max-tokens", &args.max_tokens, "N", "tokens of the greedy answer at most (default 8)");
  parser.add_option("filler", &args.filler, "FILE",
                    fmt::format("Spec-Bench question.jsonl whose summarization articles and RAG passages are the "
                                "filler (default {}, here or in the source tree)",
                                kDefaultFiller));
  add_backend_options(parser, args.backend);
  if (const std::optional<int> exit_code = parser.parse_or_exit_code(cli)) return *exit_code;
  Expected<NiahSettings> parsed = parse_settings(args, parser);
  if (!parsed.ok()) return report_error(parsed.error());
  NiahSettings& settings = *parsed;
  Expected<BackendOptions> backend = parse_backend_options(args.backend);
  if (!backend.ok()) return report_error(backend.error());
  Expected<std::string> filler_text = read_niah_filler(settings.filler_path);
  if (!filler_text.ok()) return report_error(make_error("--filler {}", filler_text.error().message));

  const std::string model_path = args.model.empty() ? args.random_weights : args.model;
  Expected<LoadedModel> model =
      args.model.empty() ? load_random_model(args.random_weights, *backend) : load_model_file(args.model, *backend);
  if (!model.ok()) return report_error(model.error());
  if (!model->tokenizer) {
    return report_error(
        make_error("{}: the model has no tokenizer, and the benchmark writes its prompts as text; "
                   "give one with --tokenizer PATH",
                   model_path));
  }
  const Tokenizer& tokenizer = *model->tokenizer;
  Decoder& decoder = *model->decoder;
  if (const Status valid = check_qtt_options(settings.qttt, decoder.config()); !valid.ok()) {
    return report_error(make_error("--{}", valid.error().message));
  }
  const int64_t longest = decoder.context_length() - settings.max_tokens;
  if (longest < 2) {
    return report_error(make_error("--max-tokens {} leaves no room for a prompt in the context of {} positions",
                                   settings.max_tokens, decoder.context_length()));
  }
  if (settings.lengths.empty()) settings.lengths = default_lengths(longest);
  for (const int64_t length : settings.lengths) {
    if (length > longest) {
      return report_error(
          make_error("--lengths {}: the prompt and an answer of --max-tokens {} need {} positions; "
                     "the context holds {} (prompts of at most {} tokens)",
                     length, settings.max_tokens, length + settings.max_tokens, decoder.context_length(), longest));
    }
  }
  const Expected<std::string> model_hash = sha256_of_path(model_path);
  if (!model_hash.ok()) return report_error(model_hash.error());

  NiahFormat format;
  format.encode = [&](std::string_view text) {
    return tokenizer.encode(text, EncodeOptions{.add_special = false, .parse_special = true});
  };
  std::string prompt_format = "plain text";
  std::optional<ChatTemplate> chat;
  if (tokenizer.chat_template()) {
    Expected<ChatTemplate> recognized = recognize_chat_template(tokenizer);
    if (!recognized.ok()) return report_error(make_error("{}: {}", model_path, recognized.error().message));
    chat = *recognized;
    prompt_format = fmt::format("{} chat template", chat_family_name(chat->family()));
    format.render = [&](const std::string& message) -> Expected<std::string> {
      const std::vector<ChatMessage> messages = {{"user", message}};
      return chat->render(messages, /*add_generation_prompt=*/true);
    };
  } else {
    // A base model: the text as it is, after the BOS token where the tokenizer adds one.
    const std::string bos =
        tokenizer.definition().add_bos && tokenizer.bos_id() ? tokenizer.token(*tokenizer.bos_id()) : std::string();
    format.render = [bos](const std::string& message) -> Expected<std::string> { return bos + message + "\n\n"; };
  }
  const NiahFiller filler(*filler_text, format.encode);

  // Every prompt first, so that a length the filler cannot fill stops the run before it starts.
  std::vector<NiahCase> cases;
  for (const int64_t length : settings.lengths) {
    for (const double depth : settings.depths) {
      for (int64_t trial = 0; trial < settings.trials; ++trial) {
        NiahCase run;
        run.length = length;
        run.depth = depth;
        run.trial = trial;
        run.needle = make_needle(settings.seed, trial);
        Expected<NiahPrompt> prompt = build_niah_prompt(filler, run.needle, length, depth, format);
        if (!prompt.ok()) return report_error(make_error("--lengths {}: {}", length, prompt.error().message));
        run.prompt = std::move(*prompt);
        if (static_cast<int64_t>(run.prompt.answer.size()) > settings.max_tokens) {
          return report_error(make_error("--max-tokens {} cannot hold the answer ' {}', which is {} tokens",
                                         settings.max_tokens, run.needle.number, run.prompt.answer.size()));
        }
        cases.push_back(std::move(run));
      }
    }
  }

  AnswerSetup setup;
  setup.tokenizer = &tokenizer;
  setup.stop_token_ids = chat_stop_token_ids(decoder, tokenizer);
  setup.max_tokens = settings.max_tokens;
  if (const Status warmed = warm_up(decoder, cases.front().prompt, settings.qttt); !warmed.ok()) {
    return report_error(warmed.error());
  }
  const auto mark = [](bool correct) { return correct ? "right" : "wrong"; };
  nlohmann::json case_list = nlohmann::json::array();
  for (size_t i = 0; i < cases.size(); ++i) {
    NiahCase& run = cases[i];
    if (const Status ran = run_case(decoder, run, settings.qttt, setup); !ran.ok()) {
      return report_error(
          make_error("length {}, depth {}, trial {}: {}", run.length, run.depth, run.trial, ran.error().message));
    }
    fmt::print(stderr,
               "[{}/{}] {} tokens, needle {} at depth {:.2f}: without qTTT {} '{}', with qTTT {} '{}'; "
               "log p(answer) {:.3f} -> {:.3f}; qTTT {:.2f} s ({:.2f}x the prefill)\n",
               i + 1, cases.size(), run.prompt.tokens.size(), run.needle.number, run.prompt.depth,
               mark(run.without.greedy.correct), markdown_cell(run.without.greedy.text), mark(run.with.greedy.correct),
               markdown_cell(run.with.greedy.text), run.without.logprob, run.with.logprob, run.adaptation.seconds,
               run.prefill_seconds > 0 ? run.adaptation.seconds / run.prefill_seconds : 0.0);
    case_list.push_back(case_json(run, decoder.config(), tokenizer));
  }

  nlohmann::json results = {{"config",
                             {{"model", model_path},
                              {"model_sha256", *model_hash},
                              {"device", decoder.device_name()},
                              {"backend", model->backend},
                              {"date", utc_now()},
                              {"command", command_line(cli)},
                              {"context_length", decoder.context_length()},
                              {"prompt_format", prompt_format},
                              {"qttt", qtt_spec(settings.qttt)},
                              {"lengths", settings.lengths},
                              {"depths", settings.depths},
                              {"trials", settings.trials},
                              {"seed", settings.seed},
                              {"max_tokens", settings.max_tokens},
                              {"filler", settings.filler_path},
                              {"filler_tokens", filler.tokens_before(filler.words())},
                              {"prefill_chunk", kPrefillChunk},
                              {"context_loss_positions", kContextLossPositions}}},
                            {"cases", case_list},
                            {"summary", summaries_json(case_list, settings, settings.lengths)}};

  if (const Status written = write_results_json(results, args.out, "niah.json"); !written.ok()) {
    return report_error(written.error());
  }
  const Expected<std::vector<ReportFile>> report = niah_report_files(results);
  if (!report.ok()) return report_error(report.error());
  if (const Status written = write_report_files(*report, args.out); !written.ok()) return report_error(written.error());
  const Expected<std::string> tables = niah_summary_tables(results);
  if (!tables.ok()) return report_error(tables.error());
  fmt::print("{}", *tables);
  return 0;
}

}  // namespace draftwise
