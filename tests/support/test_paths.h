// Where tests find their inputs, and a scratch folder per test.
#pragma once

#include <filesystem>
#include <string>

namespace draftwise::testing {

// The repository root.
std::filesystem::path source_dir();

// tests/fixtures/ in the source tree.
std::filesystem::path fixtures_dir();

// models/SmolLM2-135M-Instruct.Q4_1.gguf, the default model scripts/fetch_model.sh fetches.
std::filesystem::path default_model_path();

// Whether tests that need the default model must fail rather than skip when it is
// missing (DRAFTWISE_REQUIRE_MODEL=1, which scripts/test.sh sets after fetching it).
bool default_model_required();

// The built draftwise binary.
std::filesystem::path draftwise_binary();

// A fresh empty folder, removed when the object goes out of scope.
class ScratchDir {
 public:
  ScratchDir();
  ~ScratchDir();
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  // Writes `contents` to path()/name and returns the full path.
  std::filesystem::path write(const std::string& name, const std::string& contents) const;

 private:
  std::filesystem::path path_;
};

std::string read_file(const std::filesystem::path& path);

}  // namespace draftwise::testing

// Skips the test (or fails it, when the model is required) if the default model is absent.
#define DW_REQUIRE_DEFAULT_MODEL()                                                         \
  do {                                                                                     \
    if (!std::filesystem::exists(::draftwise::testing::default_model_path())) {            \
      if (::draftwise::testing::default_model_required()) {                                \
        FAIL() << "default model missing: " << ::draftwise::testing::default_model_path(); \
      }                                                                                    \
      GTEST_SKIP() << "default model not fetched (run scripts/fetch_model.sh)";            \
    }                                                                                      \
  } while (0)
