// http_get: getaddrinfo + connect + one request + read to EOF under a poll() deadline (header).
#include "server/cli/http_get.h"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <stdexcept>

#include <fmt/format.h>

namespace mlra {
namespace {

using Clock = std::chrono::steady_clock;

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) close(fd);
  }
};

int remaining_ms(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return left.count() > 0 ? static_cast<int>(left.count()) : 0;
}

void wait_for(int fd, short events, Clock::time_point deadline, const std::string& what) {
  pollfd p{fd, events, 0};
  for (;;) {
    const int n = poll(&p, 1, remaining_ms(deadline));
    if (n > 0) return;
    if (n == 0) throw std::runtime_error(what + ": timed out");
    if (errno != EINTR) throw std::runtime_error(what + ": poll failed");
  }
}

}  // namespace

HttpResponse http_get(const std::string& host_port, const std::string& path,
                      std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  const size_t colon = host_port.rfind(':');
  if (colon == std::string::npos) throw std::runtime_error("http_get: expected host:port");
  std::string host = host_port.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  const std::string port = host_port.substr(colon + 1);
  const std::string what = fmt::format("GET http://{}{}", host_port, path);

  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (getaddrinfo(host.c_str(), port.c_str(), &hints, &found) != 0 || found == nullptr) {
    throw std::runtime_error(what + ": cannot resolve the host");
  }
  Fd sock{socket(found->ai_family, found->ai_socktype | SOCK_NONBLOCK, found->ai_protocol)};
  const int rc = sock.fd < 0 ? -1 : connect(sock.fd, found->ai_addr, found->ai_addrlen);
  freeaddrinfo(found);
  if (sock.fd < 0 || (rc != 0 && errno != EINPROGRESS)) {
    throw std::runtime_error(what + ": connect failed: " + std::strerror(errno));
  }
  wait_for(sock.fd, POLLOUT, deadline, what);
  int err = 0;
  socklen_t len = sizeof(err);
  getsockopt(sock.fd, SOL_SOCKET, SO_ERROR, &err, &len);
  if (err != 0) throw std::runtime_error(what + ": connect failed: " + std::strerror(err));

  const std::string request =
      fmt::format("GET {} HTTP/1.0\r\nHost: {}\r\nConnection: close\r\n\r\n", path, host_port);
  for (size_t sent = 0; sent < request.size();) {
    wait_for(sock.fd, POLLOUT, deadline, what);
    const ssize_t n = send(sock.fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno != EAGAIN && errno != EINTR)
      throw std::runtime_error(what + ": send failed");
    if (n > 0) sent += static_cast<size_t>(n);
  }
  std::string raw;
  char buf[16384];
  for (;;) {
    wait_for(sock.fd, POLLIN, deadline, what);
    const ssize_t n = recv(sock.fd, buf, sizeof(buf), 0);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      throw std::runtime_error(what + ": receive failed");
    }
    raw.append(buf, static_cast<size_t>(n));
  }
  HttpResponse out;
  const size_t header_end = raw.find("\r\n\r\n");
  if (raw.compare(0, 5, "HTTP/") != 0 || header_end == std::string::npos ||
      std::sscanf(raw.c_str(), "HTTP/%*s %d", &out.status) != 1) {
    throw std::runtime_error(what + ": not an HTTP response");
  }
  out.body = raw.substr(header_end + 4);
  return out;
}

}  // namespace mlra
