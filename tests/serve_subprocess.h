// Test helper: the real `mlra-serve serve` binary as a child process on loopback (free ports
// picked by the kernel), killed when the helper goes away; and its resident memory from /proc.
#pragma once

#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/create_channel.h>

#include "server/cli/grpc_probe.h"

extern char** environ;

namespace mlra::testing {

inline int unused_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

class ServeSubprocess {
 public:
  // `extra`: more command-line arguments after `serve --host 127.0.0.1 --port P`.
  explicit ServeSubprocess(std::vector<std::string> extra) : port_(unused_port()) {
    const std::string binary = std::string(MLRA_BINARY_DIR) + "/server/mlra-serve";
    std::vector<std::string> args = {binary,      "serve",  "--host",
                                     "127.0.0.1", "--port", std::to_string(port_)};
    args.insert(args.end(), extra.begin(), extra.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    if (posix_spawn(&pid_, binary.c_str(), nullptr, nullptr, argv.data(), environ) != 0) pid_ = -1;
  }
  ~ServeSubprocess() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  ServeSubprocess(const ServeSubprocess&) = delete;
  ServeSubprocess& operator=(const ServeSubprocess&) = delete;

  int pid() const { return pid_; }
  std::string target() const { return "127.0.0.1:" + std::to_string(port_); }
  bool wait_serving(std::chrono::milliseconds timeout) const {
    auto channel = grpc::CreateChannel(target(), grpc::InsecureChannelCredentials());
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (check_health(channel, "", std::chrono::seconds(1)).serving == ServingStatus::kServing) {
        return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }
  // VmRSS of the child in bytes; 0 when it is gone.
  int64_t resident_bytes() const {
    std::ifstream in("/proc/" + std::to_string(pid_) + "/status");
    std::string key;
    while (in >> key) {
      if (key == "VmRSS:") {
        int64_t kb = 0;
        in >> kb;
        return kb * 1024;
      }
      std::getline(in, key);
    }
    return 0;
  }

 private:
  int port_;
  pid_t pid_ = -1;
};

}  // namespace mlra::testing
