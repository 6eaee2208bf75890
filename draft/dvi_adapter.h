// The trainable part of a DVI draft head (DVI.md, "The draft head"):
//
//   p_S(· | h) = softmax((W_lm + γ · B A) · rms_norm(h + M h, gain)),   γ = α / r
//
// W_lm is the target's LM head, frozen and shared; the adapter holds the norm gain, A and B
// and, optionally, M: a full [hidden, hidden] map of the exit hidden state before the norm
// (a "tuned lens", Belrose et al. 2023, arXiv 2303.08112: it carries layer E's basis towards
// the last layer's, which a low-rank change of the LM head cannot). All are fp32. A starts
// small-random, B and M at zero, so the head starts as the untrained one while the gradients
// into B and M are not zero. Adapters save to and load from safetensors files;
// a save goes to a temporary file that is then renamed, so a crash never leaves a torn file.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "kernels/status.h"
#include "target/decoder.h"

namespace draftwise {

struct DraftAdapterShape {
  int64_t hidden = 0;
  int64_t vocab = 0;
  int64_t rank = 0;    // in [1, kMaxRank]
  float alpha = 0.0f;  // γ = alpha / rank
  bool lens = false;   // with M
  static constexpr int64_t kMaxRank = 256;
  bool operator==(const DraftAdapterShape&) const = default;
};

struct DraftAdapter {
  DraftAdapterShape shape;
  std::vector<float> gain;  // [hidden]
  std::vector<float> a;     // [rank, hidden]
  std::vector<float> b;     // [vocab, rank]
  std::vector<float> lens;  // M, [hidden, hidden] (row o: output o); empty without a lens

  // gain = initial_gain (the final norm's), A ~ N(0, 1/hidden) from `seed`, B = 0, M = 0.
  static Expected<DraftAdapter> initial(const DraftAdapterShape& shape,
                                        std::span<const float> initial_gain, uint64_t seed);

  // Identifies these values for a GPU's cached copy: set by with_new_version() whenever an
  // adapter is published; not part of equality.
  uint64_t version = 0;

  float scale() const { return shape.alpha / static_cast<float>(shape.rank); }
  // The view a decoder's draft head reads; valid while this adapter lives unchanged.
  LowRankAdapter low_rank() const { return {shape.rank, scale(), a, b, lens, version}; }
  // A copy with a version no other adapter of this process has.
  DraftAdapter with_new_version() const;
  static uint64_t new_version();
  bool operator==(const DraftAdapter& other) const {
    return shape == other.shape && gain == other.gain && a == other.a && b == other.b &&
           lens == other.lens;
  }
};

// Writes `adapter` as safetensors ("draft_head.norm.weight" [hidden], "draft_head.lora_A"
// [rank, hidden], "draft_head.lora_B" [vocab, rank], with a lens "draft_head.lens"
// [hidden, hidden], F32; metadata: format, alpha, rank) to `path` through a temporary file in
// the same folder and a rename.
Status save_draft_adapter(const DraftAdapter& adapter, const std::filesystem::path& path);

// Reads an adapter written by save_draft_adapter and checks it fits a model of `hidden` and
// `vocab`; every mismatch is an error naming the file and the tensor.
Expected<DraftAdapter> load_draft_adapter(const std::filesystem::path& path, int64_t hidden,
                                          int64_t vocab);

}  // namespace draftwise
