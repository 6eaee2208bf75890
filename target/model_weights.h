// The weights of a decoder, bound by their Hugging Face names and checked against the
// config's shapes before anything is loaded.
//
// Internal convention: tensors use Hugging Face names, row-major [out, in] layout and HF's
// rotary pairing (dimension i pairs with i + head_dim/2, "rotate_half"). llama.cpp's
// converter stores the rows of Llama Q and K projections permuted per head so that pairs
// are adjacent (2j, 2j+1); such tensors are un-permuted once, when loaded (load_f32).
// Qwen2 GGUF files keep HF's order and are not permuted.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "kernels/status.h"
#include "target/checkpoint.h"
#include "target/model_config.h"

namespace draftwise {

// A tensor the decoder needs: its Hugging Face name and shape.
struct DecoderTensorSpec {
  std::string name;
  std::vector<int64_t> shape;
  int64_t rope_heads = 0;  // Q/K projections: heads over which GGUF may permute rows
  int64_t layer = -1;      // its decoder layer; -1 for the embedding, final norm and LM head
  std::string part = {};   // the name within the layer, e.g. "self_attn.q_proj.weight"
};

// Every tensor a decoder of this config needs, in load order.
std::vector<DecoderTensorSpec> decoder_tensor_specs(const ModelConfig& config);

// Σ of the element counts of decoder_tensor_specs, computed without building the list (a
// config may claim sizes far beyond memory).
double decoder_parameter_count(const ModelConfig& config);

struct WeightTensor {
  std::string name;  // Hugging Face name, e.g. model.layers.0.self_attn.q_proj.weight
  const CheckpointTensor* source = nullptr;
  std::vector<int64_t> shape;          // expected and verified, row-major
  int64_t rope_interleaved_heads = 0;  // > 0: stored rows are GGUF-permuted over this many heads
};

class ModelWeights {
 public:
  // Finds every tensor the config needs and checks its shape and that its type converts to
  // fp32. Errors name the missing or mismatched tensor.
  static Expected<ModelWeights> bind(const Checkpoint& checkpoint, const ModelConfig& config);

  const std::vector<WeightTensor>& tensors() const { return tensors_; }
  const WeightTensor* find(std::string_view name) const;

  // The tensor as fp32 in the internal convention ([rows, cols] row-major, HF row order).
  Expected<std::vector<float>> load_f32(const WeightTensor& tensor) const;

 private:
  std::vector<WeightTensor> tensors_;
  std::unordered_map<std::string, size_t> index_;
};

// Produces one tensor of a decoder as fp32 in the internal convention.
using WeightLoader = std::function<Expected<std::vector<float>>(const DecoderTensorSpec& spec)>;

// Loads from a bound checkpoint; `weights` (and its checkpoint) must outlive the loader.
WeightLoader checkpoint_weight_loader(const ModelWeights& weights);

// Name of a tensor in a GGUF file for a Hugging Face name ("model.norm.weight" ->
// "output_norm.weight"); empty when it has no GGUF counterpart.
std::string gguf_tensor_name(std::string_view hf_name);

// Reorders rows of a Q or K projection ([num_heads * head_dim, cols] fp32, or a bias with
// cols = 1) from GGUF's interleaved rotary order to Hugging Face's half-split order.
void unpermute_rope_rows(float* data, int64_t num_heads, int64_t head_dim, int64_t cols);

}  // namespace draftwise
