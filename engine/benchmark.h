// The acceptance-rate benchmark's core (Spec-Bench, arXiv 2401.07851; vLLM's acceptance
// metrics): every mode — plain decoding (`ar`) or a drafter at a draft length — generates
// every prompt, turn after turn with its own answers fed back as Spec-Bench does; per prompt,
// per category and overall it reports tokens/s, the speed-up against `ar` (the mean of the
// per-prompt tokens/s ÷ the same for `ar`, as Spec-Bench computes it), the speculation
// statistics, and whether the
// output equals `ar`'s (losslessness made visible: mismatches are counted and located).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "engine/chat_template.h"
#include "engine/generation.h"

namespace draftwise {

struct BenchPrompt {
  std::string id;
  std::string category;
  // User turns answered one after another (Spec-Bench), or, from a "messages" line, one
  // conversation completed once (then `turns` is empty).
  std::vector<std::string> turns;
  std::vector<ChatMessage> messages;
};

// Spec-Bench question.jsonl lines ({"question_id", "category", "turns": [...]}), or JSONL
// lines with "prompt" (text) or "messages" ([{"role", "content"}]) and optional "id" and
// "category" ("default"). Errors name the file and line.
Expected<std::vector<BenchPrompt>> read_bench_prompts(const std::string& path);
// The prompts of `categories` (every one when empty; an unknown one is an error listing the
// file's), at most `per_category` of each (0: all), in file order.
Expected<std::vector<BenchPrompt>> select_bench_prompts(std::vector<BenchPrompt> prompts,
                                                        std::span<const std::string> categories, int64_t per_category);

// How one mode generates a turn: draftwise's generate() with its drafter unless set otherwise.
using BenchGenerate =
    std::function<Expected<GenerationResult>(Decoder& decoder, std::span<const int32_t> prompt,
                                             const GenerationOptions& options)>;

struct BenchMode {
  std::string name;            // "ar", "ngram:3@4", "self:8@6"
  Drafter* drafter = nullptr;  // null: plain decoding
  DraftLength draft_length = DraftLength::fixed(4);
  BenchGenerate generate;      // unset: draftwise's generate()
};

struct BenchConfig {
  int64_t max_tokens = 128;  // per turn
  SamplingParams sampling;   // greedy unless set; sampled: no losslessness check, and turn t
                             // of prompt p draws with seed + 1000003 p + t in every mode
  std::vector<int32_t> stop_token_ids;
  // A difference from `ar`'s output that comes after a position where `ar`'s top-1/top-2
  // logit margin is below this share of the row's largest |logit| is a near-tie (DESIGN.md,
  // Numerics: on the GPU, greedy speculation is identical up to the first near-tie).
  double near_tie = 0.02;
  // qTTT (QTTT.md): every turn's request, in every mode, adapts its query projections on its
  // prompt (GenerationOptions::qttt); the margins of a difference are read with the same
  // adaptation.
  std::optional<QttOptions> qttt;
};

// How a conversation becomes the prompt's tokens (the chat template, ready for the assistant's
// turn) and an answer's tokens become its text for the next turn.
struct BenchFormat {
  std::function<Expected<std::vector<int32_t>>(std::span<const ChatMessage> messages)> render;
  std::function<std::string(std::span<const int32_t> tokens)> answer_text;
};

// Where a mode's output first differs from `ar`'s, and whether `ar` passed a near-tie on the
// way: the smallest of its relative top-1/top-2 margins at positions [0, position] of that
// turn (one extra forward pass over `ar`'s own tokens, outside the timed generation).
struct OutputDifference {
  int turn = 0;
  int64_t position = 0;  // in the turn's generated tokens
  double reference_margin = 0.0;
  bool after_near_tie = false;
};

struct ModeOutcome {
  std::vector<std::vector<int32_t>> prompts;  // the rendered prompt, per turn
  std::vector<std::vector<int32_t>> turns;    // generated tokens, per turn
  int64_t tokens = 0;
  double seconds = 0;  // wall time of the generate calls (prefill and decode)
  SpeculationStats speculation;
  int64_t adaptations = 0;                     // qTTT: turns whose request adapted its queries
  double adaptation_seconds = 0;               // their time, part of `seconds`
  std::optional<OutputDifference> difference;  // none: equal to `ar`'s in every turn
  double tokens_per_second() const { return seconds > 0 ? static_cast<double>(tokens) / seconds : 0.0; }
};

struct PromptOutcome {
  size_t prompt = 0;               // index into the prompts
  std::vector<ModeOutcome> modes;  // by mode
};

// Runs every mode on every prompt, the modes of one prompt one after another. modes[0] must be
// `ar` (plain decoding, the reference of speed-ups and losslessness). `progress` is called
// after each prompt.
using BenchProgress = std::function<void(size_t done, size_t total, const PromptOutcome& last)>;
Expected<std::vector<PromptOutcome>> run_bench(Decoder& decoder, std::span<const BenchPrompt> prompts,
                                               std::span<const BenchMode> modes, const BenchConfig& config,
                                               const BenchFormat& format, const BenchProgress& progress = {});

// One mode over a set of prompts.
struct ModeSummary {
  int64_t prompts = 0;
  int64_t tokens = 0;
  double seconds = 0;
  double mean_tokens_per_second = 0;  // the mean of the per-prompt tokens/s
  double speedup = 0;                 // mean_tokens_per_second ÷ `ar`'s
  int64_t lossless_prompts = 0;         // equal to `ar`'s output to the end
  int64_t near_tie_prompts = 0;         // different, but only after a near-tie of `ar`'s
  SpeculationStats speculation;  // pooled
};
// Summaries of each mode over the outcomes whose prompt is in `category` (every one when empty).
std::vector<ModeSummary> summarize_bench(std::span<const PromptOutcome> outcomes, std::span<const BenchPrompt> prompts,
                                         size_t modes, const std::string& category = {});

}  // namespace draftwise
