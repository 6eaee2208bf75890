#include "tests/support/reference_logits.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "target/safetensors_reader.h"

namespace draftwise::testing {

std::vector<float> read_f32_tensor(const std::filesystem::path& path, const std::string& name) {
  auto file = SafetensorsFile::open(path.string());
  if (!file.ok()) {
    ADD_FAILURE() << file.error().message;
    return {};
  }
  for (const SafetensorsTensor& tensor : file->tensors()) {
    if (tensor.name != name) continue;
    EXPECT_EQ(tensor.type, TensorType::f32) << path << ": " << name;
    std::vector<float> values(tensor.data.size() / sizeof(float));
    std::memcpy(values.data(), tensor.data.data(), values.size() * sizeof(float));
    return values;
  }
  ADD_FAILURE() << path << " has no tensor " << name;
  return {};
}

LogitDifference compare_logits(const std::vector<float>& actual, const std::vector<float>& reference) {
  LogitDifference difference;
  EXPECT_EQ(actual.size(), reference.size());
  for (size_t i = 0; i < std::min(actual.size(), reference.size()); ++i) {
    difference.max_abs_difference = std::max(
        difference.max_abs_difference, std::abs(static_cast<double>(actual[i]) - reference[i]));
    difference.max_abs_reference =
        std::max(difference.max_abs_reference, std::abs(static_cast<double>(reference[i])));
  }
  return difference;
}

}  // namespace draftwise::testing
