// What `draftwise serve` exposes at GET /metrics, in the Prometheus text format, with vLLM's
// metric names under the prefix "draftwise:" where vLLM has one (num_requests_running,
// time_to_first_token_seconds, spec_decode_num_accepted_tokens_per_pos, ...). Thread-safe:
// the HTTP threads observe requests, the engine thread publishes learner statistics.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "draft/dvi_learner.h"
#include "engine/generation.h"
#include "engine/scheduler.h"

namespace draftwise {

// A cumulative histogram with fixed upper bounds (seconds).
class LatencyHistogram {
 public:
  explicit LatencyHistogram(std::vector<double> bounds);
  void observe(double value);
  // `name`_bucket{le=…}, `name`_sum and `name`_count lines.
  void write(std::string& out, const std::string& name, const std::string& help) const;
  uint64_t count() const { return count_; }

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bound, not cumulative; the last one is +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

class ServerMetrics {
 public:
  ServerMetrics();

  void http_response(const std::string& path, int status);
  void time_to_first_token(double seconds);
  void inter_token(double seconds);
  // A request that ran: its end ("stop", "length", "abort" for a cancelled one) and result.
  void request_finished(const std::string& reason, const GenerationResult& result, double seconds);
  void request_failed();
  void set_learner(std::optional<LearnerStats> stats);

  std::string prometheus(const SchedulerCounters& scheduler, bool ready) const;

 private:
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, int>, uint64_t> responses_;
  std::map<std::string, uint64_t> finished_;
  uint64_t failed_ = 0;
  uint64_t prompt_tokens_ = 0, generation_tokens_ = 0;
  SpeculationStats speculation_;
  uint64_t qttt_requests_ = 0;  // requests whose queries were adapted, and the seconds it took
  double qttt_seconds_ = 0;
  LatencyHistogram ttft_, inter_token_, e2e_;
  std::optional<LearnerStats> learner_;
};

}  // namespace draftwise
