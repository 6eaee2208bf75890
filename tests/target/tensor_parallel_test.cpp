// Tensor parallelism on the CPU: the sharding plan (which slice of every tensor a rank holds,
// the shard's own shapes, the refusal of models that do not split), the TCP rendezvous and
// its deadlines, the control protocol, and a TensorParallelDecoder whose follower, a replica
// on a thread, makes every call rank 0 makes and stops when rank 0 does or dies. The NCCL
// collectives need two GPUs (tests/target/cuda_tensor_parallel_test.cpp).
#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <random>
#include <thread>

#include "target/cpu_decoder.h"
#include "target/random_weights.h"
#include "target/tensor_parallel.h"
#include "target/tensor_parallel_decoder.h"
#include "target/tp_control.h"

namespace draftwise {
namespace {

ModelConfig llama_shape(int64_t heads, int64_t kv_heads, int64_t ffn, int64_t vocab) {
  ModelConfig config;
  config.vocab_size = vocab;
  config.hidden_size = 64;
  config.intermediate_size = ffn;
  config.num_layers = 2;
  config.num_heads = heads;
  config.num_kv_heads = kv_heads;
  config.head_dim = 8;
  config.max_position_embeddings = 64;
  return config;
}

TEST(TensorParallelPlan, VocabularyShardsCoverTheVocabularyOnceInRankOrder) {
  for (const int64_t vocab : {1, 7, 64, 49152, 128256, 151655}) {
    for (const int size : {1, 2, 3, 4, 8}) {
      if (vocab < size) continue;
      int64_t next = 0;
      for (int rank = 0; rank < size; ++rank) {
        const VocabShard shard = vocab_shard(vocab, {rank, size});
        EXPECT_EQ(shard.first, next);
        EXPECT_LE(shard.count, shard.stride);
        next = shard.first + shard.count;
      }
      EXPECT_EQ(next, vocab) << vocab << " over " << size;
    }
  }
}

TEST(TensorParallelPlan, AModelWhoseHeadsDoNotDivideIsRefusedByName) {
  // The default model's shape: 9 heads, 3 KV heads, 1536 MLP rows.
  const ModelConfig smollm = llama_shape(9, 3, 1536, 49152);
  const Status two = check_tensor_parallel(smollm, 2);
  ASSERT_FALSE(two.ok());
  EXPECT_NE(two.error().message.find("attention heads (9) to divide by 2"), std::string::npos) << two.error().message;
  EXPECT_NE(two.error().message.find("splits over 1, 3"), std::string::npos) << two.error().message;
  EXPECT_TRUE(check_tensor_parallel(smollm, 3).ok());
  const Status kv = check_tensor_parallel(llama_shape(32, 8, 8192, 128256), 16);
  ASSERT_FALSE(kv.ok());
  EXPECT_NE(kv.error().message.find("key/value heads (8)"), std::string::npos) << kv.error().message;
  EXPECT_TRUE(check_tensor_parallel(llama_shape(32, 8, 8192, 128256), 2).ok());
  EXPECT_FALSE(check_tensor_parallel(llama_shape(32, 8, 8192, 128256), 0).ok());
  ModelConfig ttt = llama_shape(4, 4, 64, 64);
  ttt.architecture = Architecture::ttt;
  EXPECT_FALSE(check_tensor_parallel(ttt, 2).ok());
}

// What the CUDA shard loads: decoder_tensor_specs of the shard's config, in order, is exactly
// shard_spec of the full model's specs; and the ranks' slices put back together are the full
// tensors (rows for column-parallel layers and the vocabulary, columns for row-parallel ones,
// the row-parallel bias on rank 0 alone, norms whole on every rank).
TEST(TensorParallelPlan, TheRanksSlicesReassembleEveryTensor) {
  ModelConfig config = llama_shape(4, 2, 12, 11);  // 11: the vocabulary does not divide by 2
  config.attention_qkv_bias = true;
  config.attention_out_bias = true;
  const int size = 2;
  const WeightLoader full = random_weight_loader(5);
  std::vector<WeightLoader> shards;
  for (int rank = 0; rank < size; ++rank) shards.push_back(sharded_weight_loader(full, config, {rank, size}));
  for (int rank = 0; rank < size; ++rank) {
    const std::vector<DecoderTensorSpec> own = decoder_tensor_specs(shard_config(config, {rank, size}));
    const std::vector<DecoderTensorSpec> all = decoder_tensor_specs(config);
    ASSERT_EQ(own.size(), all.size());
    for (size_t i = 0; i < all.size(); ++i) {
      const DecoderTensorSpec shard = shard_spec(all[i], config, {rank, size});
      EXPECT_EQ(own[i].name, shard.name);
      EXPECT_EQ(own[i].shape, shard.shape) << shard.name;
    }
  }
  for (const DecoderTensorSpec& spec : decoder_tensor_specs(config)) {
    SCOPED_TRACE(spec.name);
    const std::vector<float> whole = *full(spec);
    const int64_t rows = spec.shape[0];
    const int64_t cols = spec.shape.size() > 1 ? spec.shape[1] : 1;
    std::vector<float> rebuilt(whole.size(), 0.0f);
    for (int rank = 0; rank < size; ++rank) {
      const DecoderTensorSpec shard = shard_spec(spec, config, {rank, size});
      const Expected<std::vector<float>> values = shards[static_cast<size_t>(rank)](shard);
      ASSERT_TRUE(values.ok()) << values.error().message;
      const TensorSlice slice = tensor_slice(spec, config, {rank, size});
      ASSERT_EQ(static_cast<int64_t>(values->size()), slice.row_count * slice.col_count);
      const bool replicated = slice.row_count == rows && slice.col_count == cols && !slice.zero;
      for (int64_t r = 0; r < slice.row_count; ++r) {
        for (int64_t c = 0; c < slice.col_count; ++c) {
          const float value = (*values)[static_cast<size_t>(r * slice.col_count + c)];
          float& target = rebuilt[static_cast<size_t>((slice.row_first + r) * cols + slice.col_first + c)];
          if (replicated) {
            EXPECT_EQ(value, whole[static_cast<size_t>(r * cols + c)]);
            target = value;
          } else {
            target += value;  // disjoint slices, or zeros on the ranks without the bias
          }
        }
      }
    }
    EXPECT_EQ(rebuilt, whole);
  }
}

TEST(TensorParallelControl, RendezvousAddressesAreCheckedByName) {
  EXPECT_TRUE(parse_rendezvous_address("10.0.0.1:29500").ok());
  EXPECT_EQ(parse_rendezvous_address("node-7:80")->host, "node-7");
  for (const char* bad : {"", "host", ":29500", "host:", "host:0", "host:65536", "host:12x", "host:-1"}) {
    const auto parsed = parse_rendezvous_address(bad);
    ASSERT_FALSE(parsed.ok()) << bad;
    EXPECT_NE(parsed.error().message.find("--rendezvous"), std::string::npos);
  }
}

RendezvousOptions options_for(uint16_t port, int rank, int size, std::chrono::milliseconds timeout,
                              std::string fingerprint = "model") {
  RendezvousOptions options;
  options.address = RendezvousAddress{"127.0.0.1", port};
  options.rank = rank;
  options.size = size;
  options.fingerprint = std::move(fingerprint);
  options.timeout = timeout;
  return options;
}

TEST(TensorParallelControl, ThreeRanksFormAGroupAndAllGetRankZerosId) {
  const uint16_t port = *free_local_port();
  const std::vector<uint8_t> id = {1, 2, 3, 250, 0, 7};
  std::vector<std::future<Expected<RendezvousResult>>> followers;
  // The followers may start first: they retry until rank 0 listens.
  for (int rank = 2; rank >= 1; --rank) {
    followers.push_back(std::async(std::launch::async, [=] {
      return rendezvous(options_for(port, rank, 3, std::chrono::milliseconds(10000)), {});
    }));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  Expected<RendezvousResult> leader = rendezvous(options_for(port, 0, 3, std::chrono::milliseconds(10000)), id);
  ASSERT_TRUE(leader.ok()) << leader.error().message;
  ASSERT_EQ(leader->peers.size(), 2u);
  EXPECT_EQ(leader->peers[0].peer_rank(), 1);
  EXPECT_EQ(leader->peers[1].peer_rank(), 2);
  for (auto& follower : followers) {
    Expected<RendezvousResult> joined = follower.get();
    ASSERT_TRUE(joined.ok()) << joined.error().message;
    EXPECT_EQ(joined->unique_id, id);
    ASSERT_EQ(joined->peers.size(), 1u);
  }
  // The connections stay open for the control messages, both ways.
  const std::vector<uint8_t> hello = {42};
  ASSERT_TRUE(leader->peers[0].send(hello).ok());
}

TEST(TensorParallelControl, ARankThatNeverJoinsEndsTheRendezvousInBoundedTimeNamingIt) {
  const uint16_t port = *free_local_port();
  auto follower = std::async(std::launch::async, [=] {
    return rendezvous(options_for(port, 1, 3, std::chrono::milliseconds(5000)), {});
  });
  const auto start = std::chrono::steady_clock::now();
  Expected<RendezvousResult> leader = rendezvous(options_for(port, 0, 3, std::chrono::milliseconds(700)), {{9}});
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_FALSE(leader.ok());
  EXPECT_NE(leader.error().message.find("rank(s) 2 of 3 never joined"), std::string::npos) << leader.error().message;
  EXPECT_LT(seconds, 5.0);
  // The rank that did join is told why.
  Expected<RendezvousResult> joined = follower.get();
  ASSERT_FALSE(joined.ok());
  EXPECT_NE(joined.error().message.find("never joined"), std::string::npos) << joined.error().message;
}

TEST(TensorParallelControl, AFollowerWithoutALeaderGivesUpInBoundedTime) {
  const uint16_t port = *free_local_port();
  const auto start = std::chrono::steady_clock::now();
  Expected<RendezvousResult> joined = rendezvous(options_for(port, 1, 2, std::chrono::milliseconds(600)), {});
  ASSERT_FALSE(joined.ok());
  EXPECT_NE(joined.error().message.find("is rank 0 running?"), std::string::npos) << joined.error().message;
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 5.0);
}

TEST(TensorParallelControl, MismatchedRanksAreRefusedOnBothSides) {
  struct Case {
    int rank;
    int size;
    const char* fingerprint;
    const char* says;
  };
  for (const Case& c : {Case{1, 3, "model", "started with --tp 3"}, Case{1, 2, "other", "loaded another model"}}) {
    SCOPED_TRACE(c.says);
    const uint16_t port = *free_local_port();
    auto follower = std::async(std::launch::async, [=] {
      return rendezvous(options_for(port, c.rank, c.size, std::chrono::milliseconds(5000), c.fingerprint), {});
    });
    Expected<RendezvousResult> leader = rendezvous(options_for(port, 0, 2, std::chrono::milliseconds(5000)), {{1}});
    ASSERT_FALSE(leader.ok());
    EXPECT_NE(leader.error().message.find(c.says), std::string::npos) << leader.error().message;
    Expected<RendezvousResult> joined = follower.get();
    ASSERT_FALSE(joined.ok());
    EXPECT_NE(joined.error().message.find(c.says), std::string::npos) << joined.error().message;
  }
  EXPECT_FALSE(rendezvous(options_for(1, 2, 2, std::chrono::milliseconds(100)), {}).ok());
}

TEST(TensorParallelControl, CommandsRoundTripAndBrokenBytesAreRefused) {
  std::vector<ControlCommand> commands(5);
  commands[0].op = ControlOp::kCreate;
  commands[0].sequence = 7;
  commands[1].op = ControlOp::kTruncate;
  commands[1].sequence = -3;
  commands[1].length = 1LL << 40;
  commands[2].op = ControlOp::kForwardGreedy;
  commands[2].sequences = {1, 2};
  commands[2].tokens = {{5, 6, 7}, {-1}};
  commands[2].logit_rows = {{2}, {}};
  commands[3].op = ControlOp::kStop;
  commands[4].op = ControlOp::kTimeAllReduce;
  commands[4].length = 4096;
  commands[4].repeats = 50;
  for (const ControlCommand& command : commands) {
    const std::vector<uint8_t> bytes = encode_command(command);
    Expected<ControlCommand> decoded = decode_command(bytes);
    ASSERT_TRUE(decoded.ok()) << decoded.error().message;
    EXPECT_EQ(decoded->op, command.op);
    EXPECT_EQ(decoded->sequence, command.sequence);
    EXPECT_EQ(decoded->length, command.length);
    EXPECT_EQ(decoded->repeats, command.repeats);
    EXPECT_EQ(decoded->sequences, command.sequences);
    EXPECT_EQ(decoded->tokens, command.tokens);
    EXPECT_EQ(decoded->logit_rows, command.logit_rows);
    // Every proper prefix is refused, and so are trailing bytes.
    for (size_t cut = 0; cut < bytes.size(); ++cut) {
      EXPECT_FALSE(decode_command(std::span(bytes).first(cut)).ok()) << cut;
    }
    std::vector<uint8_t> longer = bytes;
    longer.push_back(0);
    EXPECT_FALSE(decode_command(longer).ok());
  }
  // Random bytes: an error or a command, never a crash or a huge allocation.
  std::mt19937 rng(3);
  for (int trial = 0; trial < 20000; ++trial) {
    std::vector<uint8_t> bytes(rng() % 40);
    for (uint8_t& byte : bytes) byte = static_cast<uint8_t>(rng());
    (void)decode_command(bytes);
  }
  const std::vector<uint8_t> huge_count = {static_cast<uint8_t>(ControlOp::kForward), 0xff, 0xff, 0xff, 0x7f};
  EXPECT_FALSE(decode_command(huge_count).ok());
}

// Rank 0's decoder over a control connection, its follower a replica on a thread: every call
// reaches the follower in order (its sequences have rank 0's ids and lengths), rank 0's
// answers are its own shard's, and destroying rank 0's decoder stops the follower cleanly.
class TensorParallelFollow : public ::testing::Test {
 protected:
  void SetUp() override {
    config_ = llama_shape(4, 2, 48, 64);
    const uint16_t port = *free_local_port();
    auto joined = std::async(std::launch::async, [=] {
      return rendezvous(options_for(port, 1, 2, std::chrono::milliseconds(10000)), {});
    });
    Expected<RendezvousResult> leader = rendezvous(options_for(port, 0, 2, std::chrono::milliseconds(10000)), {{1}});
    ASSERT_TRUE(leader.ok()) << leader.error().message;
    Expected<RendezvousResult> follower = joined.get();
    ASSERT_TRUE(follower.ok()) << follower.error().message;
    follower_connection_ = std::move(follower->peers.front());
    follower_decoder_ = std::move(CpuDecoder::create(config_, random_weight_loader(2), CpuDecoderOptions{1, 0})).value();
    reference_ = std::move(CpuDecoder::create(config_, random_weight_loader(2), CpuDecoderOptions{1, 0})).value();
    auto shard = std::move(CpuDecoder::create(config_, random_weight_loader(2), CpuDecoderOptions{1, 0})).value();
    leader_ = std::make_unique<TensorParallelDecoder>(std::move(shard),
                                                      std::make_shared<ControlPeers>(std::move(leader->peers)), 2);
  }

  void start_follower() {
    followed_ = std::async(std::launch::async, [this] { return follow_leader(*follower_decoder_, follower_connection_); });
  }

  ModelConfig config_;
  ControlConnection follower_connection_;
  std::unique_ptr<CpuDecoder> follower_decoder_;
  std::unique_ptr<CpuDecoder> reference_;
  std::future<Status> followed_;
  std::unique_ptr<TensorParallelDecoder> leader_;
};

TEST_F(TensorParallelFollow, TheFollowerMakesEveryCallAndStopsWithRankZero) {
  start_follower();
  EXPECT_TRUE(leader_->health().ok());
  const SequenceId a = leader_->create_sequence();
  const SequenceId b = leader_->create_sequence();
  const SequenceId expected_a = reference_->create_sequence();
  const std::vector<int32_t> prompt = {3, 9, 27, 17, 51, 25, 11};
  const std::vector<int32_t> rows = {6};
  std::vector<int32_t> picked, expected;
  const ForwardRequest prefill[] = {{a, prompt, rows}, {b, std::span(prompt).first(3), std::span(rows).first(0)}};
  ASSERT_TRUE(leader_->forward_greedy(prefill, picked).ok());
  const ForwardRequest reference_prefill{expected_a, prompt, rows};
  ASSERT_TRUE(reference_->forward_greedy(std::span(&reference_prefill, 1), expected).ok());
  EXPECT_EQ(picked, expected);
  ASSERT_TRUE(leader_->truncate_sequence(a, 4).ok());
  EXPECT_FALSE(leader_->truncate_sequence(a, 9).ok());  // refused before it reaches the follower
  std::vector<float> logits;
  const std::vector<int32_t> step = {picked[0]};
  const std::vector<int32_t> row0 = {0};
  const ForwardRequest decode{a, step, row0};
  ASSERT_TRUE(leader_->forward(std::span(&decode, 1), logits).ok());
  EXPECT_EQ(logits.size(), static_cast<size_t>(config_.vocab_size));
  leader_->release_sequence(b);
  // Timing an all-reduce reaches the follower too (CPU shards have none: an error, and the
  // follower goes on).
  EXPECT_FALSE(leader_->time_all_reduce(64, 2).ok());
  // A refused batch (an unknown sequence) is refused on rank 0 and never sent.
  const ForwardRequest unknown{b, step, row0};
  EXPECT_FALSE(leader_->forward(std::span(&unknown, 1), logits).ok());
  leader_.reset();
  ASSERT_EQ(followed_.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  const Status stopped = followed_.get();
  EXPECT_TRUE(stopped.ok()) << stopped.error().message;
  EXPECT_EQ(follower_decoder_->sequence_length(a), 5);
  EXPECT_EQ(follower_decoder_->sequence_length(b), -1);
}

TEST_F(TensorParallelFollow, ADeadFollowerFailsRankZerosNextCallWithItsRank) {
  // The follower's process dies: its end of the connection closes.
  follower_connection_ = ControlConnection();
  const SequenceId a = leader_->create_sequence();
  const std::vector<int32_t> prompt = {1, 2, 3};
  const std::vector<int32_t> rows = {2};
  std::vector<int32_t> picked;
  const ForwardRequest request{a, prompt, rows};
  const Status failed = leader_->forward_greedy(std::span(&request, 1), picked);
  ASSERT_FALSE(failed.ok());
  EXPECT_NE(failed.error().message.find("rank 1"), std::string::npos) << failed.error().message;
  // And every later call, at once; the decoder says it is lost (a server then stops).
  EXPECT_FALSE(leader_->forward_greedy(std::span(&request, 1), picked).ok());
  const Status health = leader_->health();
  ASSERT_FALSE(health.ok());
  EXPECT_NE(health.error().message.find("rank 1"), std::string::npos) << health.error().message;
}

}  // namespace
}  // namespace draftwise
