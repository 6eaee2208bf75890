#include "tools/bench_progress.h"

#include <algorithm>

#include <fmt/format.h>

namespace draftwise {

BenchProgressDisplay::BenchProgressDisplay(std::FILE* out, bool terminal, size_t total_prompts,
                                           std::vector<std::string> modes, double interval_seconds)
    : out_(out),
      terminal_(terminal),
      total_(total_prompts),
      modes_(std::move(modes)),
      interval_seconds_(interval_seconds),
      started_(std::chrono::steady_clock::now()),
      tokens_(modes_.size(), 0),
      seconds_(modes_.size(), 0.0),
      speculation_(modes_.size()) {}

void BenchProgressDisplay::prompt_done(const std::string& phase, const std::string& category, const std::string& id,
                                       const PromptOutcome& outcome) {
  if (phase != phase_) {  // a new phase: its own running figures
    phase_ = phase;
    std::fill(tokens_.begin(), tokens_.end(), 0);
    std::fill(seconds_.begin(), seconds_.end(), 0.0);
    speculation_.assign(modes_.size(), SpeculationStats{});
  }
  ++done_;
  last_prompt_ = category + " " + id;
  for (size_t m = 0; m < modes_.size() && m < outcome.modes.size(); ++m) {
    tokens_[m] += outcome.modes[m].tokens;
    seconds_[m] += outcome.modes[m].seconds;
    speculation_[m].add(outcome.modes[m].speculation);
    if (outcome.modes[m].difference) ++mismatches_;
  }
  const auto now = std::chrono::steady_clock::now();
  const bool last = done_ == total_;
  if (terminal_) {
    std::string text = line();
    const size_t width = text.size();
    if (width < printed_width_) text.append(printed_width_ - width, ' ');  // cover the longer line before
    printed_width_ = width;
    fmt::print(out_, "\r{}", text);
  } else if (last || !printed_ || std::chrono::duration<double>(now - last_printed_).count() >= interval_seconds_) {
    fmt::print(out_, "{}\n", line());
    last_printed_ = now;
  } else {
    return;
  }
  printed_ = true;
  std::fflush(out_);
}

void BenchProgressDisplay::finish() {
  if (terminal_ && printed_) {
    fmt::print(out_, "\n");
    std::fflush(out_);
  }
}

std::string BenchProgressDisplay::line() const {
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
  std::string text = fmt::format("[{}/{}] {}{}:", done_, total_, phase_.empty() ? "" : phase_ + " ", last_prompt_);
  for (size_t m = 0; m < modes_.size(); ++m) {
    text += fmt::format(" {} {:.0f} tok/s", modes_[m], seconds_[m] > 0 ? static_cast<double>(tokens_[m]) / seconds_[m] : 0.0);
    if (m > 0) text += fmt::format(" τ {:.2f}", speculation_[m].mean_acceptance_length());
    text += ";";
  }
  if (mismatches_ > 0) text += fmt::format(" {} outputs differ from ar's;", mismatches_);
  const double left = done_ > 0 ? elapsed / static_cast<double>(done_) * static_cast<double>(total_ - done_) : 0.0;
  text += fmt::format(" ETA {:.0f} s", left);
  return text;
}

}  // namespace draftwise
