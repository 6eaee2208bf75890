#include "target/tensor_parallel_decoder.h"

#include <fmt/format.h>

#include <string>

namespace draftwise {
namespace {

// A follower's report to rank 0: why it stops.
constexpr uint8_t kReportError = 'E';

class Writer {
 public:
  void u8(uint8_t value) { bytes_.push_back(value); }
  void u32(uint32_t value) {
    for (int i = 0; i < 4; ++i) bytes_.push_back(static_cast<uint8_t>(value >> (8 * i)));
  }
  void i64(int64_t value) {
    const auto bits = static_cast<uint64_t>(value);
    for (int i = 0; i < 8; ++i) bytes_.push_back(static_cast<uint8_t>(bits >> (8 * i)));
  }
  void ints(std::span<const int32_t> values) {
    u32(static_cast<uint32_t>(values.size()));
    for (const int32_t value : values) u32(static_cast<uint32_t>(value));
  }
  std::vector<uint8_t> take() { return std::move(bytes_); }

 private:
  std::vector<uint8_t> bytes_;
};

class Reader {
 public:
  explicit Reader(std::span<const uint8_t> bytes) : bytes_(bytes) {}
  Expected<uint64_t> unsigned_bits(int count) {
    if (at_ + static_cast<size_t>(count) > bytes_.size()) {
      return make_error("a control message ends early ({} bytes)", bytes_.size());
    }
    uint64_t value = 0;
    for (int i = 0; i < count; ++i) value |= static_cast<uint64_t>(bytes_[at_++]) << (8 * i);
    return value;
  }
  Expected<std::vector<int32_t>> ints() {
    DW_ASSIGN_OR_RETURN(const uint64_t count, unsigned_bits(4));
    if (count * 4 > bytes_.size() - at_) return make_error("a control message claims {} values it does not hold", count);
    std::vector<int32_t> values(count);
    for (int32_t& value : values) {
      DW_ASSIGN_OR_RETURN(const uint64_t bits, unsigned_bits(4));
      value = static_cast<int32_t>(static_cast<uint32_t>(bits));
    }
    return values;
  }
  bool done() const { return at_ == bytes_.size(); }

 private:
  std::span<const uint8_t> bytes_;
  size_t at_ = 0;
};

}  // namespace

std::vector<uint8_t> encode_command(const ControlCommand& command) {
  Writer out;
  out.u8(static_cast<uint8_t>(command.op));
  switch (command.op) {
    case ControlOp::kCreate:
    case ControlOp::kRelease: out.i64(command.sequence); break;
    case ControlOp::kTruncate:
      out.i64(command.sequence);
      out.i64(command.length);
      break;
    case ControlOp::kTimeAllReduce:
      out.i64(command.length);
      out.i64(command.repeats);
      break;
    case ControlOp::kForward:
    case ControlOp::kForwardGreedy:
      out.u32(static_cast<uint32_t>(command.sequences.size()));
      for (size_t r = 0; r < command.sequences.size(); ++r) {
        out.i64(command.sequences[r]);
        out.ints(command.tokens[r]);
        out.ints(command.logit_rows[r]);
      }
      break;
    case ControlOp::kStop: break;
  }
  return out.take();
}

Expected<ControlCommand> decode_command(std::span<const uint8_t> bytes) {
  Reader in(bytes);
  ControlCommand command;
  DW_ASSIGN_OR_RETURN(const uint64_t op, in.unsigned_bits(1));
  if (op < static_cast<uint64_t>(ControlOp::kCreate) || op > static_cast<uint64_t>(ControlOp::kStop)) {
    return make_error("unknown control operation {}", op);
  }
  command.op = static_cast<ControlOp>(op);
  const auto i64 = [&]() -> Expected<int64_t> {
    DW_ASSIGN_OR_RETURN(const uint64_t bits, in.unsigned_bits(8));
    return static_cast<int64_t>(bits);
  };
  switch (command.op) {
    case ControlOp::kCreate:
    case ControlOp::kRelease: {
      DW_ASSIGN_OR_RETURN(command.sequence, i64());
      break;
    }
    case ControlOp::kTruncate: {
      DW_ASSIGN_OR_RETURN(command.sequence, i64());
      DW_ASSIGN_OR_RETURN(command.length, i64());
      break;
    }
    case ControlOp::kTimeAllReduce: {
      DW_ASSIGN_OR_RETURN(command.length, i64());
      DW_ASSIGN_OR_RETURN(command.repeats, i64());
      break;
    }
    case ControlOp::kForward:
    case ControlOp::kForwardGreedy: {
      DW_ASSIGN_OR_RETURN(const uint64_t count, in.unsigned_bits(4));
      if (count > bytes.size()) return make_error("a control message claims {} requests it does not hold", count);
      for (uint64_t r = 0; r < count; ++r) {
        DW_ASSIGN_OR_RETURN(const int64_t sequence, i64());
        DW_ASSIGN_OR_RETURN(std::vector<int32_t> tokens, in.ints());
        DW_ASSIGN_OR_RETURN(std::vector<int32_t> rows, in.ints());
        command.sequences.push_back(sequence);
        command.tokens.push_back(std::move(tokens));
        command.logit_rows.push_back(std::move(rows));
      }
      break;
    }
    case ControlOp::kStop: break;
  }
  if (!in.done()) return make_error("a control message has {} bytes past its end", bytes.size());
  return command;
}

ControlCommand forward_command(std::span<const ForwardRequest> batch, bool greedy) {
  ControlCommand command;
  command.op = greedy ? ControlOp::kForwardGreedy : ControlOp::kForward;
  for (const ForwardRequest& request : batch) {
    command.sequences.push_back(request.sequence);
    command.tokens.emplace_back(request.tokens.begin(), request.tokens.end());
    command.logit_rows.emplace_back(request.logit_rows.begin(), request.logit_rows.end());
  }
  return command;
}

Status ControlPeers::broadcast(std::span<const uint8_t> message) const {
  for (const ControlConnection& peer : connections_) DW_TRY(peer.send(message));
  return {};
}

Status ControlPeers::alive() const {
  for (const ControlConnection& peer : connections_) {
    DW_ASSIGN_OR_RETURN(const bool waiting, peer.readable());
    if (!waiting) continue;
    // A follower speaks only to say why it stops; or its connection closed (it died).
    Expected<std::vector<uint8_t>> report = peer.receive(std::chrono::milliseconds(1000));
    if (report.ok() && !report->empty() && (*report)[0] == kReportError) {
      return make_error("tensor-parallel rank {} stopped: {}", peer.peer_rank(),
                        std::string(report->begin() + 1, report->end()));
    }
    return make_error("tensor-parallel rank {} is gone (its connection closed{})", peer.peer_rank(),
                      report.ok() ? ", after an unexpected message" : ": " + report.error().message);
  }
  return {};
}

TensorParallelDecoder::TensorParallelDecoder(std::unique_ptr<Decoder> shard, std::shared_ptr<ControlPeers> peers,
                                             int size)
    : shard_(std::move(shard)), peers_(std::move(peers)), size_(size) {}

TensorParallelDecoder::~TensorParallelDecoder() {
  if (lost_.ok()) (void)peers_->broadcast(encode_command(ControlCommand{}));
  // Rank 0's shard (and its NCCL group) goes before the held resources: the followers leave
  // their groups while the launcher waits for them.
  shard_.reset();
  held_.clear();
}

std::string TensorParallelDecoder::device_name() const {
  return fmt::format("{} (tensor parallel, {} ranks)", shard_->device_name(), size_);
}

Status TensorParallelDecoder::send(const ControlCommand& command) {
  if (!lost_.ok()) return lost_;
  Status sent = peers_->alive();
  if (sent.ok()) sent = peers_->broadcast(encode_command(command));
  if (!sent.ok()) lost_ = sent;
  return sent;
}

SequenceId TensorParallelDecoder::create_sequence() {
  const SequenceId id = shard_->create_sequence();
  ControlCommand command;
  command.op = ControlOp::kCreate;
  command.sequence = id;
  // A lost rank shows in the next forward pass, which fails with the reason.
  (void)send(command);
  return id;
}

void TensorParallelDecoder::release_sequence(SequenceId sequence) {
  ControlCommand command;
  command.op = ControlOp::kRelease;
  command.sequence = sequence;
  (void)send(command);
  shard_->release_sequence(sequence);
}

Status TensorParallelDecoder::truncate_sequence(SequenceId sequence, int64_t length) {
  // Refused on rank 0 alone (by its shard, with its message): it must not reach the followers.
  const int64_t current = sequence_length(sequence);
  if (current < 0 || length < 0 || length > current) return shard_->truncate_sequence(sequence, length);
  ControlCommand command;
  command.op = ControlOp::kTruncate;
  command.sequence = sequence;
  command.length = length;
  DW_TRY(send(command));
  return shard_->truncate_sequence(sequence, length);
}

Status TensorParallelDecoder::send_forward(std::span<const ForwardRequest> batch, bool greedy) {
  // The checks every rank would make, made once before anything is sent.
  DW_TRY(check_forward_batch(batch, context_length(), config().vocab_size,
                             [this](SequenceId id) { return sequence_length(id); }));
  return send(forward_command(batch, greedy));
}

Status TensorParallelDecoder::forward(std::span<const ForwardRequest> batch, std::vector<float>& logits) {
  DW_TRY(send_forward(batch, false));
  return shard_->forward(batch, logits);
}

Status TensorParallelDecoder::forward_greedy(std::span<const ForwardRequest> batch, std::vector<int32_t>& tokens) {
  DW_TRY(send_forward(batch, true));
  return shard_->forward_greedy(batch, tokens);
}

Status TensorParallelDecoder::health() const {
  if (!lost_.ok()) return lost_;
  DW_TRY(shard_->health());
  return peers_->alive();
}

Expected<double> TensorParallelDecoder::time_all_reduce(int64_t elements, int64_t repeats) {
  if (elements < 1 || repeats < 1) return make_error("time_all_reduce needs elements and repeats ≥ 1");
  ControlCommand command;
  command.op = ControlOp::kTimeAllReduce;
  command.length = elements;
  command.repeats = repeats;
  DW_TRY(send(command));
  return shard_->time_all_reduce(elements, repeats);
}

Status follow_leader(Decoder& shard, const ControlConnection& leader) {
  const auto report = [&](const Error& error) -> Error {
    std::vector<uint8_t> message{kReportError};
    message.insert(message.end(), error.message.begin(), error.message.end());
    (void)leader.send(message);
    return error;
  };
  std::vector<float> logits;
  std::vector<int32_t> tokens;
  std::vector<ForwardRequest> batch;
  while (true) {
    Expected<std::vector<uint8_t>> message = leader.receive(std::nullopt);
    if (!message.ok()) return make_error("rank 0 is gone: {}", message.error().message);
    Expected<ControlCommand> decoded = decode_command(*message);
    if (!decoded.ok()) return report(decoded.error());
    const ControlCommand& command = *decoded;
    switch (command.op) {
      case ControlOp::kStop: return {};
      case ControlOp::kCreate: {
        const SequenceId id = shard.create_sequence();
        if (id != command.sequence) {
          return report(make_error("sequence ids diverged: rank 0 created {}, this rank {}", command.sequence, id));
        }
        break;
      }
      case ControlOp::kRelease: shard.release_sequence(command.sequence); break;
      case ControlOp::kTimeAllReduce: (void)shard.time_all_reduce(command.length, command.repeats); break;
      case ControlOp::kTruncate: {
        // Rank 0 checked the truncation before sending it; a failure here is a divergence.
        if (Status done = shard.truncate_sequence(command.sequence, command.length); !done.ok()) {
          return report(done.error());
        }
        break;
      }
      case ControlOp::kForward:
      case ControlOp::kForwardGreedy: {
        batch.clear();
        for (size_t r = 0; r < command.sequences.size(); ++r) {
          batch.push_back(ForwardRequest{command.sequences[r], command.tokens[r], command.logit_rows[r]});
        }
        // A pass that fails changes nothing, and fails alike on every rank (the same checks on
        // the same state: a full cache, a non-finite logit in the gathered row), so the group
        // goes on; a lost rank fails the group's collectives, and rank 0 then stops.
        (void)(command.op == ControlOp::kForward ? shard.forward(batch, logits) : shard.forward_greedy(batch, tokens));
        if (Status health = shard.health(); !health.ok()) return report(health.error());
        break;
      }
    }
  }
}

}  // namespace draftwise
