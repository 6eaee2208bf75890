// TTT models on the CPU against the official implementation (tests/fixtures/ttt_official/,
// made with ttt-lm-pytorch): TTT-Linear and TTT-MLP reproduce the reference logits (within
// 1e-4 of the largest |logit|) and its greedy continuation; feeding a sequence in pieces
// (decode) gives what one pass gives; configs are read with their defaults and refused with
// a message naming the field.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "target/ttt_model.h"
#include "tests/support/test_paths.h"

namespace draftwise {
namespace {

std::vector<int32_t> read_ids(const std::filesystem::path& path) {
  std::vector<int32_t> ids;
  std::stringstream in(testing::read_file(path));
  std::string item;
  while (std::getline(in, item, ',')) ids.push_back(std::stoi(item));
  return ids;
}

int32_t argmax_of(std::span<const float> row) {
  return static_cast<int32_t>(std::max_element(row.begin(), row.end()) - row.begin());
}

// `count` greedy tokens after a prompt whose last logits are `last`, one at a time on `state`.
std::vector<int32_t> greedy_continuation(const TttModel& ttt, TttState& state, std::span<const float> last,
                                         size_t count) {
  std::vector<int32_t> generated = {argmax_of(last)};
  std::vector<float> logits;
  while (generated.size() < count) {
    const int32_t token = generated.back();
    if (!ttt.forward(state, std::span(&token, 1), logits).ok()) break;
    generated.push_back(argmax_of(logits));
  }
  return generated;
}

void expect_close(std::span<const float> got, const nlohmann::json& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double largest = 0, worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    largest = std::max(largest, std::fabs(want[i].get<double>()));
    worst = std::max(worst, std::fabs(got[i] - want[i].get<double>()));
  }
  EXPECT_LE(worst, 1e-4 * largest) << what << ": worst difference " << worst << ", largest |logit| " << largest;
}

class TttOfficial : public ::testing::TestWithParam<std::string> {};

TEST_P(TttOfficial, ReproducesTheReferenceLogitsAndGreedyIds) {
  const auto folder = testing::fixtures_dir() / "ttt_official" / GetParam();
  Expected<std::unique_ptr<TttModel>> model = TttModel::load(folder.string());
  ASSERT_TRUE(model.ok()) << model.error().message;
  const TttModel& ttt = **model;
  EXPECT_EQ(ttt.config().mlp_layers, GetParam() == "mlp_base");
  const std::vector<int32_t> prompt = read_ids(folder / "input_ids.txt");
  const std::vector<int32_t> greedy = read_ids(folder / "greedy_ids.txt");
  std::ifstream in(folder / "reference.json");
  const nlohmann::json reference = nlohmann::json::parse(in);
  const size_t vocab = static_cast<size_t>(ttt.config().vocab_size);

  TttState state = ttt.initial_state();
  std::vector<float> logits;
  ASSERT_TRUE(ttt.forward(state, prompt, logits).ok());
  ASSERT_EQ(logits.size(), prompt.size() * vocab);
  const std::vector<size_t> rows = {8, 16, 36};
  for (size_t r = 0; r < rows.size(); ++r) {
    expect_close(std::span(logits).subspan(rows[r] * vocab, vocab), reference["logits_rows_8_16_36"][r],
                 "row " + std::to_string(rows[r]));
  }
  expect_close(std::span(logits).subspan((prompt.size() - 1) * vocab, vocab), reference["last_logits"], "last row");

  // Greedy decode, one token at a time on the carried state.
  EXPECT_EQ(greedy_continuation(ttt, state, std::span(logits).subspan((prompt.size() - 1) * vocab, vocab),
                                greedy.size()),
            greedy);
}

TEST_P(TttOfficial, FeedingInPiecesEqualsOnePass) {
  const auto folder = testing::fixtures_dir() / "ttt_official" / GetParam();
  auto model = TttModel::load(folder.string());
  ASSERT_TRUE(model.ok()) << model.error().message;
  const std::vector<int32_t> prompt = read_ids(folder / "input_ids.txt");
  TttState whole = (*model)->initial_state();
  std::vector<float> all;
  ASSERT_TRUE((*model)->forward(whole, prompt, all).ok());
  // Pieces that cross the mini-batch boundaries at 16 and 32 at different places.
  TttState pieces = (*model)->initial_state();
  std::vector<float> joined, part;
  size_t done = 0;
  for (const size_t size : {1u, 14u, 3u, 1u, 13u, 5u}) {
    ASSERT_TRUE((*model)->forward(pieces, std::span(prompt).subspan(done, size), part).ok());
    joined.insert(joined.end(), part.begin(), part.end());
    done += size;
  }
  ASSERT_EQ(done, prompt.size());
  // Pieces cut mini-batches, which then run token by token (primal) where one pass runs them
  // whole (dual): equal up to rounding.
  ASSERT_EQ(joined.size(), all.size());
  float largest = 0, worst = 0;
  for (size_t i = 0; i < all.size(); ++i) {
    largest = std::max(largest, std::fabs(all[i]));
    worst = std::max(worst, std::fabs(all[i] - joined[i]));
  }
  EXPECT_LE(worst, 1e-5f * largest);
  EXPECT_EQ(pieces.position, whole.position);
  // A snapshot taken mid-way and restored replays the same logits.
  TttState snapshot = (*model)->initial_state();
  std::vector<float> first, again;
  ASSERT_TRUE((*model)->forward(snapshot, std::span(prompt).subspan(0, 20), first).ok());
  const TttState saved = snapshot;
  ASSERT_TRUE((*model)->forward(snapshot, std::span(prompt).subspan(20, 5), first).ok());
  TttState restored = saved;
  ASSERT_TRUE((*model)->forward(restored, std::span(prompt).subspan(20, 5), again).ok());
  EXPECT_EQ(first, again);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, TttOfficial, ::testing::Values("linear_base", "mlp_base"));

TEST(TttDualForm, EqualsThePrimalForm) {
  for (const char* name : {"ttt_official/linear_base", "ttt/linear_gate_shareqk_untied_mb8",
                           "ttt/linear_preconv_gate_shareqk_mb4", "ttt_official/mlp_base", "ttt/mlp_preconv_untied_mb16",
                           "ttt/mlp_shareqk_gate_mb8", "ttt/hybrid_linear_gqa_preconv_gate_mb8"}) {
    SCOPED_TRACE(name);
    const auto folder = testing::fixtures_dir() / name;
    auto dual = TttModel::load(folder.string());
    auto primal = TttModel::load(folder.string());
    ASSERT_TRUE(dual.ok() && primal.ok());
    (*primal)->set_dual_form(false);
    const std::vector<int32_t> prompt = read_ids(folder / "input_ids.txt");
    TttState a = (*dual)->initial_state(), b = (*primal)->initial_state();
    std::vector<float> with_dual, without;
    ASSERT_TRUE((*dual)->forward(a, prompt, with_dual).ok());
    ASSERT_TRUE((*primal)->forward(b, prompt, without).ok());
    float largest = 0, worst = 0;
    for (size_t i = 0; i < without.size(); ++i) {
      largest = std::max(largest, std::fabs(without[i]));
      worst = std::max(worst, std::fabs(without[i] - with_dual[i]));
    }
    EXPECT_GT(worst, 0.0f);  // the two forms really are different computations
    EXPECT_LE(worst, 1e-5f * largest);
    // The carried weights agree too: the next token's logits.
    const int32_t next = 7;
    ASSERT_TRUE((*dual)->forward(a, std::span(&next, 1), with_dual).ok());
    ASSERT_TRUE((*primal)->forward(b, std::span(&next, 1), without).ok());
    for (size_t i = 0; i < without.size(); ++i) EXPECT_NEAR(with_dual[i], without[i], 1e-5f * largest);
  }
}

// Theorem 1 of the paper in TTT.md's form: f(z) = z W without residual, LayerNorm or bias,
// W0 = 0, the loss ½‖f(K) − V‖² (so G = Z − V = −V at W0), rate 1 for every pair, one
// mini-batch over the whole sequence: the dual form's output is linear attention,
// out_t = Σ_{s≤t} (Q_t · K_s) V_s.
TEST(TttDualForm, Theorem1IsLinearAttention) {
  constexpr int64_t n = 11, f = 6;
  std::vector<double> q(n * f), k(n * f), v(n * f), g(n * f), eta(n * n, 1.0), w0(f * f, 0.0), out(n * f);
  uint64_t state = 12345;
  const auto uniform = [&] {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<double>(state >> 11) / 9007199254740992.0 - 0.5;
  };
  for (int64_t i = 0; i < n * f; ++i) {
    q[static_cast<size_t>(i)] = uniform();
    k[static_cast<size_t>(i)] = uniform();
    v[static_cast<size_t>(i)] = uniform();
    g[static_cast<size_t>(i)] = -v[static_cast<size_t>(i)];  // ∂½‖K·0 − V‖²/∂Z
  }
  ttt_linear_dual(q, k, g, eta, w0, {}, n, f, f, out);
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t o = 0; o < f; ++o) {
      double attention = 0;
      for (int64_t s = 0; s <= t; ++s) {
        double score = 0;
        for (int64_t m = 0; m < f; ++m) score += q[static_cast<size_t>(t * f + m)] * k[static_cast<size_t>(s * f + m)];
        attention += score * v[static_cast<size_t>(s * f + o)];
      }
      EXPECT_NEAR(out[static_cast<size_t>(t * f + o)], attention, 1e-12);
    }
  }
}

// The other options, against this project's PyTorch implementation of TTT.md
// (tools/make_ttt_fixtures.py, itself checked against the official fixtures first): every
// prompt position's logits and the greedy continuation.
class TttOptions : public ::testing::TestWithParam<std::string> {};

TEST_P(TttOptions, ReproducesThePyTorchImplementation) {
  const auto folder = testing::fixtures_dir() / "ttt" / GetParam();
  Expected<std::unique_ptr<TttModel>> model = TttModel::load(folder.string());
  ASSERT_TRUE(model.ok()) << model.error().message;
  const TttModel& ttt = **model;
  const std::vector<int32_t> prompt = read_ids(folder / "input_ids.txt");
  const std::vector<int32_t> greedy = read_ids(folder / "greedy_ids.txt");
  std::ifstream in(folder / "reference.json");
  const nlohmann::json reference = nlohmann::json::parse(in);
  const size_t vocab = static_cast<size_t>(ttt.config().vocab_size);
  TttState state = ttt.initial_state();
  std::vector<float> logits;
  ASSERT_TRUE(ttt.forward(state, prompt, logits).ok());
  ASSERT_EQ(reference["logits"].size(), prompt.size());
  for (size_t row = 0; row < prompt.size(); ++row) {
    expect_close(std::span(logits).subspan(row * vocab, vocab), reference["logits"][row], "row " + std::to_string(row));
  }
  EXPECT_EQ(greedy_continuation(ttt, state, std::span(logits).subspan((prompt.size() - 1) * vocab, vocab),
                                greedy.size()),
            greedy);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, TttOptions,
                         ::testing::Values("linear_gate_shareqk_untied_mb8", "mlp_preconv_untied_mb16",
                                           "linear_preconv_gate_shareqk_mb4", "mlp_shareqk_gate_mb8",
                                           "hybrid_linear_gqa_preconv_gate_mb8", "hybrid_mlp_shareqk_untied_mb4"));

// Hybrid models: the attention layers' caches live in the state next to the TTT layers'
// weights, so feeding a prompt in uneven pieces gives what one pass gives.
TEST(TttHybrid, PiecewiseFeedingEqualsOnePass) {
  for (const char* name : {"hybrid_linear_gqa_preconv_gate_mb8", "hybrid_mlp_shareqk_untied_mb4"}) {
    SCOPED_TRACE(name);
    const auto folder = testing::fixtures_dir() / "ttt" / name;
    Expected<std::unique_ptr<TttModel>> model = TttModel::load(folder.string());
    ASSERT_TRUE(model.ok()) << model.error().message;
    const TttModel& ttt = **model;
    ASSERT_TRUE(ttt.config().hybrid());
    const std::vector<int32_t> prompt = read_ids(folder / "input_ids.txt");
    TttState whole = ttt.initial_state(), pieces = ttt.initial_state();
    std::vector<float> expected, part, got;
    ASSERT_TRUE(ttt.forward(whole, prompt, expected).ok());
    for (size_t at = 0, piece = 1; at < prompt.size(); at += piece, piece = piece % 5 + 1) {
      const size_t n = std::min(piece, prompt.size() - at);
      ASSERT_TRUE(ttt.forward(pieces, std::span(prompt).subspan(at, n), part).ok());
      got.insert(got.end(), part.begin(), part.end());
    }
    ASSERT_EQ(got.size(), expected.size());
    float largest = 0;
    for (const float v : expected) largest = std::max(largest, std::fabs(v));
    for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], expected[i], 1e-5f * largest) << i;
    // The attention layers hold one key row per position; the TTT layers hold no cache.
    for (size_t l = 0; l < pieces.layers.size(); ++l) {
      const size_t rows = ttt.config().is_attention(l) ? prompt.size() : 0;
      EXPECT_GE(pieces.layers[l].keys.size(), rows * static_cast<size_t>(ttt.config().num_kv_heads * ttt.config().head_dim()));
      EXPECT_EQ(pieces.layers[l].heads.empty(), ttt.config().is_attention(l));
    }
  }
}

TEST(TttConfig, DefaultsAndErrors) {
  const Expected<TttConfig> defaults = parse_ttt_config({{"model_type", "ttt"}});
  ASSERT_TRUE(defaults.ok()) << defaults.error().message;
  EXPECT_EQ(defaults->hidden_size, 2048);
  EXPECT_EQ(defaults->mini_batch_size, 16);
  EXPECT_FALSE(defaults->mlp_layers);
  EXPECT_EQ(defaults->head_dim(), 64);
  EXPECT_NE(parse_ttt_config({{"model_type", "llama"}}).error().message.find("model_type"), std::string::npos);
  // Fields of the wrong JSON type are errors, not exceptions (found by model_config_fuzz).
  EXPECT_NE(parse_ttt_config({{"model_type", 6}}).error().message.find("model_type"), std::string::npos);
  EXPECT_NE(parse_ttt_config({{"model_type", "ttt"}, {"ttt_layer_type", 1}}).error().message.find("ttt_layer_type"),
            std::string::npos);
  EXPECT_NE(parse_ttt_config({{"model_type", "ttt"}, {"eos_token_id", "x"}}).error().message.find("eos_token_id"),
            std::string::npos);
  EXPECT_NE(parse_ttt_config({{"model_type", "ttt"}, {"conv_kernel", 1000}}).error().message.find("conv_kernel"),
            std::string::npos);
  EXPECT_NE(parse_ttt_config({{"model_type", "ttt"}, {"ttt_layer_type", "rnn"}}).error().message.find("ttt_layer_type"),
            std::string::npos);
  EXPECT_NE(parse_ttt_config({{"model_type", "ttt"}, {"mini_batch_size", 0}}).error().message.find("mini_batch_size"),
            std::string::npos);
  EXPECT_NE(parse_ttt_config({{"model_type", "ttt"}, {"use_gate", "yes"}}).error().message.find("use_gate"),
            std::string::npos);
  EXPECT_NE(parse_ttt_config({{"model_type", "ttt"}, {"hidden_size", 60}, {"num_attention_heads", 8}})
                .error()
                .message.find("heads"),
            std::string::npos);
  const nlohmann::json two_layers = {{"model_type", "ttt"}, {"num_hidden_layers", 2}};
  nlohmann::json hybrid = two_layers;
  hybrid["layer_types"] = {"attention", "ttt"};
  hybrid["num_key_value_heads"] = 8;
  const Expected<TttConfig> mixed = parse_ttt_config(hybrid);
  ASSERT_TRUE(mixed.ok()) << mixed.error().message;
  EXPECT_TRUE(mixed->hybrid() && mixed->is_attention(0) && !mixed->is_attention(1));
  EXPECT_EQ(mixed->num_kv_heads, 8);
  EXPECT_FALSE(defaults->hybrid());
  EXPECT_EQ(defaults->num_kv_heads, 32);
  for (const nlohmann::json& types : {nlohmann::json{"ttt"}, nlohmann::json{"ttt", "mamba"}, nlohmann::json("ttt"),
                                      nlohmann::json{"ttt", 1}}) {
    nlohmann::json bad = two_layers;
    bad["layer_types"] = types;
    EXPECT_NE(parse_ttt_config(bad).error().message.find("layer_types"), std::string::npos) << types.dump();
  }
  nlohmann::json bad_kv = hybrid;
  bad_kv["num_key_value_heads"] = 5;
  EXPECT_NE(parse_ttt_config(bad_kv).error().message.find("num_key_value_heads"), std::string::npos);
  EXPECT_FALSE(TttModel::load("/nonexistent/ttt").ok());
}

}  // namespace
}  // namespace draftwise
