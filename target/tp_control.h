// The TCP side of tensor parallelism: the rendezvous that forms a group of ranks and hands
// them NCCL's unique id, and the control connections that stay open afterwards, on which
// rank 0 sends every rank the decoder calls to follow (target/tensor_parallel_decoder.h)
// and a rank reports why it stops. Tensors never travel here: NCCL moves them.
//
// Rank 0 listens on HOST:PORT; every other rank connects (retrying until the deadline: the
// ranks may start in any order) and says hello (magic, protocol version, rank, size, and
// the model's fingerprint, which must match); rank 0 answers each with the id once all
// have joined. Every read and the whole rendezvous have deadlines; a closed connection is a
// dead rank.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "kernels/status.h"

namespace draftwise {

struct RendezvousAddress {
  std::string host;
  uint16_t port = 0;
};
// "HOST:PORT" (a name or IPv4 address; port in [1, 65535]).
Expected<RendezvousAddress> parse_rendezvous_address(std::string_view text);

struct RendezvousOptions {
  RendezvousAddress address;
  int rank = 0;
  int size = 1;
  // What every rank must agree on (the model and its sharding), compared at joining.
  std::string fingerprint;
  std::chrono::milliseconds timeout{60000};
};

// One open connection to a peer, framed as [u32 length][bytes].
class ControlConnection {
 public:
  ControlConnection() = default;
  explicit ControlConnection(int fd, int peer_rank) : fd_(fd), peer_rank_(peer_rank) {}
  ControlConnection(ControlConnection&& other) noexcept;
  ControlConnection& operator=(ControlConnection&& other) noexcept;
  ~ControlConnection();

  int peer_rank() const { return peer_rank_; }
  void set_peer_rank(int rank) { peer_rank_ = rank; }
  Status send(std::span<const uint8_t> message) const;
  // The next message; nullopt timeout waits for ever (a follower between requests).
  Expected<std::vector<uint8_t>> receive(std::optional<std::chrono::milliseconds> timeout) const;
  // Whether data (or the end of the stream) is waiting, without consuming it.
  Expected<bool> readable() const;
  // False once the peer has closed its end (EOF with nothing left to read).
  bool open() const;

 private:
  int fd_ = -1;
  int peer_rank_ = -1;
};

// A formed group, seen from one rank: rank 0 holds a connection to each other rank (in rank
// order), the others one connection to rank 0.
struct RendezvousResult {
  std::vector<uint8_t> unique_id;  // what rank 0 handed out
  std::vector<ControlConnection> peers;
};

// Rank 0: `unique_id` is what to hand out. Other ranks: pass an empty one and receive it.
Expected<RendezvousResult> rendezvous(const RendezvousOptions& options, std::span<const uint8_t> unique_id);

// Listens on an ephemeral port of 127.0.0.1 and closes it: a free port for a launcher's
// rendezvous on one machine (a race with other programs is possible and gives an error).
Expected<uint16_t> free_local_port();

}  // namespace draftwise
