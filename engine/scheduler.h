// The scheduler of continuous batching (DESIGN.md, Concurrency): requests join and leave the
// running batch at every step; each step is one forward pass over every running request's
// decode or verification rows and, under a token budget, the prompt chunks of those still
// prefilling. A request is admitted when the cache has room for its context; when a step
// would not fit, the most recently admitted request is preempted (its cache freed) and waits
// at the head of the queue to be resumed where it was. Speculation backs off at large
// batches: above `speculation_max_batch` running requests nobody drafts.
//
// Threads: submit(), cancel(), stop() and counters() from any thread; step() and run() on the
// one engine thread that owns the decoder and drafters. Callbacks run on the engine thread.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <variant>
#include <string>
#include <vector>

#include "engine/generation.h"

namespace draftwise {

class RequestRun;

struct SchedulerOptions {
  int64_t max_running = 64;    // requests in the running batch, ≥ 1
  int64_t max_waiting = 256;   // requests queued behind them, ≥ 0; more are refused
  int64_t token_budget = 512;  // tokens per forward pass, ≥ 1
  // Above this many running requests nobody drafts; 0: speculation at any batch size.
  int64_t speculation_max_batch = 0;
};

// Resolves a request's drafter spec on the engine thread (where drafters may touch the
// decoder): "" means none. Called when the request is admitted.
using DrafterProvider = std::function<Expected<Drafter*>(const std::string& spec)>;

struct ScheduledRequest {
  std::vector<int32_t> prompt;
  GenerationOptions options;  // with a drafter_spec, the drafter it names replaces options.drafter at admission
  std::string drafter_spec;
  OutputCallback on_output;
  // After every step the request ran in without finishing (its output so far has been
  // given to on_output): where a server sends what the step produced.
  std::function<void()> on_step;
  // Exactly once: the result (finish reason `cancelled` after cancel() or stop()), or the
  // error that ended the request.
  std::function<void(Expected<GenerationResult>)> on_done;
};

using TicketId = uint64_t;

// A snapshot, taken after every step.
struct SchedulerCounters {
  int64_t running = 0;
  int64_t waiting = 0;       // queued, new or preempted
  int64_t submitted = 0;
  int64_t finished = 0;      // on_done with a result, cancelled ones included
  int64_t failed = 0;        // on_done with an error
  int64_t cancelled = 0;
  int64_t preemptions = 0;
  int64_t steps = 0;
  int64_t speculation_off_steps = 0;  // steps in which the batch was too large to draft
  CacheUsage cache;
};

class Scheduler {
 public:
  Scheduler(Decoder& decoder, const Tokenizer* tokenizer, SchedulerOptions options, DrafterProvider drafters);
  ~Scheduler();  // ends every request still held with `cancelled`
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Checks the request (prompt, options; generation's checks) and queues it. Errors: a
  // request that fails its checks, a full queue, a stopped scheduler (see the kinds below).
  enum class Refusal { invalid, queue_full, stopped };
  struct Refused {
    Refusal kind;
    std::string message;
  };
  std::variant<TicketId, Refused> submit(ScheduledRequest request);
  // Ends a request wherever it is (queued, prefilling, decoding); unknown or finished
  // tickets are ignored.
  void cancel(TicketId ticket);
  // No more submissions; run() returns once every held request has ended. With
  // `cancel_held`, held requests end now as cancelled, else they run to their end.
  void stop(bool cancel_held);

  // Engine thread: takes in submissions and cancellations, admits, preempts, runs one step.
  // False when there was nothing to do.
  bool step();
  // Engine thread: steps until stop() and every held request has ended; sleeps while idle.
  // `after_step` runs after every step.
  void run(const std::function<void()>& after_step = {});

  SchedulerCounters counters() const;

 private:
  struct Entry;
  void take_in();
  void finish(Entry& entry, Expected<GenerationResult> outcome);
  void admit();
  bool make_room();
  int64_t blocks_for(int64_t positions) const;
  void publish_counters();

  Decoder& decoder_;
  const Tokenizer* tokenizer_;
  SchedulerOptions options_;
  DrafterProvider drafters_;

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<std::unique_ptr<Entry>> incoming_;
  std::set<TicketId> cancels_;
  bool stopping_ = false;
  bool cancel_all_ = false;
  TicketId next_ticket_ = 1;
  int64_t held_ = 0;  // submitted and not yet ended: running, waiting or incoming
  SchedulerCounters counters_;

  // Engine thread only.
  std::deque<std::unique_ptr<Entry>> waiting_;
  std::vector<std::unique_ptr<Entry>> running_;  // in admission order
  SchedulerCounters totals_;
};

}  // namespace draftwise
