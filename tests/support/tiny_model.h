// A tiny decoder with seeded random weights, written as a Hugging Face safetensors folder
// and as a GGUF file, for loader tests and bad-input tests.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "kernels/tensor_type.h"
#include "target/model_config.h"

namespace draftwise::testing {

struct TinyModel {
  ModelConfig config;
  std::map<std::string, std::vector<int64_t>> shapes;  // Hugging Face names and layout
  std::map<std::string, std::vector<float>> weights;
};

// vocab 64, hidden 32, 2 layers, 4 heads of 8, 2 KV heads, FFN 48.
TinyModel make_tiny_model(Architecture architecture, bool tied, uint64_t seed);

std::string hf_config_json(const ModelConfig& config);

// config.json + model.safetensors (F32) in `folder`.
void write_safetensors_folder(const TinyModel& model, const std::filesystem::path& folder);

// The model as GGUF with `weight_type` for 2-D weights (F32 or F16; norms stay F32). For
// the llama architecture Q/K rows are permuted the way llama.cpp's converter does.
std::string tiny_model_gguf(const TinyModel& model, TensorType weight_type);

// llama.cpp's converter permutation of Q/K rows (convert_hf_to_gguf.py, LlamaModel.permute):
// reshape [heads, 2, head_dim/2, cols], swap axes 1 and 2.
std::vector<float> permute_like_llama_cpp(const std::vector<float>& rows, int64_t heads,
                                          int64_t cols);

}  // namespace draftwise::testing
