#include "tools/niah_haystack.h"

#include <algorithm>
#include <array>
#include <cmath>

#include <fmt/format.h>

#include "engine/benchmark.h"
#include "kernels/random.h"

namespace draftwise {

namespace {

constexpr std::array<std::string_view, 12> kNeedleNames = {"Aurora", "Basalt",  "Cinder",  "Delphi",
                                                           "Ember",  "Falcon",  "Granite", "Harbor",
                                                           "Indigo", "Juniper", "Kestrel", "Lantern"};

bool is_space(char c) {
  return c == ' ' || c == '\n' || c == '\t' || c == '\r';
}

// Whether `word` ends a sentence: a final '.', '!' or '?', before closing quotes or brackets.
bool ends_sentence(std::string_view word) {
  for (;;) {
    if (word.ends_with("\"") || word.ends_with("'") || word.ends_with(")")) {
      word.remove_suffix(1);
    } else if (word.ends_with("\u201d") || word.ends_with("\u2019")) {  // ” ’
      word.remove_suffix(3);
    } else {
      break;
    }
  }
  return word.ends_with(".") || word.ends_with("!") || word.ends_with("?");
}

// Whether a word (with its leading whitespace) can open a sentence: after a line break, or with
// a capital, a digit or an opening quote ("U.S. officials" and "e.g. this" still pass; "3 p.m.
// today" does not).
bool opens_sentence(std::string_view word) {
  const size_t first = word.find_first_not_of(" \t\r\n");
  if (word.substr(0, first).find('\n') != std::string_view::npos) return true;
  if (first == std::string_view::npos) return false;
  const char c = word[first];
  return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '"' || c == '\'' ||
         word.substr(first).starts_with("\u201c");
}

}  // namespace

Needle make_needle(uint64_t seed, int64_t trial) {
  Rng rng(seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(trial) + 0x4E45454Cull);
  Needle needle;
  needle.name = std::string(kNeedleNames[rng.below(kNeedleNames.size())]);
  needle.number = std::to_string(10000 + rng.below(990000));
  const std::string subject = fmt::format("the secret passcode of the {} vault", needle.name);
  needle.fact = fmt::format("The secret passcode of the {} vault is {}.", needle.name, needle.number);
  needle.question = fmt::format("What is {}? Answer with the number only.", subject);
  needle.answer_prefix = fmt::format("The secret passcode of the {} vault is", needle.name);
  return needle;
}

Expected<std::string> read_niah_filler(const std::string& path) {
  DW_ASSIGN_OR_RETURN(const std::vector<BenchPrompt> prompts, read_bench_prompts(path));
  std::string filler;
  for (const BenchPrompt& prompt : prompts) {
    if (prompt.turns.empty()) continue;
    std::string_view text = prompt.turns.front();
    if (prompt.category == "summarization") {
      if (text.starts_with("Summarize: ")) text.remove_prefix(11);
    } else if (prompt.category == "rag") {
      // The passages end with a line holding the question they were retrieved for.
      const size_t last_line = text.rfind('\n');
      if (last_line != std::string_view::npos && text.ends_with("?")) text = text.substr(0, last_line);
    } else {
      continue;
    }
    while (!text.empty() && is_space(text.front())) text.remove_prefix(1);
    while (!text.empty() && is_space(text.back())) text.remove_suffix(1);
    if (text.empty()) continue;
    if (!filler.empty()) filler += "\n\n";
    filler += text;
  }
  if (filler.empty()) {
    return make_error("{}: holds no \"summarization\" or \"rag\" prompts to take filler text from", path);
  }
  return filler;
}

NiahFiller::NiahFiller(std::string_view text, const std::function<std::vector<int32_t>(std::string_view)>& encode) {
  size_t position = 0;
  while (position < text.size() && is_space(text[position])) ++position;
  tokens_before_.push_back(0);
  sentence_start_.push_back(true);
  while (position < text.size()) {
    size_t end = position;
    while (end < text.size() && is_space(text[end])) ++end;
    while (end < text.size() && !is_space(text[end])) ++end;
    const std::string_view word = text.substr(position, end - position);
    if (!words_.empty()) sentence_start_.push_back(ends_sentence(words_.back()) && opens_sentence(word));
    words_.emplace_back(word);
    tokens_before_.push_back(tokens_before_.back() + static_cast<int64_t>(encode(word).size()));
    position = end;
  }
  if (!words_.empty()) sentence_start_.push_back(true);  // the end
}

int64_t NiahFiller::needle_word(int64_t words, double depth) const {
  const double target = depth * static_cast<double>(tokens_before(words));
  int64_t best = 0;
  double best_distance = INFINITY;
  for (int64_t k = 0; k <= words; ++k) {
    if (!sentence_start(k) && k != words) continue;
    const double distance = std::fabs(static_cast<double>(tokens_before(k)) - target);
    if (distance < best_distance) {
      best = k;
      best_distance = distance;
    }
  }
  return best;
}

NiahFiller::Haystack NiahFiller::haystack(int64_t words, int64_t at, std::string_view fact) const {
  Haystack out;
  for (int64_t k = 0; k < at; ++k) out.text += words_[static_cast<size_t>(k)];
  if (at > 0) out.text += ' ';
  out.fact_offset = out.text.size();
  out.text += fact;
  if (at == 0 && words > 0) out.text += ' ';  // the first word has no whitespace of its own
  for (int64_t k = at; k < words; ++k) out.text += words_[static_cast<size_t>(k)];
  return out;
}

Expected<NiahPrompt> build_niah_prompt(const NiahFiller& filler, const Needle& needle, int64_t length, double depth,
                                       const NiahFormat& format) {
  if (!(depth >= 0 && depth <= 1)) return make_error("the needle's depth must be in [0, 1], got {}", depth);
  struct Candidate {
    int64_t at = 0;
    NiahFiller::Haystack haystack;
    std::string message, text;
    std::vector<int32_t> tokens;
  };
  const auto make = [&](int64_t words) -> Expected<Candidate> {
    Candidate candidate;
    candidate.at = filler.needle_word(words, depth);
    candidate.haystack = filler.haystack(words, candidate.at, needle.fact);
    candidate.message = candidate.haystack.text + "\n\n" + needle.question;
    DW_ASSIGN_OR_RETURN(const std::string rendered, format.render(candidate.message));
    candidate.text = rendered + needle.answer_prefix;
    candidate.tokens = format.encode(candidate.text);
    return candidate;
  };
  const auto size = [](const Candidate& candidate) { return static_cast<int64_t>(candidate.tokens.size()); };

  // The most words whose prompt fits: a search between none and the first word count whose
  // own tokens alone reach `length` (the format adds more), or every word.
  DW_ASSIGN_OR_RETURN(Candidate best, make(0));
  if (size(best) > length) {
    return make_error("a prompt of {} tokens is too short: the needle, the question and the format alone take {}",
                      length, size(best));
  }
  int64_t fits = 0;
  int64_t too_many = filler.words() + 1;
  int64_t first_guess = 0;
  while (first_guess < filler.words() && filler.tokens_before(first_guess) < length) ++first_guess;
  std::vector<int64_t> guesses = {first_guess};
  if (first_guess < filler.words()) guesses.push_back(filler.words());
  for (const int64_t guess : guesses) {
    DW_ASSIGN_OR_RETURN(Candidate candidate, make(guess));
    if (size(candidate) > length) {
      too_many = guess;
      break;
    }
    fits = guess;
    best = std::move(candidate);
  }
  if (too_many > filler.words()) {
    if (size(best) < length) {
      return make_error("the filler gives prompts of at most {} tokens, fewer than {}", size(best), length);
    }
  }
  while (too_many - fits > 1) {
    const int64_t middle = fits + (too_many - fits) / 2;
    DW_ASSIGN_OR_RETURN(Candidate candidate, make(middle));
    if (size(candidate) > length) {
      too_many = middle;
    } else {
      fits = middle;
      best = std::move(candidate);
    }
  }

  NiahPrompt prompt;
  const size_t message_offset = best.text.find(best.message);
  if (message_offset == std::string::npos) {
    return make_error(
        "the prompt format does not keep the user message as it is, so the needle cannot be "
        "located");
  }
  const auto tokens_up_to = [&](size_t offset) {
    return static_cast<int64_t>(format.encode(std::string_view(best.text).substr(0, offset)).size());
  };
  const size_t fact_offset = message_offset + best.haystack.fact_offset;
  // The space before the fact goes with its first token.
  const size_t fact_start = best.at > 0 ? fact_offset - 1 : fact_offset;
  prompt.haystack_position = tokens_up_to(message_offset);
  prompt.needle_position = tokens_up_to(fact_start);
  prompt.needle_tokens = tokens_up_to(fact_offset + needle.fact.size()) - prompt.needle_position;
  prompt.filler_tokens =
      tokens_up_to(message_offset + best.haystack.text.size()) - prompt.haystack_position - prompt.needle_tokens;
  prompt.depth = prompt.filler_tokens > 0 ? static_cast<double>(prompt.needle_position - prompt.haystack_position) /
                                                static_cast<double>(prompt.filler_tokens)
                                          : 0.0;
  const std::vector<int32_t> answered = format.encode(best.text + " " + needle.number);
  if (answered.size() <= best.tokens.size() || !std::equal(best.tokens.begin(), best.tokens.end(), answered.begin())) {
    return make_error(
        "the tokenizer joins the answer ' {}' with the end of the prompt, so it has no tokens of "
        "its own",
        needle.number);
  }
  prompt.answer.assign(answered.begin() + static_cast<std::ptrdiff_t>(best.tokens.size()), answered.end());
  prompt.tokens = std::move(best.tokens);
  prompt.text = std::move(best.text);
  return prompt;
}

}  // namespace draftwise
