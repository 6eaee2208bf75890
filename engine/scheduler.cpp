#include "engine/scheduler.h"

#include <algorithm>

#include <fmt/format.h>

#include "engine/request_run.h"

namespace draftwise {

struct Scheduler::Entry {
  TicketId ticket = 0;
  ScheduledRequest request;
  std::unique_ptr<RequestRun> run;  // made at submission; its prompt is request.prompt
  bool drafter_resolved = false;
};

Scheduler::Scheduler(Decoder& decoder, const Tokenizer* tokenizer, SchedulerOptions options,
                     DrafterProvider drafters)
    : decoder_(decoder), tokenizer_(tokenizer), options_(options), drafters_(std::move(drafters)) {
  options_.max_running = std::max<int64_t>(1, options_.max_running);
  options_.max_waiting = std::max<int64_t>(0, options_.max_waiting);
  options_.token_budget = std::max<int64_t>(1, options_.token_budget);
  counters_.cache = decoder_.cache_usage();
}

Scheduler::~Scheduler() {
  take_in();
  for (std::unique_ptr<Entry>& entry : running_) finish(*entry, [&] { entry->run->cancel(); return entry->run->take_result(); }());
  for (std::unique_ptr<Entry>& entry : waiting_) finish(*entry, [&] { entry->run->cancel(); return entry->run->take_result(); }());
}

std::variant<TicketId, Scheduler::Refused> Scheduler::submit(ScheduledRequest request) {
  auto entry = std::make_unique<Entry>();
  entry->request = std::move(request);
  entry->run = std::make_unique<RequestRun>(decoder_, tokenizer_, entry->request.prompt, entry->request.options,
                                            entry->request.on_output);
  if (const Status checked = entry->run->check(); !checked.ok()) {
    return Refused{Refusal::invalid, checked.error().message};
  }
  std::lock_guard lock(mutex_);
  if (stopping_) return Refused{Refusal::stopped, "the server is shutting down"};
  if (held_ >= options_.max_running + options_.max_waiting) {
    return Refused{Refusal::queue_full,
                   fmt::format("the queue is full ({} requests running or waiting, at most {} + {}); try again later",
                               held_, options_.max_running, options_.max_waiting)};
  }
  entry->ticket = next_ticket_++;
  const TicketId ticket = entry->ticket;
  incoming_.push_back(std::move(entry));
  ++held_;
  ++counters_.submitted;
  wake_.notify_one();
  return ticket;
}

void Scheduler::cancel(TicketId ticket) {
  std::lock_guard lock(mutex_);
  cancels_.insert(ticket);
  wake_.notify_one();
}

void Scheduler::stop(bool cancel_held) {
  std::lock_guard lock(mutex_);
  stopping_ = true;
  cancel_all_ = cancel_all_ || cancel_held;
  wake_.notify_one();
}

SchedulerCounters Scheduler::counters() const {
  std::lock_guard lock(mutex_);
  return counters_;
}

void Scheduler::finish(Entry& entry, Expected<GenerationResult> outcome) {
  if (outcome.ok()) {
    ++totals_.finished;
    if (outcome->finish_reason == FinishReason::cancelled) ++totals_.cancelled;
  } else {
    ++totals_.failed;
  }
  entry.run.reset();  // frees its sequence before anyone hears of the end
  {
    // Its place is free before anyone hears of the end (a client may ask again at once).
    std::lock_guard lock(mutex_);
    --held_;
  }
  if (entry.request.on_done) entry.request.on_done(std::move(outcome));
}

// Submissions join the queue; cancellations end their requests where they are.
void Scheduler::take_in() {
  std::set<TicketId> cancels;
  bool cancel_all = false;
  {
    std::lock_guard lock(mutex_);
    for (std::unique_ptr<Entry>& entry : incoming_) waiting_.push_back(std::move(entry));
    incoming_.clear();
    cancels.swap(cancels_);
    cancel_all = cancel_all_;
  }
  const auto cancelled = [&](const std::unique_ptr<Entry>& entry) {
    return cancel_all || cancels.count(entry->ticket) > 0;
  };
  const auto end = [&](std::unique_ptr<Entry>& entry) {
    entry->run->cancel();
    finish(*entry, entry->run->take_result());
  };
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    if (cancelled(*it)) {
      end(*it);
      it = waiting_.erase(it);
    } else {
      ++it;
    }
  }
  for (auto it = running_.begin(); it != running_.end();) {
    if (cancelled(*it)) {
      end(*it);
      it = running_.erase(it);
    } else {
      ++it;
    }
  }
}

int64_t Scheduler::blocks_for(int64_t positions) const {
  const int64_t size = std::max<int64_t>(1, decoder_.cache_usage().block_size);
  return (positions + size - 1) / size;
}

// Admits queued requests in order while the batch has places and the cache room for their
// context (a fixed pool keeps a block of headroom per running request for its next tokens).
void Scheduler::admit() {
  while (!waiting_.empty() && static_cast<int64_t>(running_.size()) < options_.max_running) {
    Entry& entry = *waiting_.front();
    const CacheUsage cache = decoder_.cache_usage();
    if (cache.total_blocks > 0) {
      const int64_t free = cache.total_blocks - cache.used_blocks - static_cast<int64_t>(running_.size());
      const int64_t needed = blocks_for(entry.run->context_length() + 1 + DraftLength::kMaxDraftLength);
      if (needed > cache.total_blocks) {
        std::unique_ptr<Entry> refused = std::move(waiting_.front());
        waiting_.pop_front();
        finish(*refused, make_error("the request needs {} cache blocks; the cache holds {}", needed, cache.total_blocks));
        continue;
      }
      if (needed > free && !running_.empty()) return;  // waits for room
    }
    std::unique_ptr<Entry> admitted = std::move(waiting_.front());
    waiting_.pop_front();
    Status started;
    if (!admitted->drafter_resolved) {
      admitted->drafter_resolved = true;
      if (!admitted->request.drafter_spec.empty()) {
        Expected<Drafter*> drafter = drafters_ ? drafters_(admitted->request.drafter_spec)
                                               : Expected<Drafter*>(make_error("this engine has no drafters"));
        if (drafter.ok()) {
          admitted->run->set_drafter(*drafter);
        } else {
          started = drafter.error();
        }
      }
    }
    if (started.ok()) started = admitted->run->start(/*prefill_now=*/false);
    if (!started.ok()) {
      finish(*admitted, started.error());
      continue;
    }
    running_.push_back(std::move(admitted));
  }
}

// Preempts the most recently admitted requests until this step's positions fit in the cache.
// False when even a lone request cannot step.
bool Scheduler::make_room() {
  for (;;) {
    const CacheUsage cache = decoder_.cache_usage();
    if (cache.total_blocks <= 0) return true;
    int64_t needed = 0;
    for (const std::unique_ptr<Entry>& entry : running_) {
      const RequestRun& run = *entry->run;
      const int64_t held = run.cached_positions();
      const int64_t growth = run.prefilling() ? std::min(run.prefill_remaining(), options_.token_budget)
                                              : 1 + DraftLength::kMaxDraftLength;
      needed += blocks_for(held + growth) - blocks_for(held);
    }
    if (needed <= cache.total_blocks - cache.used_blocks) return true;
    if (running_.size() <= 1) return needed <= cache.total_blocks - cache.used_blocks;
    std::unique_ptr<Entry> preempted = std::move(running_.back());
    running_.pop_back();
    preempted->run->preempt();
    waiting_.push_front(std::move(preempted));
    ++totals_.preemptions;
  }
}

void Scheduler::publish_counters() {
  std::lock_guard lock(mutex_);
  const int64_t submitted = counters_.submitted;
  counters_ = totals_;
  counters_.submitted = submitted;
  counters_.running = static_cast<int64_t>(running_.size());
  counters_.waiting = static_cast<int64_t>(waiting_.size() + incoming_.size());
  counters_.cache = decoder_.cache_usage();
}

bool Scheduler::step() {
  take_in();
  admit();
  if (running_.empty()) {
    publish_counters();
    return false;
  }
  if (!make_room()) {
    std::unique_ptr<Entry> entry = std::move(running_.back());
    running_.pop_back();
    finish(*entry, make_error("the key/value cache is too small for this request's next step"));
  }
  StepLimits limits;
  limits.token_budget = options_.token_budget;
  if (options_.speculation_max_batch > 0 && static_cast<int64_t>(running_.size()) > options_.speculation_max_batch) {
    limits.max_drafts = 0;
    ++totals_.speculation_off_steps;
  }
  std::vector<RequestRun*> runs;
  for (const std::unique_ptr<Entry>& entry : running_) runs.push_back(entry->run.get());
  const Status stepped = step_runs(decoder_, runs, limits);
  ++totals_.steps;
  for (auto it = running_.begin(); it != running_.end();) {
    Entry& entry = **it;
    if (!stepped.ok()) {
      finish(entry, stepped.error());
    } else if (entry.run->finished()) {
      finish(entry, entry.run->take_result());
    } else {
      if (entry.request.on_step) entry.request.on_step();
      ++it;
      continue;
    }
    it = running_.erase(it);
  }
  publish_counters();
  return true;
}

void Scheduler::run(const std::function<void()>& after_step) {
  for (;;) {
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] {
        return stopping_ || !incoming_.empty() || !cancels_.empty() || !running_.empty() || !waiting_.empty();
      });
      if (stopping_ && incoming_.empty() && running_.empty() && waiting_.empty()) return;
    }
    if (step() && after_step) after_step();
  }
}

}  // namespace draftwise
