// Byte-pair-encoding merges over token ids: the pair table and the merge loop shared by
// byte-level BPE and SentencePiece BPE.
#pragma once

#include <cstddef>
#include <cstdint>
#include <unordered_map>
#include <vector>

namespace draftwise {

struct BpeMerge {
  int32_t rank;    // lower merges first
  int32_t result;  // id of the merged token
};

class BpeMergeTable {
 public:
  // Registers left+right -> result. A pair added again takes the later rank, as in
  // Hugging Face's merge map.
  void add(int32_t left, int32_t right, int32_t rank, int32_t result);
  const BpeMerge* find(int32_t left, int32_t right) const;
  size_t size() const { return merges_.size(); }

  // Merges `symbols` in place until no adjacent pair has a merge: each step merges the pair
  // of lowest rank, the leftmost among equal ranks. This is the order of Hugging Face's BPE
  // (rank, then position) and of SentencePiece's BPE when rank orders pieces by score.
  void apply(std::vector<int32_t>& symbols) const;

 private:
  static uint64_t key(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
           static_cast<uint32_t>(right);
  }
  std::unordered_map<uint64_t, BpeMerge> merges_;
};

}  // namespace draftwise
