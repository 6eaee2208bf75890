#include "target/tp_control.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <memory>
#include <thread>
#include <utility>

namespace draftwise {
namespace {

using Clock = std::chrono::steady_clock;
constexpr uint32_t kMagic = 0x50545744;  // "DWTP"
constexpr uint32_t kProtocolVersion = 1;
constexpr uint32_t kMaxMessageBytes = 1u << 30;

int milliseconds_until(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return static_cast<int>(std::clamp<int64_t>(left, 0, 1 << 30));
}

// Waits for `events` on fd until the deadline (none: for ever).
Expected<bool> wait_for(int fd, short events, std::optional<Clock::time_point> deadline) {
  while (true) {
    pollfd entry{fd, events, 0};
    const int timeout = deadline ? milliseconds_until(*deadline) : -1;
    const int ready = ::poll(&entry, 1, timeout);
    if (ready > 0) return true;
    if (ready == 0) return false;
    if (errno != EINTR) return make_error("poll: {}", std::strerror(errno));
  }
}

Status write_all(int fd, const uint8_t* data, size_t size) {
  while (size > 0) {
    const ssize_t sent = ::send(fd, data, size, MSG_NOSIGNAL);
    if (sent < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        DW_TRY(wait_for(fd, POLLOUT, std::nullopt));
        continue;
      }
      return make_error("send: {}", std::strerror(errno));
    }
    data += sent;
    size -= static_cast<size_t>(sent);
  }
  return {};
}

Status read_all(int fd, uint8_t* data, size_t size, std::optional<Clock::time_point> deadline) {
  while (size > 0) {
    DW_ASSIGN_OR_RETURN(const bool ready, wait_for(fd, POLLIN, deadline));
    if (!ready) return make_error("timed out");
    const ssize_t got = ::recv(fd, data, size, 0);
    if (got == 0) return make_error("the connection was closed");
    if (got < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
      return make_error("recv: {}", std::strerror(errno));
    }
    data += got;
    size -= static_cast<size_t>(got);
  }
  return {};
}

void put_u32(std::vector<uint8_t>& out, uint32_t value) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(value >> (8 * i)));
}

uint32_t get_u32(std::span<const uint8_t> in, size_t at) {
  uint32_t value = 0;
  for (int i = 0; i < 4; ++i) value |= static_cast<uint32_t>(in[at + static_cast<size_t>(i)]) << (8 * i);
  return value;
}

struct Hello {
  uint32_t rank = 0;
  uint32_t size = 0;
  std::string fingerprint;
};

std::vector<uint8_t> encode_hello(const RendezvousOptions& options) {
  std::vector<uint8_t> out;
  put_u32(out, kMagic);
  put_u32(out, kProtocolVersion);
  put_u32(out, static_cast<uint32_t>(options.rank));
  put_u32(out, static_cast<uint32_t>(options.size));
  out.insert(out.end(), options.fingerprint.begin(), options.fingerprint.end());
  return out;
}

Expected<Hello> decode_hello(std::span<const uint8_t> in) {
  if (in.size() < 16 || get_u32(in, 0) != kMagic) return make_error("it is not a draftwise rank (bad greeting)");
  if (get_u32(in, 4) != kProtocolVersion) {
    return make_error("it speaks protocol version {}, this rank {}", get_u32(in, 4), kProtocolVersion);
  }
  Hello hello;
  hello.rank = get_u32(in, 8);
  hello.size = get_u32(in, 12);
  hello.fingerprint.assign(in.begin() + 16, in.end());
  return hello;
}

// Rank 0's answer: 'K' + the unique id, or 'E' + why the group will not form.
std::vector<uint8_t> answer(char kind, std::span<const uint8_t> body) {
  std::vector<uint8_t> out(body.size() + 1);
  out[0] = static_cast<uint8_t>(kind);
  std::copy(body.begin(), body.end(), out.begin() + 1);
  return out;
}

// The IPv4 TCP addresses of `address` (passive: to listen on), freed with the pointer.
using AddressList = std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)>;
Expected<AddressList> resolve(const RendezvousAddress& address, bool passive) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = passive ? AI_PASSIVE : 0;
  addrinfo* found = nullptr;
  const std::string port = std::to_string(address.port);
  if (const int code = ::getaddrinfo(address.host.c_str(), port.c_str(), &hints, &found); code != 0) {
    return make_error("cannot resolve '{}': {}", address.host, ::gai_strerror(code));
  }
  return AddressList(found, &::freeaddrinfo);
}

// Control messages are small and waited for: no Nagle delay.
void send_without_delay(int fd) {
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

// A connected socket, or -1 when nobody listens there yet.
Expected<int> connect_once(const RendezvousAddress& address) {
  DW_ASSIGN_OR_RETURN(const AddressList found, resolve(address, false));
  for (addrinfo* entry = found.get(); entry != nullptr; entry = entry->ai_next) {
    const int fd = ::socket(entry->ai_family, entry->ai_socktype | SOCK_CLOEXEC, entry->ai_protocol);
    if (fd < 0) continue;
    if (::connect(fd, entry->ai_addr, entry->ai_addrlen) == 0) {
      send_without_delay(fd);
      return fd;
    }
    ::close(fd);
  }
  return -1;
}

Expected<int> listen_on(const RendezvousAddress& address) {
  DW_ASSIGN_OR_RETURN(const AddressList found, resolve(address, true));
  const int fd = ::socket(found->ai_family, found->ai_socktype | SOCK_CLOEXEC, found->ai_protocol);
  if (fd < 0) return make_error("socket: {}", std::strerror(errno));
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (::bind(fd, found->ai_addr, found->ai_addrlen) != 0 || ::listen(fd, 64) != 0) {
    const std::string why = std::strerror(errno);
    ::close(fd);
    return make_error("cannot listen on {}:{} for the rendezvous: {}", address.host, address.port, why);
  }
  return fd;
}

struct FileDescriptor {
  int fd = -1;
  ~FileDescriptor() {
    if (fd >= 0) ::close(fd);
  }
};

Expected<RendezvousResult> lead(const RendezvousOptions& options, std::span<const uint8_t> unique_id) {
  const Clock::time_point deadline = Clock::now() + options.timeout;
  DW_ASSIGN_OR_RETURN(const int listener_fd, listen_on(options.address));
  FileDescriptor listener{listener_fd};
  std::vector<std::optional<ControlConnection>> joined(static_cast<size_t>(options.size));
  int missing = options.size - 1;
  const auto refuse_all = [&](const Error& error) -> Error {
    const std::string text = error.message;
    for (auto& peer : joined) {
      if (peer) (void)peer->send(answer('E', {reinterpret_cast<const uint8_t*>(text.data()), text.size()}));
    }
    return error;
  };
  while (missing > 0) {
    DW_ASSIGN_OR_RETURN(const bool ready, wait_for(listener.fd, POLLIN, deadline));
    if (!ready) {
      std::string absent;
      for (int r = 1; r < options.size; ++r) {
        if (!joined[static_cast<size_t>(r)]) absent += (absent.empty() ? "" : ", ") + std::to_string(r);
      }
      return refuse_all(make_error("the tensor-parallel rendezvous on {}:{} timed out after {} ms: rank(s) {} of {} "
                                   "never joined",
                                   options.address.host, options.address.port, options.timeout.count(), absent,
                                   options.size));
    }
    const int fd = ::accept4(listener.fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    send_without_delay(fd);
    ControlConnection connection(fd, -1);
    // A stranger that says nothing in time, or not our greeting, is dropped; the group waits on.
    Expected<std::vector<uint8_t>> greeting =
        connection.receive(std::min<std::chrono::milliseconds>(options.timeout, std::chrono::milliseconds(5000)));
    if (!greeting.ok()) continue;
    Expected<Hello> hello = decode_hello(*greeting);
    if (!hello.ok()) continue;
    Error mismatch;
    if (hello->size != static_cast<uint32_t>(options.size)) {
      mismatch = make_error("rank {} was started with --tp {}, rank 0 with --tp {}", hello->rank, hello->size,
                            options.size);
    } else if (hello->rank == 0 || hello->rank >= static_cast<uint32_t>(options.size)) {
      mismatch = make_error("a rank joined as rank {}, which is not in 1..{}", hello->rank, options.size - 1);
    } else if (joined[hello->rank]) {
      mismatch = make_error("two processes joined as rank {}", hello->rank);
    } else if (hello->fingerprint != options.fingerprint) {
      mismatch = make_error("rank {} loaded another model or sharding ({}) than rank 0 ({})", hello->rank,
                            hello->fingerprint, options.fingerprint);
    }
    if (!mismatch.message.empty()) {
      (void)connection.send(
          answer('E', {reinterpret_cast<const uint8_t*>(mismatch.message.data()), mismatch.message.size()}));
      return refuse_all(mismatch);
    }
    connection.set_peer_rank(static_cast<int>(hello->rank));
    joined[hello->rank] = std::move(connection);
    --missing;
  }
  RendezvousResult result;
  result.unique_id.assign(unique_id.begin(), unique_id.end());
  for (int r = 1; r < options.size; ++r) {
    ControlConnection& peer = *joined[static_cast<size_t>(r)];
    DW_TRY(peer.send(answer('K', unique_id)));
    result.peers.push_back(std::move(peer));
  }
  return result;
}

Expected<RendezvousResult> join(const RendezvousOptions& options) {
  const Clock::time_point deadline = Clock::now() + options.timeout;
  int fd = -1;
  std::string last_error = "no answer";
  while (fd < 0) {
    Expected<int> connected = connect_once(options.address);
    if (!connected.ok()) return std::move(connected).error();
    fd = *connected;
    if (fd >= 0) break;
    last_error = std::strerror(errno);
    if (Clock::now() > deadline) {
      return make_error("rank {}: could not reach the tensor-parallel rendezvous at {}:{} within {} ms ({}); is rank 0 "
                        "running?",
                        options.rank, options.address.host, options.address.port, options.timeout.count(), last_error);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ControlConnection connection(fd, 0);
  DW_TRY(connection.send(encode_hello(options)));
  Expected<std::vector<uint8_t>> reply = connection.receive(std::chrono::milliseconds(milliseconds_until(deadline)));
  if (!reply.ok()) {
    return make_error("rank {}: the tensor-parallel rendezvous at {}:{} did not complete: {}", options.rank,
                      options.address.host, options.address.port, reply.error().message);
  }
  if (reply->empty() || (*reply)[0] != 'K') {
    const std::string why = reply->empty() ? std::string("empty answer") : std::string(reply->begin() + 1, reply->end());
    return make_error("rank {}: rank 0 refused the group: {}", options.rank, why);
  }
  RendezvousResult result;
  result.unique_id.assign(reply->begin() + 1, reply->end());
  result.peers.push_back(std::move(connection));
  return result;
}

}  // namespace

ControlConnection::ControlConnection(ControlConnection&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), peer_rank_(other.peer_rank_) {}

ControlConnection& ControlConnection::operator=(ControlConnection&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    peer_rank_ = other.peer_rank_;
  }
  return *this;
}

ControlConnection::~ControlConnection() {
  if (fd_ >= 0) ::close(fd_);
}

Status ControlConnection::send(std::span<const uint8_t> message) const {
  if (fd_ < 0) return make_error("the connection to rank {} is closed", peer_rank_);
  std::vector<uint8_t> frame;
  frame.reserve(message.size() + 4);
  put_u32(frame, static_cast<uint32_t>(message.size()));
  frame.insert(frame.end(), message.begin(), message.end());
  if (Status sent = write_all(fd_, frame.data(), frame.size()); !sent.ok()) {
    return make_error("rank {} is unreachable: {}", peer_rank_, sent.error().message);
  }
  return {};
}

Expected<std::vector<uint8_t>> ControlConnection::receive(std::optional<std::chrono::milliseconds> timeout) const {
  if (fd_ < 0) return make_error("the connection to rank {} is closed", peer_rank_);
  std::optional<Clock::time_point> deadline;
  if (timeout) deadline = Clock::now() + *timeout;
  uint8_t header[4];
  DW_TRY(read_all(fd_, header, 4, deadline));
  const uint32_t size = get_u32(header, 0);
  if (size > kMaxMessageBytes) return make_error("a message of {} bytes is larger than the protocol allows", size);
  std::vector<uint8_t> message(size);
  DW_TRY(read_all(fd_, message.data(), message.size(), deadline));
  return message;
}

Expected<bool> ControlConnection::readable() const {
  if (fd_ < 0) return true;
  return wait_for(fd_, POLLIN, Clock::now());
}

bool ControlConnection::open() const {
  if (fd_ < 0) return false;
  uint8_t byte = 0;
  const ssize_t got = ::recv(fd_, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  if (got == 0) return false;
  if (got < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
  return true;
}

Expected<RendezvousAddress> parse_rendezvous_address(std::string_view text) {
  const size_t colon = text.rfind(':');
  if (colon == std::string_view::npos || colon == 0) {
    return make_error("--rendezvous '{}' is not HOST:PORT (e.g. 10.0.0.1:29500)", text);
  }
  RendezvousAddress address;
  address.host = std::string(text.substr(0, colon));
  const std::string_view port = text.substr(colon + 1);
  unsigned value = 0;
  const auto [end, error] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (error != std::errc() || end != port.data() + port.size() || value < 1 || value > 65535) {
    return make_error("--rendezvous '{}': the port must be a number in 1..65535", text);
  }
  address.port = static_cast<uint16_t>(value);
  return address;
}

Expected<RendezvousResult> rendezvous(const RendezvousOptions& options, std::span<const uint8_t> unique_id) {
  if (options.size < 1) return make_error("the tensor-parallel size must be at least 1, got {}", options.size);
  if (options.rank < 0 || options.rank >= options.size) {
    return make_error("--rank {} is not in 0..{} (--tp {})", options.rank, options.size - 1, options.size);
  }
  if (options.rank == 0) {
    if (options.size == 1) {
      RendezvousResult alone;
      alone.unique_id.assign(unique_id.begin(), unique_id.end());
      return alone;
    }
    return lead(options, unique_id);
  }
  return join(options);
}

Expected<uint16_t> free_local_port() {
  FileDescriptor socket_fd{::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)};
  if (socket_fd.fd < 0) return make_error("socket: {}", std::strerror(errno));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  if (::bind(socket_fd.fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    return make_error("bind: {}", std::strerror(errno));
  }
  socklen_t length = sizeof(address);
  if (::getsockname(socket_fd.fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    return make_error("getsockname: {}", std::strerror(errno));
  }
  return ntohs(address.sin_port);
}

}  // namespace draftwise
