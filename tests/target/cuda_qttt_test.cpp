// qTTT on the GPU against the CPU reference (QTTT.md): the span loss and ΔW_Q's gradient,
// full rank and low rank, with and without a q bias; adapted forward passes (prefill, graph
// decode steps, a verification block and its rollback); training steps; what adaptation may
// not change (weights, cached keys and values, other sequences of a batch); greedy
// speculation on an adapted request up to a near-tie. Skips without a GPU.
#include <gtest/gtest.h>

#include <cmath>

#include "draft/early_exit_drafter.h"
#include "draft/ngram_drafter.h"
#include "engine/generation.h"
#include "target/checkpoint.h"
#include "target/cpu_decoder.h"
#include "target/cuda_decoder.h"
#include "tests/support/cuda_test.h"
#include "tests/support/decoder_runs.h"
#include "tests/support/greedy_reference.h"
#include "tests/support/numeric.h"
#include "tests/support/test_paths.h"

namespace draftwise {
namespace {

using testing::relative_l2;

std::unique_ptr<CpuDecoder> load_cpu(const std::string& name) {
  auto checkpoint = Checkpoint::open((testing::fixtures_dir() / "models" / name).string());
  EXPECT_TRUE(checkpoint.ok());
  auto decoder = CpuDecoder::load(*checkpoint, CpuDecoderOptions{2, 0});
  EXPECT_TRUE(decoder.ok());
  return std::move(decoder).value();
}

using testing::prefilled_sequence;
using testing::random_token_ids;

std::vector<float> random_parameters(const ModelConfig& config, int64_t rank, uint64_t seed) {
  return testing::random_qtt_parameters(config, rank, 0.5, 0.1, seed);
}

struct Case {
  const char* model;
  int64_t rank;
};
constexpr Case kCases[] = {{"llama_tied", 0}, {"llama_tied", 3}, {"qwen2_bias", 0}, {"qwen2_bias", 2},
                           {"llama3_rope", 0}};

// The loss within 1e-2 and the gradient within 5e-2 relative L2 of the CPU's (bf16 activations
// and a bf16 logit gradient through every layer).
TEST(CudaQttt, LossAndGradientMatchTheCpu) {
  DW_REQUIRE_GPU();
  for (const Case& c : kCases) {
    SCOPED_TRACE(std::string(c.model) + " rank " + std::to_string(c.rank));
    auto cpu = load_cpu(c.model);
    auto gpu = testing::load_on_gpu(testing::fixtures_dir() / "models" / c.model);
    const ModelConfig& config = cpu->config();
    const std::vector<int32_t> context = random_token_ids(61, config.vocab_size, 17);
    const SequenceId on_cpu = prefilled_sequence(*cpu, context, 60);
    const SequenceId on_gpu = prefilled_sequence(*gpu, context, 60);
    auto plain_cpu = cpu->query_loss(on_cpu, context, 5, 40, nullptr);
    auto plain_gpu = gpu->query_loss(on_gpu, context, 5, 40, nullptr);
    ASSERT_TRUE(plain_cpu.ok() && plain_gpu.ok()) << plain_gpu.error().message;
    EXPECT_NEAR(*plain_gpu, *plain_cpu, 1e-2 * *plain_cpu);

    const std::vector<float> parameters = random_parameters(config, c.rank, 3);
    ASSERT_TRUE(cpu->set_query_parameters(on_cpu, c.rank, parameters).ok());
    ASSERT_TRUE(gpu->set_query_parameters(on_gpu, c.rank, parameters).ok());
    EXPECT_EQ(*gpu->query_parameters(on_gpu), parameters);
    std::vector<float> cpu_gradient, gpu_gradient;
    auto cpu_loss = cpu->query_loss(on_cpu, context, 5, 40, &cpu_gradient);
    auto gpu_loss = gpu->query_loss(on_gpu, context, 5, 40, &gpu_gradient);
    ASSERT_TRUE(cpu_loss.ok() && gpu_loss.ok()) << gpu_loss.error().message;
    const double gradient_error = relative_l2(gpu_gradient, cpu_gradient);
    std::printf("%s rank %ld: loss %.5f (cpu %.5f, unadapted %.5f), gradient relative L2 %.3g\n", c.model,
                static_cast<long>(c.rank), *gpu_loss, *cpu_loss, *plain_cpu, gradient_error);
    EXPECT_NEAR(*gpu_loss, *cpu_loss, 1e-2 * *cpu_loss);
    EXPECT_GT(std::abs(*cpu_loss - *plain_cpu), 0.05) << "the adaptation must matter for the comparison to mean much";
    EXPECT_LE(gradient_error, 5e-2);
  }
}

// Adapted passes of every kind on the GPU against the CPU: a 5-token pass (eager), eight
// one-token steps (graph replays), a 4-token block rolled back to its second token; each
// within the decoder's bf16 bound of 3e-2 relative L2, while adapted and unadapted logits
// differ by far more.
TEST(CudaQttt, AdaptedPassesMatchTheCpu) {
  DW_REQUIRE_GPU();
  for (const Case& c : kCases) {
    SCOPED_TRACE(std::string(c.model) + " rank " + std::to_string(c.rank));
    auto cpu = load_cpu(c.model);
    auto gpu = testing::load_on_gpu(testing::fixtures_dir() / "models" / c.model);
    const ModelConfig& config = cpu->config();
    const std::vector<int32_t> tokens = random_token_ids(48, config.vocab_size, 5);
    const SequenceId on_cpu = prefilled_sequence(*cpu, tokens, 30);
    const SequenceId on_gpu = prefilled_sequence(*gpu, tokens, 30);
    const SequenceId plain = prefilled_sequence(*cpu, tokens, 30);
    const std::vector<float> parameters = random_parameters(config, c.rank, 8);
    ASSERT_TRUE(cpu->set_query_parameters(on_cpu, c.rank, parameters).ok());
    ASSERT_TRUE(gpu->set_query_parameters(on_gpu, c.rank, parameters).ok());
    double worst = 0;
    double effect = INFINITY;
    const auto pass = [&](int64_t from, int64_t size) {
      std::vector<int32_t> rows(static_cast<size_t>(size));
      for (int64_t i = 0; i < size; ++i) rows[static_cast<size_t>(i)] = static_cast<int32_t>(i);
      const std::span<const int32_t> chunk = std::span(tokens).subspan(static_cast<size_t>(from), static_cast<size_t>(size));
      std::vector<float> expected, actual, unadapted;
      const ForwardRequest cpu_request{on_cpu, chunk, rows}, gpu_request{on_gpu, chunk, rows}, plain_request{plain, chunk, rows};
      EXPECT_TRUE(cpu->forward(std::span(&cpu_request, 1), expected).ok());
      EXPECT_TRUE(gpu->forward(std::span(&gpu_request, 1), actual).ok());
      EXPECT_TRUE(cpu->forward(std::span(&plain_request, 1), unadapted).ok());
      worst = std::max(worst, relative_l2(actual, expected));
      effect = std::min(effect, relative_l2(unadapted, expected));
    };
    pass(30, 5);
    for (int64_t i = 35; i < 43; ++i) pass(i, 1);
    pass(43, 4);
    ASSERT_TRUE(cpu->truncate_sequence(on_cpu, 45).ok());
    ASSERT_TRUE(gpu->truncate_sequence(on_gpu, 45).ok());
    ASSERT_TRUE(cpu->truncate_sequence(plain, 45).ok());
    pass(45, 1);
    std::printf("%s rank %ld: worst relative L2 against the CPU %.3g; adapted against unadapted at least %.3g\n",
                c.model, static_cast<long>(c.rank), worst, effect);
    EXPECT_LE(worst, 3e-2);
    EXPECT_GE(effect, 0.1);
  }
}

// Training on the GPU follows the CPU's steps (SGD, whose steps are the gradients themselves:
// Adam's first steps amplify the sign of tiny gradient components).
TEST(CudaQttt, TrainingStepsFollowTheCpu) {
  DW_REQUIRE_GPU();
  for (const int64_t rank : {0, 4}) {
    auto cpu = load_cpu("llama_tied");
    auto gpu = testing::load_on_gpu(testing::fixtures_dir() / "models/llama_tied");
    const std::vector<int32_t> context = random_token_ids(80, cpu->config().vocab_size, 9);
    const SequenceId on_cpu = prefilled_sequence(*cpu, context, 79);
    const SequenceId on_gpu = prefilled_sequence(*gpu, context, 79);
    QttOptions options;
    options.steps = 4;
    options.span = 24;
    options.rank = rank;
    options.optimizer = QttOptimizer::sgd;
    options.learning_rate = 5.0f;
    options.seed = 2;
    auto cpu_report = cpu->adapt_queries(on_cpu, context, options);
    auto gpu_report = gpu->adapt_queries(on_gpu, context, options);
    ASSERT_TRUE(cpu_report.ok() && gpu_report.ok()) << gpu_report.error().message;
    ASSERT_EQ(gpu_report->losses.size(), 4u);
    for (size_t i = 0; i < 4; ++i) EXPECT_NEAR(gpu_report->losses[i], cpu_report->losses[i], 1e-2 * cpu_report->losses[i]);
    const std::vector<float> initial = qtt_initial_parameters(cpu->config(), rank, options.seed);
    std::vector<float> cpu_moved = *cpu->query_parameters(on_cpu), gpu_moved = *gpu->query_parameters(on_gpu);
    for (size_t i = 0; i < initial.size(); ++i) {
      cpu_moved[i] -= initial[i];
      gpu_moved[i] -= initial[i];
    }
    const double error = relative_l2(gpu_moved, cpu_moved);
    std::printf("rank %ld: losses %.4f -> %.4f (cpu %.4f -> %.4f); parameter change relative L2 %.3g\n",
                static_cast<long>(rank), gpu_report->losses.front(), gpu_report->losses.back(),
                cpu_report->losses.front(), cpu_report->losses.back(), error);
    EXPECT_LE(error, 5e-2);
    EXPECT_GT(gpu_report->seconds, 0);
  }
}

TEST(CudaQttt, AdaptationChangesOnlyDeltaWqAndLeavesOtherSequencesAlone) {
  DW_REQUIRE_GPU();
  auto gpu = testing::load_on_gpu(testing::fixtures_dir() / "models/qwen2_bias");
  const ModelConfig& config = gpu->config();
  const std::vector<int32_t> a = random_token_ids(70, config.vocab_size, 1);
  const std::vector<int32_t> b = random_token_ids(40, config.vocab_size, 2);
  const SequenceId adapted = prefilled_sequence(*gpu, a, 66);
  const SequenceId twin = prefilled_sequence(*gpu, a, 66);
  const SequenceId other = prefilled_sequence(*gpu, b, 36);
  const SequenceId other_twin = prefilled_sequence(*gpu, b, 36);
  auto weights = gpu->weights_digest();
  auto cache = gpu->cache_digest(adapted);
  auto other_cache = gpu->cache_digest(other);
  ASSERT_TRUE(weights.ok() && cache.ok() && other_cache.ok());
  QttOptions options;
  options.steps = 3;
  options.span = 32;
  options.learning_rate = 1e-2f;
  ASSERT_TRUE(gpu->adapt_queries(adapted, std::span(a).first(67), options).ok());
  EXPECT_EQ(*gpu->weights_digest(), *weights);
  EXPECT_EQ(*gpu->cache_digest(adapted), *cache);
  EXPECT_EQ(*gpu->cache_digest(other), *other_cache);
  EXPECT_TRUE(gpu->query_parameters(other)->empty());
  EXPECT_FALSE(gpu->query_parameters(adapted)->empty());

  // The same shapes with and without the adapted sequence in the batch: the other sequence's
  // logits are identical bit for bit, in a 1-token step (graph) and a 3-token pass.
  for (const int64_t size : {1, 3}) {
    std::vector<int32_t> rows(static_cast<size_t>(size));
    for (int64_t i = 0; i < size; ++i) rows[static_cast<size_t>(i)] = static_cast<int32_t>(i);
    const int64_t at_a = gpu->sequence_length(adapted);
    const int64_t at_b = gpu->sequence_length(other);
    const auto piece = [&](const std::vector<int32_t>& tokens, int64_t at) {
      return std::span(tokens).subspan(static_cast<size_t>(at), static_cast<size_t>(size));
    };
    std::vector<float> with_adapted, with_twin;
    const ForwardRequest first[] = {{adapted, piece(a, at_a), rows}, {other, piece(b, at_b), rows}};
    const ForwardRequest second[] = {{twin, piece(a, at_a), rows}, {other_twin, piece(b, at_b), rows}};
    ASSERT_TRUE(gpu->forward(first, with_adapted).ok());
    ASSERT_TRUE(gpu->forward(second, with_twin).ok());
    const size_t half = with_adapted.size() / 2;
    EXPECT_TRUE(std::equal(with_adapted.begin() + static_cast<std::ptrdiff_t>(half), with_adapted.end(),
                           with_twin.begin() + static_cast<std::ptrdiff_t>(half)))
        << size << " tokens";
    EXPECT_FALSE(std::equal(with_adapted.begin(), with_adapted.begin() + static_cast<std::ptrdiff_t>(half),
                            with_twin.begin()));
  }
}

// The plain greedy reference of an adapted request, one token a step, with its margins.
testing::GreedyReference adapted_reference(Decoder& decoder, const std::vector<int32_t>& prompt,
                                           const QttOptions& options, int64_t count) {
  testing::GreedyReference reference;
  const SequenceId sequence = prefilled_sequence(decoder, prompt, static_cast<int64_t>(prompt.size()) - 1);
  EXPECT_TRUE(decoder.adapt_queries(sequence, prompt, options).ok());
  std::vector<float> logits;
  const std::vector<int32_t> row = {0};
  std::vector<int32_t> next = {prompt.back()};
  for (int64_t i = 0; i < count; ++i) {
    EXPECT_TRUE(decoder.forward(std::vector<ForwardRequest>{{sequence, next, row}}, logits).ok());
    testing::record_greedy_step(logits, reference);
    next = {reference.tokens.back()};
  }
  decoder.release_sequence(sequence);
  return reference;
}

TEST(CudaQttt, GreedySpeculationOnAnAdaptedRequestEqualsPlainGreedyUpToANearTie) {
  DW_REQUIRE_GPU();
  auto target = testing::load_on_gpu(testing::fixtures_dir() / "models/llama_tied");
  std::vector<std::unique_ptr<Drafter>> drafters;
  drafters.push_back(std::move(NgramDrafter::create(1)).value());
  drafters.push_back(std::move(EarlyExitDrafter::create(*target, 1)).value());
  QttOptions qttt;
  qttt.steps = 4;
  qttt.span = 16;
  qttt.learning_rate = 3e-2f;
  int identical = 0;
  int runs = 0;
  for (int p = 0; p < 3; ++p) {
    std::vector<int32_t> prompt;
    for (int i = 0; i < 40 + 9 * p; ++i) prompt.push_back(static_cast<int32_t>((i % (7 + p)) * 11 + 3 * p + 1));
    const testing::GreedyReference reference = adapted_reference(*target, prompt, qttt, 32);
    for (const std::unique_ptr<Drafter>& drafter : drafters) {
      for (const int k : {3, 5}) {
        SCOPED_TRACE(drafter->name() + " k " + std::to_string(k));
        GenerationOptions options;
        options.max_tokens = 32;
        options.sampling.temperature = 0.0;
        options.qttt = qttt;
        options.drafter = drafter.get();
        options.draft_length = DraftLength::fixed(k);
        const auto speculated = generate(*target, nullptr, prompt, options);
        ASSERT_TRUE(speculated.ok()) << speculated.error().message;
        bool same = false;
        EXPECT_TRUE(testing::equal_up_to_a_near_tie(speculated->token_ids, reference, same));
        identical += same;
        ++runs;
      }
    }
  }
  std::printf("identical to the end: %d of %d runs\n", identical, runs);
}

}  // namespace
}  // namespace draftwise
