// A tensor-parallel target as the engine sees it. Rank 0 owns the HTTP front end, the
// scheduler, the drafter and the learner; its decoder is a TensorParallelDecoder, which
// sends every call that changes the model's state (sequences, forward passes, rollback) to
// the other ranks over the control connections, then makes it on its own shard. The other
// ranks run follow_leader(): they make the same calls on their shards in the same order,
// so that every collective inside a forward pass meets its partners. Which calls change
// state and how they are encoded is the protocol below; the shards themselves are
// CudaDecoders with a tensor-parallel group (target/cuda_decoder.h).
#pragma once

#include <memory>
#include <vector>

#include "target/decoder.h"
#include "target/tp_control.h"

namespace draftwise {

// The control connections of a formed group, shared by the decoder (which sends on them)
// and the NCCL group's waits (which poll them for a rank that stopped).
class ControlPeers {
 public:
  explicit ControlPeers(std::vector<ControlConnection> connections) : connections_(std::move(connections)) {}
  // To every peer; an error names the rank that could not be reached.
  Status broadcast(std::span<const uint8_t> message) const;
  // An error when a peer has closed its connection or reported an error (its message).
  Status alive() const;
  const std::vector<ControlConnection>& connections() const { return connections_; }

 private:
  std::vector<ControlConnection> connections_;
};

// The calls a follower makes, as they travel (little-endian).
enum class ControlOp : uint8_t { kCreate = 1, kRelease, kTruncate, kForward, kForwardGreedy, kTimeAllReduce, kStop };

struct ControlCommand {
  ControlOp op = ControlOp::kStop;
  SequenceId sequence = 0;  // kCreate (the id rank 0 got), kRelease, kTruncate
  int64_t length = 0;       // kTruncate; kTimeAllReduce: the elements
  int64_t repeats = 0;      // kTimeAllReduce
  // kForward / kForwardGreedy: the batch, owning its tokens and rows.
  std::vector<SequenceId> sequences;
  std::vector<std::vector<int32_t>> tokens;
  std::vector<std::vector<int32_t>> logit_rows;
};
std::vector<uint8_t> encode_command(const ControlCommand& command);
Expected<ControlCommand> decode_command(std::span<const uint8_t> bytes);
ControlCommand forward_command(std::span<const ForwardRequest> batch, bool greedy);

class TensorParallelDecoder final : public Decoder {
 public:
  // `shard`: rank 0's shard; `peers`: the connections to ranks 1..N-1.
  TensorParallelDecoder(std::unique_ptr<Decoder> shard, std::shared_ptr<ControlPeers> peers, int size);
  // Stops the followers (they exit cleanly).
  ~TensorParallelDecoder() override;

  const ModelConfig& config() const override { return shard_->config(); }
  int64_t context_length() const override { return shard_->context_length(); }
  std::string device_name() const override;

  SequenceId create_sequence() override;
  void release_sequence(SequenceId sequence) override;
  int64_t sequence_length(SequenceId sequence) const override { return shard_->sequence_length(sequence); }
  Status truncate_sequence(SequenceId sequence, int64_t length) override;
  CacheUsage cache_usage() const override { return shard_->cache_usage(); }
  Status forward(std::span<const ForwardRequest> batch, std::vector<float>& logits) override;
  Status forward_greedy(std::span<const ForwardRequest> batch, std::vector<int32_t>& tokens) override;
  Expected<std::vector<float>> final_norm_weight() const override { return shard_->final_norm_weight(); }
  Expected<double> time_all_reduce(int64_t elements, int64_t repeats) override;
  // Lost once a rank could not be reached, its shard's group failed, or a rank has stopped.
  Status health() const override;
  // Early-exit drafting and qTTT change per-rank state the protocol does not carry yet: they
  // are refused by name (the base class's errors), and a draft model or n-gram drafter serves.

  Decoder& shard() { return *shard_; }
  // Kept until the followers have been told to stop (e.g. the processes a launcher started,
  // which it then reaps).
  void hold_until_stopped(std::shared_ptr<void> resource) { held_.push_back(std::move(resource)); }

 private:
  // Sends a command; once a rank is lost every later call fails with that error.
  Status send(const ControlCommand& command);
  // Checks a forward batch as every rank would, then sends it.
  Status send_forward(std::span<const ForwardRequest> batch, bool greedy);

  std::unique_ptr<Decoder> shard_;
  std::shared_ptr<ControlPeers> peers_;
  int size_ = 1;
  Status lost_;
  std::vector<std::shared_ptr<void>> held_;
};

// A follower's loop: makes rank 0's calls on `shard` until told to stop (returns ok) or
// until rank 0 is gone or a call fails (returns the error, after reporting it to rank 0).
Status follow_leader(Decoder& shard, const ControlConnection& leader);

}  // namespace draftwise
