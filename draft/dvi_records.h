// What the DVI learner learns from (DVI.md, "What is logged"): one record per drafted
// position up to and including the first rejection, kept in a bounded ring buffer.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

#include "kernels/random.h"

namespace draftwise {

struct DraftRecord {
  std::vector<float> hidden;  // [hidden]: h_exit before the draft norm
  int32_t token = 0;          // the drafted token a
  float draft_log_probability =
      0.0f;  // log p_S(a) under the adapter that drafted it (temperature 1)
  std::vector<int32_t> verifier_tokens;  // [K]: the verifier's top-K tokens, largest logit first
  std::vector<float> verifier_logits;    // [K]: their logits
  float reward = 0.0f;                   // 1: accepted; 0: the first rejection
  int32_t position = 0;                  // in the draft block, from 0
  int64_t serial = 0;  // the record's arrival number at its learner, from 0 (set by the learner)
};

// Keeps the `k` largest of `logits` ([vocab]) in the record, largest first (the lowest id
// first among ties): one pass with a min-heap of the k best so far, so that most logits cost
// one comparison.
inline void keep_top_logits(std::span<const float> logits, int64_t k, DraftRecord& record) {
  const auto better = [&](int32_t x, int32_t y) {  // x ranks before y
    const float a = logits[static_cast<size_t>(x)];
    const float b = logits[static_cast<size_t>(y)];
    return a > b || (a == b && x < y);
  };
  const size_t kept = std::min<size_t>(static_cast<size_t>(std::max<int64_t>(k, 0)), logits.size());
  std::vector<int32_t> heap;  // the worst of the best at the front
  heap.reserve(kept);
  for (size_t i = 0; i < logits.size() && kept > 0; ++i) {
    const auto id = static_cast<int32_t>(i);
    if (heap.size() < kept) {
      heap.push_back(id);
      std::push_heap(heap.begin(), heap.end(), better);
    } else if (logits[i] > logits[static_cast<size_t>(heap.front())]) {
      std::pop_heap(heap.begin(), heap.end(), better);
      heap.back() = id;
      std::push_heap(heap.begin(), heap.end(), better);
    }
  }
  std::sort(heap.begin(), heap.end(), better);
  record.verifier_tokens = std::move(heap);
  record.verifier_logits.clear();
  for (const int32_t id : record.verifier_tokens) {
    record.verifier_logits.push_back(logits[static_cast<size_t>(id)]);
  }
}

// The newest `capacity` records; older ones are overwritten.
class DraftRecordRing {
 public:
  explicit DraftRecordRing(int64_t capacity) : capacity_(capacity) {}

  void push(DraftRecord record) {
    if (static_cast<int64_t>(records_.size()) < capacity_) {
      records_.push_back(std::move(record));
    } else {
      records_[static_cast<size_t>(next_)] = std::move(record);
    }
    next_ = (next_ + 1) % capacity_;
  }
  int64_t size() const { return static_cast<int64_t>(records_.size()); }
  int64_t capacity() const { return capacity_; }
  void clear() {
    records_.clear();
    next_ = 0;
  }

  // `count` distinct records drawn uniformly (all of them when there are fewer).
  std::vector<const DraftRecord*> sample(int64_t count, Rng& rng) const {
    std::vector<const DraftRecord*> picked;
    for (const DraftRecord& record : records_) picked.push_back(&record);
    const int64_t wanted = std::min<int64_t>(count, size());
    for (int64_t i = 0; i < wanted; ++i) {  // a partial Fisher–Yates shuffle
      const int64_t j = i + static_cast<int64_t>(rng.below(static_cast<uint64_t>(size() - i)));
      std::swap(picked[static_cast<size_t>(i)], picked[static_cast<size_t>(j)]);
    }
    picked.resize(static_cast<size_t>(wanted));
    return picked;
  }

 private:
  int64_t capacity_;
  int64_t next_ = 0;
  std::vector<DraftRecord> records_;
};

}  // namespace draftwise
