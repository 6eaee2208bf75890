#include "tools/server_metrics.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

namespace draftwise {

namespace {

const std::vector<double> kTtftBounds = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
                                         1.0,   2.5,   5.0,  7.5,  10.0, 20.0, 40.0, 80.0};
const std::vector<double> kInterTokenBounds = {0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04,
                                               0.05,  0.075,  0.1,   0.15, 0.2,   0.3,  0.4,   0.5,  0.75,
                                               1.0,   2.5,    5.0};
const std::vector<double> kE2eBounds = {0.1, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0,
                                        40.0, 50.0, 60.0, 120.0, 240.0, 480.0};

// A Prometheus label value: backslash, double quote and newline escaped.
std::string label(std::string_view value) {
  std::string out;
  for (const char c : value) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

void header(std::string& out, const std::string& name, const std::string& help, const char* type) {
  out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

void scalar(std::string& out, const std::string& name, const std::string& help, const char* type, double value) {
  header(out, name, help, type);
  out += fmt::format("{} {}\n", name, value);
}

}  // namespace

LatencyHistogram::LatencyHistogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void LatencyHistogram::observe(double value) {
  if (!std::isfinite(value)) return;
  const size_t bucket = static_cast<size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin());
  ++counts_[bucket];
  sum_ += value;
  ++count_;
}

void LatencyHistogram::write(std::string& out, const std::string& name, const std::string& help) const {
  header(out, name, help, "histogram");
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    out += fmt::format("{}_bucket{{le=\"{}\"}} {}\n", name, bounds_[i], cumulative);
  }
  out += fmt::format("{}_bucket{{le=\"+Inf\"}} {}\n{}_sum {}\n{}_count {}\n", name, count_, name, sum_, name, count_);
}

ServerMetrics::ServerMetrics() : ttft_(kTtftBounds), inter_token_(kInterTokenBounds), e2e_(kE2eBounds) {}

void ServerMetrics::http_response(const std::string& path, int status) {
  std::lock_guard lock(mutex_);
  ++responses_[{path, status}];
}

void ServerMetrics::time_to_first_token(double seconds) {
  std::lock_guard lock(mutex_);
  ttft_.observe(seconds);
}

void ServerMetrics::inter_token(double seconds) {
  std::lock_guard lock(mutex_);
  inter_token_.observe(seconds);
}

void ServerMetrics::request_finished(const std::string& reason, const GenerationResult& result, double seconds) {
  std::lock_guard lock(mutex_);
  ++finished_[reason];
  prompt_tokens_ += static_cast<uint64_t>(result.stats.prompt_tokens);
  generation_tokens_ += static_cast<uint64_t>(result.stats.completion_tokens);
  speculation_.add(result.stats.speculation);
  if (result.stats.qttt) {
    ++qttt_requests_;
    qttt_seconds_ += result.stats.qttt->seconds;
  }
  e2e_.observe(seconds);
}

void ServerMetrics::request_failed() {
  std::lock_guard lock(mutex_);
  ++failed_;
}

void ServerMetrics::set_learner(std::optional<LearnerStats> stats) {
  std::lock_guard lock(mutex_);
  learner_ = std::move(stats);
}

std::string ServerMetrics::prometheus(const SchedulerCounters& scheduler, bool ready) const {
  std::lock_guard lock(mutex_);
  std::string out;
  scalar(out, "draftwise:ready", "1 once the model is loaded and requests are served", "gauge", ready ? 1 : 0);
  scalar(out, "draftwise:num_requests_running", "Requests in the running batch", "gauge",
         static_cast<double>(scheduler.running));
  scalar(out, "draftwise:num_requests_waiting", "Requests queued, new or preempted", "gauge",
         static_cast<double>(scheduler.waiting));
  const CacheUsage& cache = scheduler.cache;
  scalar(out, "draftwise:kv_cache_usage_perc",
         "Share of the key/value cache's blocks in use (0 to 1); 0 where the cache grows in host memory", "gauge",
         cache.total_blocks > 0 ? static_cast<double>(cache.used_blocks) / static_cast<double>(cache.total_blocks)
                                : 0.0);
  scalar(out, "draftwise:kv_cache_used_blocks", "Key/value cache blocks the running requests hold", "gauge",
         static_cast<double>(cache.used_blocks));
  scalar(out, "draftwise:kv_cache_total_blocks", "Key/value cache blocks in the pool; 0: no fixed pool", "gauge",
         static_cast<double>(cache.total_blocks));
  scalar(out, "draftwise:kv_cache_block_size", "Positions per key/value cache block", "gauge",
         static_cast<double>(cache.block_size));
  scalar(out, "draftwise:num_preemptions_total", "Requests preempted to free cache blocks", "counter",
         static_cast<double>(scheduler.preemptions));
  scalar(out, "draftwise:engine_steps_total", "Batched forward steps of the engine", "counter",
         static_cast<double>(scheduler.steps));
  scalar(out, "draftwise:spec_decode_off_steps_total", "Steps without drafting because the batch was large", "counter",
         static_cast<double>(scheduler.speculation_off_steps));
  scalar(out, "draftwise:prompt_tokens_total", "Prompt tokens of finished requests", "counter",
         static_cast<double>(prompt_tokens_));
  scalar(out, "draftwise:generation_tokens_total", "Generated tokens of finished requests", "counter",
         static_cast<double>(generation_tokens_));
  header(out, "draftwise:request_success_total", "Requests that ran to an end, by finish reason", "counter");
  for (const char* reason : {"stop", "length", "abort"}) {
    const auto it = finished_.find(reason);
    out += fmt::format("draftwise:request_success_total{{finished_reason=\"{}\"}} {}\n", reason,
                       it == finished_.end() ? 0 : it->second);
  }
  scalar(out, "draftwise:request_failure_total", "Requests that ended with an engine error", "counter",
         static_cast<double>(failed_));
  header(out, "draftwise:http_responses_total", "HTTP responses by path and status", "counter");
  for (const auto& [key, count] : responses_) {
    out += fmt::format("draftwise:http_responses_total{{path=\"{}\",status=\"{}\"}} {}\n", label(key.first), key.second,
                       count);
  }
  ttft_.write(out, "draftwise:time_to_first_token_seconds", "Time from arrival to the first generated token");
  inter_token_.write(out, "draftwise:inter_token_latency_seconds", "Time between tokens sent out");
  e2e_.write(out, "draftwise:e2e_request_latency_seconds", "Time from arrival to the end of a request");
  scalar(out, "draftwise:spec_decode_num_drafts_total", "Verification steps that checked drafted tokens", "counter",
         static_cast<double>(speculation_.drafts));
  scalar(out, "draftwise:spec_decode_num_draft_tokens_total", "Drafted tokens verified", "counter",
         static_cast<double>(speculation_.draft_tokens));
  scalar(out, "draftwise:spec_decode_num_accepted_tokens_total", "Drafted tokens accepted", "counter",
         static_cast<double>(speculation_.accepted_tokens));
  header(out, "draftwise:spec_decode_num_accepted_tokens_per_pos", "Drafted tokens accepted, by draft position",
         "counter");
  for (size_t i = 0; i < speculation_.accepted_per_position.size(); ++i) {
    out += fmt::format("draftwise:spec_decode_num_accepted_tokens_per_pos{{position=\"{}\"}} {}\n", i,
                       speculation_.accepted_per_position[i]);
  }
  header(out, "draftwise:spec_decode_num_drafted_tokens_per_pos", "Drafted tokens verified, by draft position",
         "counter");
  for (size_t i = 0; i < speculation_.drafted_per_position.size(); ++i) {
    out += fmt::format("draftwise:spec_decode_num_drafted_tokens_per_pos{{position=\"{}\"}} {}\n", i,
                       speculation_.drafted_per_position[i]);
  }
  scalar(out, "draftwise:qttt_adapted_requests_total", "Finished requests whose queries were adapted (qTTT)",
         "counter", static_cast<double>(qttt_requests_));
  scalar(out, "draftwise:qttt_seconds_total", "Seconds the finished requests spent adapting their queries (qTTT)",
         "counter", qttt_seconds_);
  if (learner_) {
    scalar(out, "draftwise:learner_records_total", "Verification records the draft-head learner logged", "counter",
           static_cast<double>(learner_->records));
    scalar(out, "draftwise:learner_updates_total", "Updates of the draft head", "counter",
           static_cast<double>(learner_->updates));
    scalar(out, "draftwise:learner_skipped_total", "Updates skipped for a non-finite loss or gradient", "counter",
           static_cast<double>(learner_->skipped));
    scalar(out, "draftwise:learner_reverted_total", "Updates reverted by the safety rail", "counter",
           static_cast<double>(learner_->reverted));
    scalar(out, "draftwise:learner_seconds_total", "Seconds spent in draft-head updates", "counter", learner_->seconds);
    scalar(out, "draftwise:learner_last_loss", "The total loss of the last update", "gauge",
           learner_->last_loss.total);
  }
  return out;
}

}  // namespace draftwise
