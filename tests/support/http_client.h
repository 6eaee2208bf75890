// For the server tests: `draftwise serve` started as a child process on a free port, and a
// plain HTTP/1.1 client (Boost.Beast, blocking) that talks to it through a real socket.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace draftwise::testing {

class ServerProcess {
 public:
  // Runs `draftwise serve ARGS --port 0` and waits until it says where it listens and
  // /health answers 200 (or `ready_timeout` passes: then port() is 0).
  explicit ServerProcess(std::vector<std::string> args, std::chrono::seconds ready_timeout = std::chrono::seconds(120));
  ~ServerProcess();  // SIGKILL when still running
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  bool ready() const { return ready_; }
  // Sends `signal` and waits up to `timeout`: the exit code, or -1 when it did not exit
  // (it is killed then) or died of a signal.
  int stop(int signal, std::chrono::seconds timeout);
  // What it wrote to stderr so far.
  std::string log() const;
  // Resident memory (VmRSS) in KiB, from /proc; 0 when unreadable.
  int64_t rss_kib() const;

 private:
  pid_t pid_ = -1;
  int port_ = 0;
  bool ready_ = false;
  std::filesystem::path log_path_;
};

struct HttpResponse {
  int status = 0;  // 0: no answer (connection failed or closed)
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;  // decoded (chunked transfer undone)
};

// One request on a new connection.
HttpResponse http_request(int port, const std::string& method, const std::string& target, const std::string& body = "",
                          const std::vector<std::pair<std::string, std::string>>& headers = {});

// The payloads of the "data: " lines of a server-sent-events body, in order.
std::vector<std::string> sse_data(const std::string& body);

// Sends raw bytes and reads whatever comes back until the server closes or `timeout`.
std::string raw_exchange(int port, const std::string& bytes, std::chrono::milliseconds timeout);

}  // namespace draftwise::testing
