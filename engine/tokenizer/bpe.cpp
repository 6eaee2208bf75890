#include "engine/tokenizer/bpe.h"

#include <queue>

namespace draftwise {

void BpeMergeTable::add(int32_t left, int32_t right, int32_t rank, int32_t result) {
  merges_.insert_or_assign(key(left, right), BpeMerge{rank, result});
}

const BpeMerge* BpeMergeTable::find(int32_t left, int32_t right) const {
  const auto it = merges_.find(key(left, right));
  return it == merges_.end() ? nullptr : &it->second;
}

void BpeMergeTable::apply(std::vector<int32_t>& symbols) const {
  const int32_t count = static_cast<int32_t>(symbols.size());
  if (count < 2) return;
  // Symbols form a linked list; a merge folds the right symbol into the left one, so a
  // symbol's index is the position of its first character and orders ties left to right.
  std::vector<int32_t> next(count), previous(count);
  std::vector<bool> alive(count, true);
  for (int32_t i = 0; i < count; ++i) {
    next[i] = i + 1 < count ? i + 1 : -1;
    previous[i] = i - 1;
  }
  struct Candidate {
    int32_t rank, left, right, left_id, right_id;
    bool operator>(const Candidate& other) const {
      return rank != other.rank ? rank > other.rank : left > other.left;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> queue;
  const auto consider = [&](int32_t left) {
    if (left < 0 || next[left] < 0) return;
    const int32_t right = next[left];
    if (const BpeMerge* merge = find(symbols[left], symbols[right])) {
      queue.push({merge->rank, left, right, symbols[left], symbols[right]});
    }
  };
  for (int32_t i = 0; i + 1 < count; ++i) consider(i);

  while (!queue.empty()) {
    const Candidate candidate = queue.top();
    queue.pop();
    const int32_t left = candidate.left, right = candidate.right;
    // Skip candidates made stale by an earlier merge.
    if (!alive[left] || !alive[right] || next[left] != right ||
        symbols[left] != candidate.left_id || symbols[right] != candidate.right_id) {
      continue;
    }
    symbols[left] = find(candidate.left_id, candidate.right_id)->result;
    alive[right] = false;
    next[left] = next[right];
    if (next[right] >= 0) previous[next[right]] = left;
    consider(previous[left]);
    consider(left);
  }
  int32_t kept = 0;
  for (int32_t i = 0; i < count; ++i) {
    if (alive[i]) symbols[kept++] = symbols[i];
  }
  symbols.resize(kept);
}

}  // namespace draftwise
