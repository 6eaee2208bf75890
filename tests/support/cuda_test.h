// For the tests that need a GPU: skip cleanly where none is visible, and load a model onto one.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <memory>

#include <cuda_runtime_api.h>

#include "target/checkpoint.h"
#include "target/cuda_decoder.h"

namespace draftwise::testing {

inline bool have_gpu() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) cudaGetLastError();
  return count > 0;
}

// A model on GPU 0 with a small key/value cache (5% of the free memory).
inline std::unique_ptr<CudaDecoder> load_on_gpu(const std::filesystem::path& path) {
  auto checkpoint = Checkpoint::open(path.string());
  EXPECT_TRUE(checkpoint.ok());
  CudaDecoderOptions options;
  options.kv_cache_memory_share = 0.05;
  auto decoder = CudaDecoder::load(*checkpoint, options);
  EXPECT_TRUE(decoder.ok()) << decoder.error().message;
  return decoder.ok() ? std::move(decoder).value() : nullptr;
}

}  // namespace draftwise::testing

#define DW_REQUIRE_GPU()                 \
  if (!::draftwise::testing::have_gpu()) \
  GTEST_SKIP() << "no CUDA device visible: this test needs a GPU"
