#include "tests/support/test_paths.h"

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace draftwise::testing {

std::filesystem::path source_dir() {
  return DRAFTWISE_SOURCE_DIR;
}

std::filesystem::path fixtures_dir() {
  return source_dir() / "tests" / "fixtures";
}

std::filesystem::path default_model_path() {
  return source_dir() / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf";
}

bool default_model_required() {
  const char* value = std::getenv("DRAFTWISE_REQUIRE_MODEL");
  return value != nullptr && std::string(value) == "1";
}

std::filesystem::path draftwise_binary() {
  return DRAFTWISE_BINARY;
}

ScratchDir::ScratchDir() {
  static std::atomic<int> counter{0};
  path_ = std::filesystem::temp_directory_path() /
          ("draftwise-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
  std::filesystem::remove_all(path_);
  std::filesystem::create_directories(path_);
}

ScratchDir::~ScratchDir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

std::filesystem::path ScratchDir::write(const std::string& name,
                                        const std::string& contents) const {
  const std::filesystem::path file = path_ / name;
  std::filesystem::create_directories(file.parent_path());
  std::ofstream out(file, std::ios::binary);
  out.write(contents.data(), static_cast<std::streamsize>(contents.size()));
  if (!out) throw std::runtime_error("cannot write " + file.string());
  return file;
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path.string());
  std::ostringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

}  // namespace draftwise::testing
