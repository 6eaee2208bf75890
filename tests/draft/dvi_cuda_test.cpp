// DVI on the GPU against the CPU reference: the draft head with an adapter (logits, the exit
// hidden states, the greedy pick, a new adapter version replacing the old), the trainer's loss
// and gradient (the CPU trainer given the same bf16 LM head), and greedy output with learning
// on equal to plain greedy output up to a near-tie on the default model. Skips without a GPU.
#include <gtest/gtest.h>

#include <cmath>

#include "draft/dvi_learning.h"
#include "draft/dvi_loss_cuda.h"
#include "draft/early_exit_drafter.h"
#include "engine/generation.h"
#include "engine/tokenizer/tokenizer_loader.h"
#include "kernels/half.h"
#include "kernels/random.h"
#include "target/cpu_decoder.h"
#include "tests/support/cuda_test.h"
#include "tests/support/greedy_reference.h"
#include "tests/support/numeric.h"
#include "tests/support/test_paths.h"

namespace draftwise {
namespace {

float normal(Rng& rng) {
  const double u = 1.0 - rng.uniform();
  return static_cast<float>(std::sqrt(-2.0 * std::log(u)) * std::cos(2.0 * M_PI * rng.uniform()));
}

std::unique_ptr<CpuDecoder> load_on_cpu(const std::filesystem::path& path) {
  auto checkpoint = Checkpoint::open(path.string());
  EXPECT_TRUE(checkpoint.ok());
  auto decoder = CpuDecoder::load(*checkpoint, CpuDecoderOptions{2, 0});
  EXPECT_TRUE(decoder.ok());
  return std::move(decoder).value();
}

// An adapter far from neutral: gain, A, B and the lens (when it has one) all random.
DraftAdapter random_adapter(int64_t hidden, int64_t vocab, int64_t rank, uint64_t seed, bool lens = true) {
  Rng rng(seed);
  std::vector<float> gain;
  for (int64_t k = 0; k < hidden; ++k) gain.push_back(1.0f + 0.2f * normal(rng));
  DraftAdapter adapter = DraftAdapter::initial({hidden, vocab, rank, 8.0f, lens}, gain, seed).value();
  for (float& b : adapter.b) b = 0.3f * normal(rng);
  const float spread = 0.3f / std::sqrt(static_cast<float>(hidden));  // M h about 0.3 |h|
  for (float& m : adapter.lens) m = spread * normal(rng);
  return adapter.with_new_version();
}

TEST(DviCuda, DraftHeadWithAnAdapterMatchesTheCpu) {
  DW_REQUIRE_GPU();
  const auto fixture = testing::fixtures_dir() / "models/llama_tied";
  auto cpu = load_on_cpu(fixture);
  auto gpu = testing::load_on_gpu(fixture);
  const int64_t hidden = cpu->config().hidden_size;
  const int64_t vocab = cpu->config().vocab_size;
  const std::vector<int32_t> prompt = {1, 40, 41, 42, 43, 44};
  const std::vector<int32_t> none;
  const std::vector<int32_t> first = {0};
  const std::vector<int32_t> last = {prompt.back()};
  const std::vector<int32_t> head_tokens(prompt.begin(), prompt.end() - 1);
  // The second adapter (no lens) must replace the first (with one) on the GPU, and the third
  // (a lens again) the second.
  for (const uint64_t seed : {1u, 2u, 3u}) {
    SCOPED_TRACE(seed);
    const DraftAdapter adapter = random_adapter(hidden, vocab, 4, seed, seed != 2);
    const LowRankAdapter low_rank = adapter.low_rank();
    std::vector<float> cpu_hidden, gpu_hidden, cpu_logits, gpu_logits, ignored;
    const DraftHead cpu_head{1, adapter.gain, &low_rank, &cpu_hidden};
    const DraftHead gpu_head{1, adapter.gain, &low_rank, &gpu_hidden};
    const SequenceId c = cpu->create_sequence();
    const SequenceId g = gpu->create_sequence();
    ASSERT_TRUE(cpu->forward(std::vector<ForwardRequest>{{c, head_tokens, none}}, ignored).ok());
    ASSERT_TRUE(gpu->forward(std::vector<ForwardRequest>{{g, head_tokens, none}}, ignored).ok());
    ASSERT_TRUE(
        cpu->forward_draft(std::vector<ForwardRequest>{{c, last, first}}, cpu_head, cpu_logits)
            .ok());
    ASSERT_TRUE(
        gpu->forward_draft(std::vector<ForwardRequest>{{g, last, first}}, gpu_head, gpu_logits)
            .ok());
    ASSERT_EQ(gpu_logits.size(), static_cast<size_t>(vocab));
    ASSERT_EQ(gpu_hidden.size(), static_cast<size_t>(hidden));
    EXPECT_LE(testing::relative_l2(gpu_hidden, cpu_hidden), 3e-2);  // bf16 activations
    EXPECT_LE(testing::relative_l2(gpu_logits, cpu_logits), 3e-2);
    // Without the adapter the logits differ: the adapter term is there.
    std::vector<float> plain;
    const SequenceId p = cpu->create_sequence();
    ASSERT_TRUE(cpu->forward(std::vector<ForwardRequest>{{p, head_tokens, none}}, ignored).ok());
    ASSERT_TRUE(cpu->forward_draft(std::vector<ForwardRequest>{{p, last, first}},
                                   DraftHead{1, adapter.gain}, plain)
                    .ok());
    EXPECT_GT(testing::relative_l2(plain, cpu_logits), 0.1);
    // The greedy draft step picks the argmax of the adapted logits.
    const SequenceId e = gpu->create_sequence();
    ASSERT_TRUE(gpu->forward(std::vector<ForwardRequest>{{e, head_tokens, none}}, ignored).ok());
    std::vector<int32_t> picked;
    ASSERT_TRUE(
        gpu->forward_draft_greedy(std::vector<ForwardRequest>{{e, last, first}}, gpu_head, picked)
            .ok());
    EXPECT_EQ(picked, argmax_rows(gpu_logits, vocab));
    for (const SequenceId id : {g, e}) gpu->release_sequence(id);
    for (const SequenceId id : {c, p}) cpu->release_sequence(id);
  }
}

// A draft model's full-depth head (exit layer = its layer count) on the GPU against the CPU:
// the logits and final hidden states of the head's pass, nothing left pending, and the cache
// it leaves read by the next plain pass.
TEST(DviCuda, FullDepthHeadMatchesTheCpu) {
  DW_REQUIRE_GPU();
  const auto fixture = testing::fixtures_dir() / "models/qwen2_bias";
  auto cpu = load_on_cpu(fixture);
  auto gpu = testing::load_on_gpu(fixture);
  const int64_t hidden = cpu->config().hidden_size;
  const int64_t vocab = cpu->config().vocab_size;
  const int layers = static_cast<int>(cpu->config().num_layers);
  const DraftAdapter adapter = random_adapter(hidden, vocab, 4, 7);
  const LowRankAdapter low_rank = adapter.low_rank();
  const std::vector<int32_t> prompt = {1, 40, 41, 42, 43, 44};
  const std::vector<int32_t> none;
  const std::vector<int32_t> first = {0};
  const std::vector<int32_t> head_tokens(prompt.begin(), prompt.end() - 1);
  const std::vector<int32_t> last = {prompt.back()};
  std::vector<float> cpu_hidden, gpu_hidden, cpu_logits, gpu_logits, ignored;
  const SequenceId c = cpu->create_sequence();
  const SequenceId g = gpu->create_sequence();
  ASSERT_TRUE(cpu->forward(std::vector<ForwardRequest>{{c, head_tokens, none}}, ignored).ok());
  ASSERT_TRUE(gpu->forward(std::vector<ForwardRequest>{{g, head_tokens, none}}, ignored).ok());
  ASSERT_TRUE(cpu->forward_draft(std::vector<ForwardRequest>{{c, last, first}},
                                 DraftHead{layers, adapter.gain, &low_rank, &cpu_hidden}, cpu_logits)
                  .ok());
  ASSERT_TRUE(gpu->forward_draft(std::vector<ForwardRequest>{{g, last, first}},
                                 DraftHead{layers, adapter.gain, &low_rank, &gpu_hidden}, gpu_logits)
                  .ok());
  ASSERT_EQ(gpu_logits.size(), static_cast<size_t>(vocab));
  EXPECT_LE(testing::relative_l2(gpu_hidden, cpu_hidden), 3e-2);
  EXPECT_LE(testing::relative_l2(gpu_logits, cpu_logits), 3e-2);
  EXPECT_EQ(gpu->sequence_length(g), static_cast<int64_t>(prompt.size()));
  EXPECT_EQ(gpu->pending_tokens(g), 0);
  const std::vector<int32_t> next = {45};
  std::vector<float> cpu_next, gpu_next;
  ASSERT_TRUE(cpu->forward(std::vector<ForwardRequest>{{c, next, first}}, cpu_next).ok());
  ASSERT_TRUE(gpu->forward(std::vector<ForwardRequest>{{g, next, first}}, gpu_next).ok());
  EXPECT_LE(testing::relative_l2(gpu_next, cpu_next), 3e-2);
  // The greedy pass through the head picks the argmax of its logits.
  const SequenceId e = gpu->create_sequence();
  ASSERT_TRUE(gpu->forward(std::vector<ForwardRequest>{{e, head_tokens, none}}, ignored).ok());
  std::vector<int32_t> picked;
  ASSERT_TRUE(gpu->forward_draft_greedy(std::vector<ForwardRequest>{{e, last, first}},
                                        DraftHead{layers, adapter.gain, &low_rank, nullptr}, picked)
                  .ok());
  EXPECT_EQ(picked, argmax_rows(gpu_logits, vocab));
}

// The GPU trainer against the CPU trainer on the same LM head (the GPU's bf16 values).
void expect_trainers_agree(const std::filesystem::path& model, int64_t rank, int64_t top_k) {
  auto cpu = load_on_cpu(model);
  auto gpu = testing::load_on_gpu(model);
  const int64_t hidden = cpu->config().hidden_size;
  const int64_t vocab = cpu->config().vocab_size;
  std::vector<float> head_bf16(cpu->lm_head().begin(), cpu->lm_head().end());
  for (float& w : head_bf16) w = bf16_to_f32(f32_to_bf16(w));
  cpu::ThreadPool pool(2);
  CpuDraftHeadTrainer cpu_trainer(head_bf16, hidden, static_cast<float>(cpu->config().rms_norm_eps),
                                  pool);
  auto gpu_trainer = CudaDraftHeadTrainer::create(*gpu);
  ASSERT_TRUE(gpu_trainer.ok()) << gpu_trainer.error().message;
  const DraftAdapter adapter = random_adapter(hidden, vocab, rank, 5);
  Rng rng(6);
  std::vector<DraftRecord> records;
  for (int i = 0; i < 24; ++i) {
    DraftRecord record;
    for (int64_t k = 0; k < hidden; ++k) record.hidden.push_back(3.0f * normal(rng));
    record.token = static_cast<int32_t>(rng.below(static_cast<uint64_t>(vocab)));
    record.draft_log_probability = -3.0f - static_cast<float>(rng.uniform());
    std::vector<float> teacher;
    for (int64_t v = 0; v < vocab; ++v) teacher.push_back(2.0f * normal(rng));
    keep_top_logits(teacher, top_k, record);
    record.reward = i % 4 == 3 ? 0.0f : 1.0f;
    record.position = i % 4;
    record.serial = (i * 7) % 24;  // a third of them too old for the policy gradient
    records.push_back(std::move(record));
  }
  std::vector<const DraftRecord*> batch;
  for (const DraftRecord& record : records) batch.push_back(&record);
  const DviLossWeights weights{0.6f, 0.5f, 0.8f, 1.3f, 0.4f, 2.0f, 8};
  DviGradients on_cpu, on_gpu;
  const auto cpu_terms = cpu_trainer.loss_and_gradients(batch, adapter, weights, on_cpu);
  const auto gpu_terms = (*gpu_trainer)->loss_and_gradients(batch, adapter, weights, on_gpu);
  ASSERT_TRUE(cpu_terms.ok() && gpu_terms.ok())
      << (gpu_terms.ok() ? "" : gpu_terms.error().message);
  EXPECT_NEAR(gpu_terms->distillation, cpu_terms->distillation,
              2e-2 * std::fabs(cpu_terms->distillation) + 1e-4);
  EXPECT_NEAR(gpu_terms->cross_entropy, cpu_terms->cross_entropy,
              2e-2 * std::fabs(cpu_terms->cross_entropy) + 1e-4);
  EXPECT_NEAR(gpu_terms->policy_gradient, cpu_terms->policy_gradient,
              2e-2 * std::fabs(cpu_terms->policy_gradient) + 1e-4);
  EXPECT_LE(testing::relative_l2(on_gpu.gain, on_cpu.gain), 3e-2);
  EXPECT_LE(testing::relative_l2(on_gpu.a, on_cpu.a), 3e-2);
  EXPECT_LE(testing::relative_l2(on_gpu.b, on_cpu.b), 3e-2);
  ASSERT_EQ(on_gpu.lens.size(), static_cast<size_t>(hidden * hidden));
  EXPECT_LE(testing::relative_l2(on_gpu.lens, on_cpu.lens), 3e-2);
  std::printf(
      "GPU trainer against the CPU trainer (vocabulary %lld): relative L2 gain %.2e, A %.2e, B "
      "%.2e, M %.2e\n",
      static_cast<long long>(vocab), testing::relative_l2(on_gpu.gain, on_cpu.gain),
      testing::relative_l2(on_gpu.a, on_cpu.a), testing::relative_l2(on_gpu.b, on_cpu.b),
      testing::relative_l2(on_gpu.lens, on_cpu.lens));
}

TEST(DviCuda, TrainerMatchesTheCpuTrainer) {
  DW_REQUIRE_GPU();
  expect_trainers_agree(testing::fixtures_dir() / "models/llama_tied", 4, 16);
}

TEST(DviCuda, TrainerMatchesTheCpuTrainerOnTheDefaultModel) {
  DW_REQUIRE_GPU();
  DW_REQUIRE_DEFAULT_MODEL();
  expect_trainers_agree(testing::default_model_path(), 16, 64);
}

// Learning changes only the drafter: on the default model, greedy output with a learning
// self:8 drafter equals plain greedy output up to a near-tie, and the learner did update.
TEST(DviCuda, DefaultModelLearningKeepsGreedyOutputUpToANearTie) {
  DW_REQUIRE_GPU();
  DW_REQUIRE_DEFAULT_MODEL();
  auto checkpoint = Checkpoint::open(testing::default_model_path().string());
  auto tokenizer = load_tokenizer(*checkpoint);
  ASSERT_TRUE(tokenizer.ok() && tokenizer->has_value());
  auto target = testing::load_on_gpu(testing::default_model_path());
  auto drafter = std::move(EarlyExitDrafter::create(*target, 8)).value();
  LearnerOptions options;
  options.batch_size = 32;
  options.update_interval = 4;
  options.time_share = 1.0f;
  auto trainer = CudaDraftHeadTrainer::create(*target);
  ASSERT_TRUE(trainer.ok());
  auto learning =
      make_draft_learning(*target, LearnScope::global, options, std::nullopt, std::move(*trainer));
  ASSERT_TRUE(learning.ok()) << learning.error().message;
  drafter->set_learning(std::move(*learning));
  const std::vector<std::vector<int32_t>> prompts = testing::short_dev_prompts(**tokenizer, 20);
  int identical_prompts = 0;
  for (const std::vector<int32_t>& prompt : prompts) {
    const testing::GreedyReference reference = testing::greedy_reference(*target, prompt, 64);
    GenerationOptions generation;
    generation.max_tokens = 64;
    generation.sampling.temperature = 0.0;
    generation.drafter = drafter.get();
    generation.draft_length = DraftLength::fixed(4);
    const auto result = generate(*target, nullptr, prompt, generation);
    ASSERT_TRUE(result.ok()) << result.error().message;
    bool identical = false;
    EXPECT_TRUE(testing::equal_up_to_a_near_tie(result->token_ids, reference, identical));
    identical_prompts += identical;
  }
  const LearnerStats stats = drafter->learning()->stats();
  EXPECT_GT(stats.updates, 10);
  EXPECT_EQ(stats.skipped, 0);
  std::printf(
      "learning on the GPU: %d of %zu prompts identical to plain greedy to the end; %lld updates "
      "in %.2f s\n",
      identical_prompts, prompts.size(), static_cast<long long>(stats.updates), stats.seconds);
}

}  // namespace
}  // namespace draftwise
