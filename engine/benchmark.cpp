#include "engine/benchmark.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "engine/request_json.h"

namespace draftwise {

namespace {

Expected<BenchPrompt> parse_prompt_line(const nlohmann::json& line, size_t number) {
  BenchPrompt prompt;
  if (!line.is_object()) return make_error("line {}: expected a JSON object", number);
  if (line.contains("question_id")) {
    const nlohmann::json& id = line["question_id"];
    prompt.id = id.is_string() ? id.get<std::string>() : id.dump();
  } else if (line.contains("id")) {
    const nlohmann::json& id = line["id"];
    prompt.id = id.is_string() ? id.get<std::string>() : id.dump();
  } else {
    prompt.id = std::to_string(number);
  }
  prompt.category = "default";
  if (line.contains("category")) {
    if (!line["category"].is_string()) return make_error("line {}: \"category\" must be a string", number);
    prompt.category = line["category"].get<std::string>();
  }
  const int sources = int{line.contains("turns")} + int{line.contains("prompt")} + int{line.contains("messages")};
  if (sources != 1) return make_error("line {}: expected exactly one of \"turns\", \"prompt\" and \"messages\"", number);
  if (line.contains("turns")) {
    const nlohmann::json& turns = line["turns"];
    if (!turns.is_array() || turns.empty()) return make_error("line {}: \"turns\" must be a non-empty list", number);
    for (const nlohmann::json& turn : turns) {
      if (!turn.is_string()) return make_error("line {}: every turn must be a string", number);
      prompt.turns.push_back(turn.get<std::string>());
    }
  } else if (line.contains("prompt")) {
    if (!line["prompt"].is_string()) return make_error("line {}: \"prompt\" must be a string", number);
    prompt.turns.push_back(line["prompt"].get<std::string>());
  } else {
    Expected<std::vector<ChatMessage>> messages = chat_messages_from_json(line["messages"]);
    if (!messages.ok()) return make_error("line {}: {}", number, messages.error().message);
    prompt.messages = std::move(*messages);
  }
  return prompt;
}

// The smallest relative top-1/top-2 margin of the decoder's logits over `generated`'s first
// `count` positions after `prompt` (teacher-forced on those tokens); with qTTT, adapted as the
// request was: after all of the prompt but its last token.
Expected<double> smallest_margin(Decoder& decoder, std::span<const int32_t> prompt,
                                 std::span<const int32_t> generated, int64_t count,
                                 const std::optional<QttOptions>& qttt) {
  const size_t adapted = qttt ? prompt.size() - 1 : 0;
  std::vector<int32_t> tokens(prompt.begin() + static_cast<std::ptrdiff_t>(adapted), prompt.end());
  tokens.insert(tokens.end(), generated.begin(), generated.begin() + count - 1);
  std::vector<int32_t> rows;
  for (int64_t i = 0; i < count; ++i) {
    rows.push_back(static_cast<int32_t>(prompt.size() - 1 - adapted + i));
  }
  const SequenceId sequence = decoder.create_sequence();
  std::vector<float> logits;
  const Status ran = [&]() -> Status {
    if (qttt) {
      DW_TRY(decoder.forward(std::vector<ForwardRequest>{{sequence, prompt.first(adapted), {}}},
                             logits));
      DW_TRY(decoder.adapt_queries(sequence, prompt, *qttt));
    }
    return decoder.forward(std::vector<ForwardRequest>{{sequence, tokens, rows}}, logits);
  }();
  decoder.release_sequence(sequence);
  DW_TRY(ran);
  const size_t vocab = static_cast<size_t>(decoder.config().vocab_size);
  double smallest = INFINITY;
  for (size_t r = 0; r < rows.size(); ++r) {
    const std::span<const float> row(logits.data() + r * vocab, vocab);
    float best = -INFINITY;
    float second = -INFINITY;
    float largest = 0.0f;
    for (const float value : row) {
      if (value > best) {
        second = best;
        best = value;
      } else if (value > second) {
        second = value;
      }
      largest = std::max(largest, std::fabs(value));
    }
    smallest = std::min(smallest, static_cast<double>(best - second) / std::max(largest, 1e-6f));
  }
  return smallest;
}

}  // namespace

Expected<std::vector<BenchPrompt>> read_bench_prompts(const std::string& path) {
  std::ifstream file(path);
  if (!file) return make_error("{}: cannot be read", path);
  std::vector<BenchPrompt> prompts;
  std::string line;
  for (size_t number = 1; std::getline(file, line); ++number) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const nlohmann::json parsed = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (parsed.is_discarded()) return make_error("{}: line {} is not valid JSON", path, number);
    Expected<BenchPrompt> prompt = parse_prompt_line(parsed, number);
    if (!prompt.ok()) return make_error("{}: {}", path, prompt.error().message);
    prompts.push_back(std::move(*prompt));
  }
  if (file.bad()) return make_error("{}: read error", path);
  if (prompts.empty()) return make_error("{}: holds no prompts", path);
  return prompts;
}

Expected<std::vector<BenchPrompt>> select_bench_prompts(std::vector<BenchPrompt> prompts,
                                                        std::span<const std::string> categories, int64_t per_category) {
  std::set<std::string> known;
  for (const BenchPrompt& prompt : prompts) known.insert(prompt.category);
  for (const std::string& category : categories) {
    if (known.count(category) == 0) {
      std::string names;
      for (const std::string& name : known) names += (names.empty() ? "" : ", ") + name;
      return make_error("unknown category '{}' (the prompts have: {})", category, names);
    }
  }
  std::vector<BenchPrompt> selected;
  std::map<std::string, int64_t> taken;
  for (BenchPrompt& prompt : prompts) {
    if (!categories.empty() && std::find(categories.begin(), categories.end(), prompt.category) == categories.end()) {
      continue;
    }
    if (per_category > 0 && taken[prompt.category] >= per_category) continue;
    ++taken[prompt.category];
    selected.push_back(std::move(prompt));
  }
  return selected;
}

Expected<std::vector<PromptOutcome>> run_bench(Decoder& decoder, std::span<const BenchPrompt> prompts,
                                               std::span<const BenchMode> modes, const BenchConfig& config,
                                               const BenchFormat& format, const BenchProgress& progress) {
  if (modes.empty() || modes.front().drafter != nullptr) {
    return make_error("the first mode must be plain decoding (ar), the reference of the others");
  }
  std::vector<PromptOutcome> outcomes;
  for (size_t p = 0; p < prompts.size(); ++p) {
    const BenchPrompt& prompt = prompts[p];
    PromptOutcome outcome;
    outcome.prompt = p;
    for (const BenchMode& mode : modes) {
      ModeOutcome result;
      std::vector<ChatMessage> conversation = prompt.messages;
      const size_t turns = prompt.turns.empty() ? 1 : prompt.turns.size();
      for (size_t turn = 0; turn < turns; ++turn) {
        if (!prompt.turns.empty()) conversation.push_back({"user", prompt.turns[turn]});
        Expected<std::vector<int32_t>> tokens = format.render(conversation);
        if (!tokens.ok()) return make_error("prompt {}: {}", prompt.id, tokens.error().message);
        result.prompts.push_back(*tokens);
        GenerationOptions options;
        options.max_tokens = config.max_tokens;
        options.sampling = config.sampling;
        // Every mode draws from the same stream for a turn; turns and prompts differ.
        options.sampling.seed = config.sampling.seed + 1000003ull * p + turn;
        options.stop_token_ids = config.stop_token_ids;
        options.drafter = mode.drafter;
        options.draft_length = mode.draft_length;
        options.qttt = config.qttt;
        const auto start = std::chrono::steady_clock::now();
        Expected<GenerationResult> generated =
            mode.generate ? mode.generate(decoder, *tokens, options) : generate(decoder, nullptr, *tokens, options);
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        if (!generated.ok()) {
          return make_error("prompt {}, mode {}: {}", prompt.id, mode.name, generated.error().message);
        }
        result.seconds += seconds;
        result.tokens += static_cast<int64_t>(generated->token_ids.size());
        result.speculation.add(generated->stats.speculation);
        if (generated->stats.qttt) {
          ++result.adaptations;
          result.adaptation_seconds += generated->stats.qttt->seconds;
        }
        conversation.push_back({"assistant", format.answer_text(generated->token_ids)});
        result.turns.push_back(std::move(generated->token_ids));
      }
      // Losslessness: the mode's tokens against ar's, turn by turn (greedy only: sampled
      // text may differ, as drafts consume random numbers differently).
      if (!outcome.modes.empty() && config.sampling.greedy()) {
        const ModeOutcome& reference = outcome.modes.front();
        for (size_t turn = 0; turn < result.turns.size() && !result.difference; ++turn) {
          const std::vector<int32_t>& mine = result.turns[turn];
          const std::vector<int32_t>& theirs = reference.turns[turn];
          size_t position = 0;
          while (position < mine.size() && position < theirs.size() && mine[position] == theirs[position]) ++position;
          if (position < mine.size() || position < theirs.size()) {
            OutputDifference difference{static_cast<int>(turn), static_cast<int64_t>(position), 0.0, false};
            // ar's margins up to the difference (its own tokens; a difference past ar's end
            // has no logits of ar's to read there).
            const int64_t count = std::min<int64_t>(static_cast<int64_t>(position) + 1,
                                                    static_cast<int64_t>(theirs.size()));
            if (count > 0) {
              DW_ASSIGN_OR_RETURN(
                  difference.reference_margin,
                  smallest_margin(decoder, reference.prompts[turn], theirs, count, config.qttt));
              difference.after_near_tie = difference.reference_margin < config.near_tie;
            }
            result.difference = difference;
          }
        }
      }
      outcome.modes.push_back(std::move(result));
    }
    outcomes.push_back(std::move(outcome));
    if (progress) progress(p + 1, prompts.size(), outcomes.back());
  }
  return outcomes;
}

std::vector<ModeSummary> summarize_bench(std::span<const PromptOutcome> outcomes, std::span<const BenchPrompt> prompts,
                                         size_t modes, const std::string& category) {
  std::vector<ModeSummary> summaries(modes);
  for (const PromptOutcome& outcome : outcomes) {
    if (!category.empty() && prompts[outcome.prompt].category != category) continue;
    for (size_t m = 0; m < modes && m < outcome.modes.size(); ++m) {
      const ModeOutcome& result = outcome.modes[m];
      ModeSummary& summary = summaries[m];
      ++summary.prompts;
      summary.tokens += result.tokens;
      summary.seconds += result.seconds;
      summary.mean_tokens_per_second += result.tokens_per_second();
      summary.lossless_prompts += result.difference ? 0 : 1;
      summary.near_tie_prompts += result.difference && result.difference->after_near_tie ? 1 : 0;
      summary.speculation.add(result.speculation);
    }
  }
  for (ModeSummary& summary : summaries) {
    if (summary.prompts > 0) summary.mean_tokens_per_second /= static_cast<double>(summary.prompts);
  }
  const double reference = summaries.empty() ? 0.0 : summaries.front().mean_tokens_per_second;
  for (ModeSummary& summary : summaries) {
    summary.speedup = reference > 0 ? summary.mean_tokens_per_second / reference : 0.0;
  }
  return summaries;
}

}  // namespace draftwise
