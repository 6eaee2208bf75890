// Reference logits committed by tools/make_model_fixtures.py, and how close ours must be.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace draftwise::testing {

// The F32 tensor `name` of a safetensors file, flattened; fails the test when absent.
std::vector<float> read_f32_tensor(const std::filesystem::path& path, const std::string& name);

// max |a − b| and max |b| over two equally long arrays.
struct LogitDifference {
  double max_abs_difference = 0;
  double max_abs_reference = 0;
  double relative() const { return max_abs_difference / max_abs_reference; }
};
LogitDifference compare_logits(const std::vector<float>& actual, const std::vector<float>& reference);

}  // namespace draftwise::testing
