// qTTT on the CPU reference (QTTT.md): the hand-written gradient of ΔW_Q against finite
// differences, the span forward against the decode forward, what adaptation may and may not
// change, and the per-sequence isolation of an adaptation.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "kernels/random.h"
#include "target/checkpoint.h"
#include "target/cpu_decoder.h"
#include "target/model_weights.h"
#include "target/qttt.h"
#include "tests/support/decoder_runs.h"
#include "tests/support/test_paths.h"

namespace draftwise {
namespace {

using testing::fixtures_dir;

// A committed tiny checkpoint; with `window` > 0 its config gets that sliding window.
std::unique_ptr<CpuDecoder> load_tiny(const std::string& name, int64_t window = 0) {
  auto checkpoint = Checkpoint::open((fixtures_dir() / "models" / name).string());
  EXPECT_TRUE(checkpoint.ok()) << checkpoint.error().message;
  auto config = load_model_config(*checkpoint);
  EXPECT_TRUE(config.ok()) << config.error().message;
  if (window > 0) config->sliding_window = window;
  auto weights = ModelWeights::bind(*checkpoint, *config);
  EXPECT_TRUE(weights.ok()) << weights.error().message;
  auto decoder = CpuDecoder::create(*config, checkpoint_weight_loader(*weights), CpuDecoderOptions{2, 0});
  EXPECT_TRUE(decoder.ok()) << decoder.error().message;
  return std::move(decoder).value();
}

using testing::prefilled_sequence;
using testing::random_token_ids;

// Parameters of the given rank with every entry nonzero: full rank ±`scale`, A ±0.3, B ±`scale`.
std::vector<float> random_parameters(const ModelConfig& config, int64_t rank, float scale, uint64_t seed) {
  return testing::random_qtt_parameters(config, rank, 0.3, scale, seed);
}

double norm(std::span<const float> values) {
  double total = 0;
  for (const float value : values) total += static_cast<double>(value) * value;
  return std::sqrt(total);
}

double dot(std::span<const float> a, std::span<const float> b) {
  double total = 0;
  for (size_t i = 0; i < a.size(); ++i) total += static_cast<double>(a[i]) * b[i];
  return total;
}

TEST(QttSpec, ParsesEveryKeyAndNamesTheWrongOne) {
  auto options = parse_qtt_spec("steps=8,span=64,lr=0.01,rank=4,optimizer=sgd,seed=3");
  ASSERT_TRUE(options.ok()) << options.error().message;
  EXPECT_EQ(options->steps, 8);
  EXPECT_EQ(options->span, 64);
  EXPECT_FLOAT_EQ(options->learning_rate, 0.01f);
  EXPECT_EQ(options->rank, 4);
  EXPECT_EQ(options->optimizer, QttOptimizer::sgd);
  EXPECT_EQ(options->seed, 3u);
  auto again = parse_qtt_spec(qtt_spec(*options));
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_EQ(qtt_spec(*again), qtt_spec(*options));

  auto defaults = parse_qtt_spec("on");
  ASSERT_TRUE(defaults.ok());
  EXPECT_EQ(qtt_spec(*defaults), qtt_spec(QttOptions{}));
  auto full = parse_qtt_spec("rank=full,steps=2");
  ASSERT_TRUE(full.ok());
  EXPECT_EQ(full->rank, 0);
  EXPECT_EQ(full->steps, 2);

  const std::vector<std::pair<std::string, std::string>> wrong = {
      {"steps=0", "'steps'"},       {"span=-3", "'span'"},      {"lr=-1", "'lr'"},
      {"lr=abc", "'lr'"},           {"rank=two", "'rank'"},     {"optimizer=rmsprop", "'optimizer'"},
      {"colour=red", "'colour'"},   {"steps", "key=value"},     {"", "empty"},
      {"steps=4,", "key=value"},    {"seed=-1", "'seed'"},      {"steps=1e9", "'steps'"}};
  for (const auto& [spec, named] : wrong) {
    auto parsed = parse_qtt_spec(spec);
    ASSERT_FALSE(parsed.ok()) << spec;
    EXPECT_NE(parsed.error().message.find(named), std::string::npos) << spec << ": " << parsed.error().message;
  }
}

struct GradientCase {
  const char* model;
  int64_t rank;
  int64_t window;
};

class QttGradient : public ::testing::TestWithParam<GradientCase> {};

// The loss's derivative along a direction u, by central differences, against gradient · u:
// along the whole gradient, along each layer's part of it (for a low rank, A's and B's parts
// apart) and along two random directions. A gradient wrong in any block misses its own check.
TEST_P(QttGradient, MatchesFiniteDifferences) {
  const GradientCase& param = GetParam();
  auto decoder = load_tiny(param.model, param.window);
  const ModelConfig& config = decoder->config();
  const std::vector<int32_t> context = random_token_ids(25, config.vocab_size, 11);
  const SequenceId sequence = prefilled_sequence(*decoder, context, 24);
  const std::vector<float> parameters = random_parameters(config, param.rank, 0.05f, 5);
  ASSERT_TRUE(decoder->set_query_parameters(sequence, param.rank, parameters).ok());
  const std::string cache = *decoder->cache_digest(sequence);

  std::vector<float> gradient;
  auto loss = decoder->query_loss(sequence, context, 6, 18, &gradient);
  ASSERT_TRUE(loss.ok()) << loss.error().message;
  ASSERT_EQ(gradient.size(), parameters.size());
  ASSERT_GT(norm(gradient), 0.0);

  std::vector<std::pair<std::string, std::vector<float>>> directions;
  directions.emplace_back("the gradient", gradient);
  const int64_t layer_size = qtt_layer_parameters(config, param.rank);
  const int64_t a_size = param.rank * config.hidden_size;
  for (int64_t layer = 0; layer < config.num_layers; ++layer) {
    const auto part = [&](int64_t from, int64_t to, const std::string& name) {
      std::vector<float> direction(gradient.size(), 0.0f);
      for (int64_t i = layer * layer_size + from; i < layer * layer_size + to; ++i) direction[i] = gradient[i];
      directions.emplace_back(fmt::format("layer {} {}", layer, name), direction);
    };
    if (param.rank == 0) {
      part(0, layer_size, "ΔW_Q");
    } else {
      part(0, a_size, "A");
      part(a_size, layer_size, "B");
    }
  }
  for (uint64_t seed : {1, 2}) {
    Rng rng(seed);
    std::vector<float> direction(gradient.size());
    for (float& value : direction) value = static_cast<float>(2 * rng.uniform() - 1);
    directions.emplace_back(fmt::format("random direction {}", seed), direction);
  }

  const double h = 1e-2;
  for (auto& [name, direction] : directions) {
    const double length = norm(direction);
    for (float& value : direction) value = static_cast<float>(value / length);
    const auto loss_at = [&](double step) {
      std::vector<float> moved = parameters;
      for (size_t i = 0; i < moved.size(); ++i) moved[i] += static_cast<float>(step * direction[i]);
      EXPECT_TRUE(decoder->set_query_parameters(sequence, param.rank, moved).ok());
      auto value = decoder->query_loss(sequence, context, 6, 18, nullptr);
      EXPECT_TRUE(value.ok());
      return *value;
    };
    const double numeric = (loss_at(h) - loss_at(-h)) / (2 * h);
    const double analytic = dot(gradient, direction);
    // Tolerance: a part of the difference quotient's error (fp32 forward, h²) and of the
    // derivative; the random directions are held to the whole gradient's size.
    const double scale = name.starts_with("random") ? norm(gradient) : std::abs(analytic);
    EXPECT_NEAR(numeric, analytic, 1e-4 + 2e-3 * scale)
        << param.model << " rank " << param.rank << ", along " << name;
  }
  EXPECT_EQ(*decoder->cache_digest(sequence), cache) << "the loss and gradient left the cached keys and values alone";
}

INSTANTIATE_TEST_SUITE_P(Models, QttGradient,
                         ::testing::Values(GradientCase{"llama_tied", 0, 0}, GradientCase{"llama_tied", 3, 0},
                                           GradientCase{"qwen2_bias", 0, 0}, GradientCase{"qwen2_bias", 2, 0},
                                           GradientCase{"llama3_rope", 0, 7}),
                         [](const ::testing::TestParamInfo<GradientCase>& info) {
                           return fmt::format("{}_rank{}{}", info.param.model, info.param.rank,
                                              info.param.window > 0 ? "_window" : "");
                         });

// Training optimises what decoding computes: for the position the sequence's last forward
// pass added (its keys and values made with ΔW_Q, as every decoded token's are), the span
// forward's loss equals the decode pass's own logits' loss.
TEST(QttCpu, SpanForwardIsTheDecodeForward) {
  for (const int64_t rank : {0, 4}) {
    auto decoder = load_tiny("qwen2_bias");
    const ModelConfig& config = decoder->config();
    const std::vector<int32_t> context = random_token_ids(21, config.vocab_size, 3);
    const SequenceId sequence = prefilled_sequence(*decoder, context, 19);
    ASSERT_TRUE(decoder->set_query_parameters(sequence, rank, random_parameters(config, rank, 0.05f, 9)).ok());
    std::vector<float> logits;
    const std::vector<int32_t> row = {0};
    const ForwardRequest next{sequence, std::span(context).subspan(19, 1), row};
    ASSERT_TRUE(decoder->forward(std::span(&next, 1), logits).ok());
    double total = 0;
    const float largest = *std::max_element(logits.begin(), logits.end());
    for (const float logit : logits) total += std::exp(static_cast<double>(logit - largest));
    const double decode_loss = std::log(total) + largest - logits[static_cast<size_t>(context[20])];
    auto span_loss = decoder->query_loss(sequence, context, 19, 1, nullptr);
    ASSERT_TRUE(span_loss.ok()) << span_loss.error().message;
    EXPECT_NEAR(*span_loss, decode_loss, 1e-5 * std::abs(decode_loss)) << "rank " << rank;
  }
}

TEST(QttCpu, AdaptationChangesOnlyDeltaWqAndItsSequence) {
  for (const int64_t rank : {0, 2}) {
    auto decoder = load_tiny("llama_tied");
    const ModelConfig& config = decoder->config();
    const std::vector<int32_t> context = random_token_ids(40, config.vocab_size, 21);
    const SequenceId sequence = prefilled_sequence(*decoder, context, 40);
    const SequenceId other = prefilled_sequence(*decoder, context, 30);
    const std::string weights = decoder->weights_digest();
    const std::string cache = *decoder->cache_digest(sequence);
    const std::string other_cache = *decoder->cache_digest(other);
    auto before = decoder->query_loss(sequence, context, 0, 39, nullptr);
    ASSERT_TRUE(before.ok());

    QttOptions options;
    options.steps = 6;
    options.span = 16;
    options.rank = rank;
    options.learning_rate = 1e-2f;
    auto report = decoder->adapt_queries(sequence, context, options);
    ASSERT_TRUE(report.ok()) << report.error().message;
    EXPECT_EQ(report->losses.size(), 6u);
    EXPECT_EQ(report->span, 16);
    EXPECT_EQ(report->context, 39);
    EXPECT_GT(report->flops, 0);
    const std::vector<float> trained = *decoder->query_parameters(sequence);
    ASSERT_EQ(static_cast<int64_t>(trained.size()), qtt_parameter_count(config, rank));
    EXPECT_GT(norm(trained), rank == 0 ? 0.0 : norm(qtt_initial_parameters(config, rank, options.seed)));

    EXPECT_EQ(decoder->weights_digest(), weights) << "rank " << rank;
    EXPECT_EQ(*decoder->cache_digest(sequence), cache) << "rank " << rank;
    EXPECT_EQ(*decoder->cache_digest(other), other_cache);
    EXPECT_TRUE(decoder->query_parameters(other)->empty());
    EXPECT_EQ(decoder->sequence_length(sequence), 40);
    auto after = decoder->query_loss(sequence, context, 0, 39, nullptr);
    ASSERT_TRUE(after.ok());
    EXPECT_LT(*after, *before) << "rank " << rank;
    decoder->release_sequence(sequence);
    EXPECT_FALSE(decoder->query_parameters(sequence).ok());
  }
}

// Two sequences in one pass, one adapted: the other's logits are those it has alone, bit for
// bit; the adapted one's differ from its unadapted twin's.
TEST(QttCpu, AnUnadaptedSequenceInTheBatchIsUntouched) {
  auto decoder = load_tiny("qwen2_bias");
  const ModelConfig& config = decoder->config();
  const std::vector<int32_t> a = random_token_ids(16, config.vocab_size, 1);
  const std::vector<int32_t> b = random_token_ids(12, config.vocab_size, 2);
  const SequenceId adapted = prefilled_sequence(*decoder, a, 13);
  const SequenceId twin = prefilled_sequence(*decoder, a, 13);
  const SequenceId plain = prefilled_sequence(*decoder, b, 9);
  const SequenceId alone = prefilled_sequence(*decoder, b, 9);
  QttOptions options;
  options.steps = 3;
  options.span = 8;
  options.learning_rate = 1e-2f;
  ASSERT_TRUE(decoder->adapt_queries(adapted, std::span(a).first(14), options).ok());

  const std::vector<int32_t> rows = {0, 1, 2};
  std::vector<float> batched, by_itself, adapted_alone, twin_logits;
  const ForwardRequest batch[] = {{adapted, std::span(a).subspan(13, 3), rows},
                                  {plain, std::span(b).subspan(9, 3), rows}};
  ASSERT_TRUE(decoder->forward(batch, batched).ok());
  const ForwardRequest solo{alone, std::span(b).subspan(9, 3), rows};
  ASSERT_TRUE(decoder->forward(std::span(&solo, 1), by_itself).ok());
  const ForwardRequest twin_request{twin, std::span(a).subspan(13, 3), rows};
  ASSERT_TRUE(decoder->forward(std::span(&twin_request, 1), twin_logits).ok());

  const size_t vocab = static_cast<size_t>(config.vocab_size);
  ASSERT_EQ(batched.size(), 6 * vocab);
  EXPECT_TRUE(std::equal(by_itself.begin(), by_itself.end(), batched.begin() + 3 * vocab));
  EXPECT_FALSE(std::equal(twin_logits.begin(), twin_logits.end(), batched.begin()));
}

TEST(QttCpu, AnAdaptationMovesToAnotherSequenceWhole) {
  auto decoder = load_tiny("llama_tied");
  const std::vector<int32_t> tokens = random_token_ids(20, decoder->config().vocab_size, 4);
  const SequenceId first = prefilled_sequence(*decoder, tokens, 17);
  QttOptions options;
  options.steps = 2;
  options.span = 8;
  options.rank = 3;
  ASSERT_TRUE(decoder->adapt_queries(first, std::span(tokens).first(18), options).ok());
  std::shared_ptr<QueryAdaptation> adaptation = decoder->query_adaptation(first);
  ASSERT_NE(adaptation, nullptr);
  EXPECT_EQ(adaptation->rank(), 3);
  const std::vector<int32_t> rows = {0, 1};
  std::vector<float> expected, moved;
  const ForwardRequest request{first, std::span(tokens).subspan(17, 2), rows};
  ASSERT_TRUE(decoder->forward(std::span(&request, 1), expected).ok());
  decoder->release_sequence(first);  // the request keeps the adaptation, as a preempted one does

  const SequenceId second = prefilled_sequence(*decoder, tokens, 17);
  ASSERT_TRUE(decoder->attach_query_adaptation(second, adaptation).ok());
  const ForwardRequest again{second, std::span(tokens).subspan(17, 2), rows};
  ASSERT_TRUE(decoder->forward(std::span(&again, 1), moved).ok());
  EXPECT_EQ(moved, expected);
  ASSERT_TRUE(decoder->attach_query_adaptation(second, nullptr).ok());
  EXPECT_TRUE(decoder->query_parameters(second)->empty());
}

TEST(QttCpu, BadCallsAreRefusedAndChangeNothing) {
  auto decoder = load_tiny("llama_tied");
  const ModelConfig& config = decoder->config();
  const std::vector<int32_t> tokens = random_token_ids(12, config.vocab_size, 8);
  const SequenceId sequence = prefilled_sequence(*decoder, tokens, 10);
  QttOptions options;
  options.steps = 1;
  const auto refused = [&](Expected<QttReport> result, const std::string& says) {
    ASSERT_FALSE(result.ok()) << says;
    EXPECT_NE(result.error().message.find(says), std::string::npos) << result.error().message;
  };
  refused(decoder->adapt_queries(sequence + 100, std::span(tokens).first(10), options), "unknown sequence");
  refused(decoder->adapt_queries(sequence, std::span(tokens).first(12), options), "the context has 12 tokens");
  std::vector<int32_t> outside(tokens.begin(), tokens.begin() + 11);
  outside[3] = static_cast<int32_t>(config.vocab_size);
  refused(decoder->adapt_queries(sequence, outside, options), "outside the vocabulary");
  QttOptions bad = options;
  bad.rank = config.hidden_size + 1;
  refused(decoder->adapt_queries(sequence, std::span(tokens).first(11), bad), "'rank'");
  bad = options;
  bad.learning_rate = -1;
  refused(decoder->adapt_queries(sequence, std::span(tokens).first(11), bad), "'lr'");
  const SequenceId single = prefilled_sequence(*decoder, tokens, 1);
  refused(decoder->adapt_queries(single, std::span(tokens).first(1), options), "no position with a next token");
  EXPECT_TRUE(decoder->query_parameters(sequence)->empty());

  options.rank = 2;
  ASSERT_TRUE(decoder->adapt_queries(sequence, std::span(tokens).first(11), options).ok());
  const std::vector<float> kept = *decoder->query_parameters(sequence);
  options.rank = 0;
  refused(decoder->adapt_queries(sequence, std::span(tokens).first(11), options), "rank 2");
  EXPECT_EQ(*decoder->query_parameters(sequence), kept);
  EXPECT_FALSE(decoder->query_loss(sequence, tokens, 5, 6, nullptr).ok());
  EXPECT_FALSE(decoder->set_query_parameters(sequence, 2, std::vector<float>(5, 0.0f)).ok());
  EXPECT_EQ(*decoder->query_parameters(sequence), kept);
}

TEST(QttFlops, CountTheStepAgainstPrefillAndDecode) {
  ModelConfig config;
  config.num_layers = 2;
  config.hidden_size = 8;
  config.num_heads = 2;
  config.num_kv_heads = 1;
  config.head_dim = 4;
  config.intermediate_size = 16;
  config.vocab_size = 10;
  // Per row and layer: q 2·8·8, o 2·8·8, MLP 6·8·16 = 1024; k and v 4·8·4 = 128 in prefill.
  // Head 2·8·10 = 160. Attention 4·8 per key per layer (forward), 10·8 in a qTTT step.
  EXPECT_DOUBLE_EQ(decode_token_flops(config, 4), 2 * (1024 + 128) + 160 + 2 * 32 * 5);
  EXPECT_DOUBLE_EQ(prefill_flops(config, 3), 3 * 2 * (1024 + 128) + 160 + 2 * 32 * (1 + 2 + 3));
  // A span of 2 rows at positions 4 and 5, full rank: per row forward 2·1024 + 160 + 2·128,
  // backward 2·1024 + 160 + 2·2·128; attention 2 layers · 80 · (5 + 6).
  EXPECT_DOUBLE_EQ(qtt_step_flops(config, 2, 4, 0),
                   2 * (2 * 1024 + 160 + 2 * 128 + 2 * 1024 + 160 + 4 * 128) + 2 * 80 * 11);
}

}  // namespace
}  // namespace draftwise
