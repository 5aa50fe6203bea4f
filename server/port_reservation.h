// Holds a TCP port from before the model loads until the real listener takes it, so a port that
// is taken fails `serve` at once, not after minutes of loading. The socket is bound (with
// SO_REUSEADDR, like gRPC's own, so connections in TIME_WAIT from a previous run do not count)
// but never listens: a client connecting meanwhile is refused rather than left hanging, and a
// second server cannot start listening on it. Port 0 reserves a free port; port() tells which.
#pragma once

#include <string>

namespace mlra {

class PortReservation {
 public:
  // Throws std::runtime_error "<what> port <host>:<port> is already in use" (or the bind error).
  PortReservation(const std::string& host, int port, const std::string& what);
  ~PortReservation();
  PortReservation(const PortReservation&) = delete;
  PortReservation& operator=(const PortReservation&) = delete;

  int port() const { return port_; }
  void release();  // closes the socket; the port is free for the real listener

 private:
  int fd_ = -1;
  int port_ = 0;
};

}  // namespace mlra
