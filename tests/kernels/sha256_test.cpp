// SHA-256 against FIPS 180-4's examples, across block boundaries, and on the default model
// against the digest scripts/fetch_model.sh checks.
#include <gtest/gtest.h>

#include <string>

#include "kernels/sha256.h"
#include "tests/support/test_paths.h"

namespace draftwise {
namespace {

std::string digest(const std::string& text, size_t piece) {
  Sha256 hash;
  for (size_t at = 0; at < text.size(); at += piece) {
    const std::string part = text.substr(at, piece);
    hash.update({reinterpret_cast<const uint8_t*>(part.data()), part.size()});
  }
  return hash.hex_digest();
}

TEST(Sha256, MatchesTheStandardsExamples) {
  EXPECT_EQ(digest("", 1), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(digest("abc", 1), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const std::string two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  for (const size_t piece : {size_t{1}, size_t{7}, size_t{64}, size_t{1000}}) {
    EXPECT_EQ(digest(two_blocks, piece), "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1") << piece;
  }
  EXPECT_EQ(digest(std::string(1000000, 'a'), 4096), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, DefaultModelFileHasItsPublishedDigest) {
  DW_REQUIRE_DEFAULT_MODEL();
  const auto digest = sha256_of_path(testing::default_model_path().string());
  ASSERT_TRUE(digest.ok()) << digest.error().message;
  EXPECT_EQ(*digest, "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53");
  EXPECT_FALSE(sha256_of_path("/nonexistent/model.gguf").ok());
  EXPECT_TRUE(sha256_of_path((testing::fixtures_dir() / "models/llama_tied").string()).ok());
}

}  // namespace
}  // namespace draftwise
