#include "engine/generation.h"

#include <memory>
#include <optional>

#include "engine/request_run.h"

namespace draftwise {


std::string_view finish_reason_name(FinishReason reason) {
  switch (reason) {
    case FinishReason::stop: return "stop";
    case FinishReason::length: return "length";
    case FinishReason::cancelled: return "cancelled";
  }
  return "length";
}

double GenerationStats::prefill_tokens_per_second() const {
  return prefill_seconds > 0 ? static_cast<double>(prompt_tokens) / prefill_seconds : 0.0;
}

double GenerationStats::decode_tokens_per_second() const {
  return decode_seconds > 0 && completion_tokens > 1
             ? static_cast<double>(completion_tokens - 1) / decode_seconds
             : 0.0;
}

Expected<GenerationResult> generate(Decoder& decoder, const Tokenizer* tokenizer,
                                    std::span<const int32_t> prompt,
                                    const GenerationOptions& options,
                                    const OutputCallback& on_output) {
  RequestRun run(decoder, tokenizer, prompt, options, on_output);
  DW_TRY(run.check());
  DW_TRY(run.start(/*prefill_now=*/true));
  RequestRun* const runs[] = {&run};
  while (!run.finished()) DW_TRY(step_runs(decoder, runs));
  return run.take_result();
}

std::vector<Expected<GenerationResult>> generate_batch(Decoder& decoder, const Tokenizer* tokenizer,
                                                       std::span<const GenerationRequest> requests) {
  std::vector<std::optional<Expected<GenerationResult>>> outcomes(requests.size());
  std::vector<std::unique_ptr<RequestRun>> runs;
  for (const GenerationRequest& request : requests) {
    runs.push_back(std::make_unique<RequestRun>(decoder, tokenizer, request.prompt, request.options, request.on_output));
  }
  for (size_t i = 0; i < runs.size(); ++i) {
    Status started = runs[i]->check();
    if (started.ok()) started = runs[i]->start(/*prefill_now=*/true);
    if (!started.ok()) outcomes[i] = started.error();
  }
  std::vector<size_t> active;
  std::vector<RequestRun*> stepping;
  for (;;) {
    active.clear();
    stepping.clear();
    for (size_t i = 0; i < runs.size(); ++i) {
      if (outcomes[i].has_value()) continue;
      if (runs[i]->finished()) {
        outcomes[i] = runs[i]->take_result();
        runs[i].reset();  // frees its sequence now
        continue;
      }
      active.push_back(i);
      stepping.push_back(runs[i].get());
    }
    if (active.empty()) break;
    if (const Status stepped = step_runs(decoder, stepping); !stepped.ok()) {
      for (const size_t i : active) outcomes[i] = stepped.error();
    }
  }
  std::vector<Expected<GenerationResult>> results;
  for (std::optional<Expected<GenerationResult>>& outcome : outcomes) results.push_back(std::move(*outcome));
  return results;
}

}  // namespace draftwise
