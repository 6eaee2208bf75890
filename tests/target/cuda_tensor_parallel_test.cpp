// Tensor parallelism over NCCL on two GPUs: random weights in the Llama-3.2-1B and
// Llama-3.1-8B shapes split over GPUs 0 and 1 (rank 1 a follower on its own thread, with its
// own communicator, exactly as in its own process) against the whole model on GPU 0: logits of
// prefill and decode within bf16 tolerance, greedy generation up to the first near-tie,
// speculation at tp 2 equal to plain decoding at tp 2 up to a near-tie, and a rank that dies
// mid-step ending rank 0's call with an error within the group's timeout. Skips without two
// GPUs.
#include <gtest/gtest.h>

#include <chrono>
#include <future>

#include "draft/ngram_drafter.h"
#include "engine/generation.h"
#include "kernels/cuda/nccl_group.h"
#include "target/cuda_decoder.h"
#include "target/tensor_parallel_decoder.h"
#include "target/tp_control.h"
#include "tests/support/greedy_reference.h"
#include "tests/support/numeric.h"
#include "tests/support/test_paths.h"

namespace draftwise {
namespace {

using testing::relative_l2;

int visible_gpus() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return count;
}

#define DW_REQUIRE_TWO_GPUS()                                                                          \
  if (visible_gpus() < 2)                                                                              \
  GTEST_SKIP() << "tensor parallelism needs two CUDA devices; " << visible_gpus() << " visible (run it " \
               << "with scripts/tp_gpu.sh on a machine with two)"

constexpr std::chrono::milliseconds kTimeout{20000};

ModelConfig shape(const char* file) {
  auto config = load_hf_config((testing::source_dir() / "configs" / file).string());
  EXPECT_TRUE(config.ok());
  return *config;
}

CudaDecoderOptions on_device(int device) {
  CudaDecoderOptions options;
  options.device = device;
  options.context_length = 2048;
  options.kv_cache_memory_share = 0.1;
  return options;
}

// Rank 1's life on its thread: join, build its shard, then `body` (follow_leader, or a death).
using FollowerBody = std::function<Status(Decoder& shard, const ControlConnection& leader)>;

struct TwoRanks {
  std::unique_ptr<TensorParallelDecoder> decoder;
  std::future<Status> follower;
};

Expected<TwoRanks> start_two_ranks(const ModelConfig& config, FollowerBody body) {
  DW_ASSIGN_OR_RETURN(const uint16_t port, free_local_port());
  DW_ASSIGN_OR_RETURN(const cuda::NcclUniqueIdBytes id, cuda::NcclGroup::unique_id());
  RendezvousOptions rendezvous_options;
  rendezvous_options.address = {"127.0.0.1", port};
  rendezvous_options.size = 2;
  rendezvous_options.fingerprint = "test";
  rendezvous_options.timeout = kTimeout;
  TwoRanks ranks;
  ranks.follower = std::async(std::launch::async, [=]() -> Status {
    RendezvousOptions mine = rendezvous_options;
    mine.rank = 1;
    DW_ASSIGN_OR_RETURN(RendezvousResult formed, rendezvous(mine, {}));
    cuda::NcclUniqueIdBytes shared{};
    std::copy(formed.unique_id.begin(), formed.unique_id.end(), reinterpret_cast<uint8_t*>(shared.data()));
    const ControlConnection& leader = formed.peers.front();
    DW_ASSIGN_OR_RETURN(std::unique_ptr<cuda::NcclGroup> group,
                        cuda::NcclGroup::create(shared, 1, 2, 1, kTimeout, [&leader]() -> Status {
                          if (!leader.open()) return make_error("rank 0 is gone");
                          return {};
                        }));
    CudaDecoderOptions options = on_device(1);
    options.tensor_parallel = std::move(group);
    DW_ASSIGN_OR_RETURN(std::unique_ptr<CudaDecoder> shard, CudaDecoder::create_random(config, 7, options));
    const Status ended = body(*shard, leader);
    formed.peers.clear();  // the connection closes first, as when a process dies, then the shard goes
    return ended;
  });
  rendezvous_options.rank = 0;
  DW_ASSIGN_OR_RETURN(RendezvousResult formed,
                      rendezvous(rendezvous_options, {reinterpret_cast<const uint8_t*>(id.data()), id.size()}));
  auto peers = std::make_shared<ControlPeers>(std::move(formed.peers));
  DW_ASSIGN_OR_RETURN(std::unique_ptr<cuda::NcclGroup> group,
                      cuda::NcclGroup::create(id, 0, 2, 0, kTimeout, [peers] { return peers->alive(); }));
  CudaDecoderOptions options = on_device(0);
  options.tensor_parallel = std::move(group);
  DW_ASSIGN_OR_RETURN(std::unique_ptr<CudaDecoder> shard, CudaDecoder::create_random(config, 7, options));
  ranks.decoder = std::make_unique<TensorParallelDecoder>(std::move(shard), peers, 2);
  return ranks;
}

std::vector<int32_t> tokens_of(int64_t count, int64_t vocab, uint32_t seed) {
  std::vector<int32_t> tokens(static_cast<size_t>(count));
  uint32_t state = seed;
  for (int32_t& token : tokens) {
    state = state * 1664525u + 1013904223u;
    token = static_cast<int32_t>(state % static_cast<uint32_t>(vocab));
  }
  return tokens;
}

// Prefill of 64 tokens (every row's logits), then 8 decode steps, on `decoder`.
std::vector<std::vector<float>> pass_logits(Decoder& decoder, const std::vector<int32_t>& tokens) {
  std::vector<std::vector<float>> all;
  const SequenceId sequence = decoder.create_sequence();
  std::vector<int32_t> rows(64);
  for (int32_t i = 0; i < 64; ++i) rows[static_cast<size_t>(i)] = i;
  std::vector<float> logits;
  const ForwardRequest prefill{sequence, std::span(tokens).first(64), rows};
  EXPECT_TRUE(decoder.forward(std::span(&prefill, 1), logits).ok());
  all.push_back(logits);
  for (size_t t = 64; t < 72; ++t) {
    const ForwardRequest step{sequence, std::span(tokens).subspan(t, 1), std::span(rows).first(1)};
    const Status ran = decoder.forward(std::span(&step, 1), logits);
    EXPECT_TRUE(ran.ok()) << ran.error().message;
    all.push_back(logits);
  }
  decoder.release_sequence(sequence);
  return all;
}

class TensorParallelCuda : public ::testing::TestWithParam<const char*> {};

TEST_P(TensorParallelCuda, TwoRanksMatchOneGpuAndSpeculateLosslessly) {
  DW_REQUIRE_TWO_GPUS();
  const ModelConfig config = shape(GetParam());
  auto whole = CudaDecoder::create_random(config, 7, on_device(0));
  ASSERT_TRUE(whole.ok()) << whole.error().message;
  auto ranks = start_two_ranks(config, [](Decoder& shard, const ControlConnection& leader) {
    return follow_leader(shard, leader);
  });
  ASSERT_TRUE(ranks.ok()) << ranks.error().message;
  TensorParallelDecoder& split = *ranks->decoder;
  EXPECT_EQ(split.config().vocab_size, config.vocab_size);

  const std::vector<int32_t> tokens = tokens_of(72, config.vocab_size, 11);
  const auto expected = pass_logits(**whole, tokens);
  const auto actual = pass_logits(split, tokens);
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t i = 0; i < actual.size(); ++i) {
    const double error = relative_l2(actual[i], expected[i]);
    std::printf("%s %s: relative L2 %.3g\n", GetParam(), i == 0 ? "prefill" : "decode step", error);
    EXPECT_LE(error, 1e-2) << (i == 0 ? "prefill" : "decode step " + std::to_string(i));
  }

  // Greedy at tp 2 against tp 1, and speculation at tp 2 against plain greedy at tp 2, each up
  // to the first near-tie (DESIGN.md, Numerics).
  const std::vector<int32_t> prompt(tokens.begin(), tokens.begin() + 24);
  const testing::GreedyReference one_gpu = testing::greedy_reference(**whole, prompt, 32);
  const testing::GreedyReference two_gpus = testing::greedy_reference(split, prompt, 32);
  bool identical = false;
  EXPECT_TRUE(testing::equal_up_to_a_near_tie(two_gpus.tokens, one_gpu, identical));
  std::printf("%s: greedy at tp 2 %s tp 1's\n", GetParam(), identical ? "identical to" : "equal up to a near-tie with");
  auto drafter = std::move(NgramDrafter::create(2)).value();
  GenerationOptions options;
  options.max_tokens = 32;
  options.sampling.temperature = 0.0;
  options.drafter = drafter.get();
  options.draft_length = DraftLength::fixed(4);
  const auto speculated = generate(split, nullptr, prompt, options);
  ASSERT_TRUE(speculated.ok()) << speculated.error().message;
  EXPECT_TRUE(testing::equal_up_to_a_near_tie(speculated->token_ids, two_gpus, identical));

  ranks->decoder.reset();
  ASSERT_EQ(ranks->follower.wait_for(std::chrono::seconds(30)), std::future_status::ready);
  const Status followed = ranks->follower.get();
  EXPECT_TRUE(followed.ok()) << followed.error().message;
}

INSTANTIATE_TEST_SUITE_P(Shapes, TensorParallelCuda, ::testing::Values("llama-3.2-1b.json", "llama-3.1-8b.json"),
                         [](const auto& info) { return std::string(info.param).substr(0, 11) == "llama-3.2-1" ? "Llama32_1B" : "Llama31_8B"; });

// Rank 1 takes the forward pass's command and dies instead of joining its collectives: rank 0's
// pass waits inside NCCL, sees the closed connection, aborts the group and fails with the
// rank's name, well inside the timeout; every later call fails at once.
TEST(TensorParallelCudaFailure, ARankThatDiesMidStepEndsRankZerosCallWithAnError) {
  DW_REQUIRE_TWO_GPUS();
  const ModelConfig config = shape("llama-3.2-1b.json");
  auto ranks = start_two_ranks(config, [](Decoder& shard, const ControlConnection& leader) -> Status {
    for (int received = 0; received < 2; ++received) {
      DW_ASSIGN_OR_RETURN(const std::vector<uint8_t> message, leader.receive(std::nullopt));
      DW_ASSIGN_OR_RETURN(const ControlCommand command, decode_command(message));
      if (command.op == ControlOp::kCreate) (void)shard.create_sequence();
    }
    return make_error("rank 1 died");  // its shard, group and connection go with it
  });
  ASSERT_TRUE(ranks.ok()) << ranks.error().message;
  const SequenceId sequence = ranks->decoder->create_sequence();
  const std::vector<int32_t> prompt = tokens_of(16, config.vocab_size, 3);
  const std::vector<int32_t> rows = {15};
  std::vector<int32_t> picked;
  const ForwardRequest request{sequence, prompt, rows};
  const auto start = std::chrono::steady_clock::now();
  const Status failed = ranks->decoder->forward_greedy(std::span(&request, 1), picked);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_FALSE(failed.ok());
  std::printf("rank 0 failed after %.2f s: %s\n", seconds, failed.error().message.c_str());
  EXPECT_LT(seconds, 25.0);
  EXPECT_FALSE(ranks->decoder->forward_greedy(std::span(&request, 1), picked).ok());
}

TEST(TensorParallelCudaFailure, TheDefaultModelDoesNotSplitOverTwo) {
  // No GPU needed to refuse: the shape is checked before any device is touched.
  const Expected<ModelConfig> config = load_hf_config((testing::source_dir() / "configs/smollm2-135m.json").string());
  ASSERT_TRUE(config.ok());
  const Status refused = check_tensor_parallel(*config, 2);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message.find("attention heads (9) to divide by 2"), std::string::npos)
      << refused.error().message;
}

}  // namespace
}  // namespace draftwise
