// Control channel: framing over a blocking-free (poll + MSG_DONTWAIT) AF_UNIX stream socket, and
// the binary encodings of the messages. Both ends run on the same host and binary, so values are
// written in native byte order; the magic catches a desynchronised stream.
#include "engine/control_channel.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>

namespace mlra {
namespace {

constexpr uint64_t kMaxPayload = 4ULL << 30;

// Milliseconds left until `deadline` for poll(): -1 (forever) for time_point::max().
int poll_timeout_ms(Clock::time_point deadline) {
  if (deadline == Clock::time_point::max()) return -1;
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return int(std::clamp<int64_t>(left.count() + 1, 0, INT_MAX));
}

std::string errno_text(const char* what) {
  return std::string(what) + ": " + std::strerror(errno);
}

}  // namespace

const char* message_type_name(MessageType type) {
  switch (type) {
    case MessageType::kInit:
      return "Init";
    case MessageType::kReady:
      return "Ready";
    case MessageType::kNcclId:
      return "NcclId";
    case MessageType::kStep:
      return "Step";
    case MessageType::kLogits:
      return "Logits";
    case MessageType::kAck:
      return "Ack";
    case MessageType::kShutdown:
      return "Shutdown";
    case MessageType::kError:
      return "Error";
    case MessageType::kTokens:
      return "Tokens";
    case MessageType::kAllocate:
      return "Allocate";
  }
  return "?";
}

ControlChannel::~ControlChannel() {
  close();
}

ControlChannel& ControlChannel::operator=(ControlChannel&& other) noexcept {
  if (this != &other) {
    close();
    fd_ = other.fd_;
    other.fd_ = -1;
  }
  return *this;
}

void ControlChannel::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

void ControlChannel::send(MessageType type, int64_t step, const void* payload, size_t size,
                          Clock::time_point deadline) {
  if (fd_ < 0) throw ChannelClosed("control channel is closed");
  MessageHeader header{kControlMagic, type, step, size};
  iovec iov[2] = {{&header, sizeof(header)}, {const_cast<void*>(payload), size}};
  size_t total = sizeof(header) + size, sent = 0;
  while (sent < total) {
    // Skip what was already sent across the two buffers.
    size_t skip = sent;
    iovec cur[2];
    int n = 0;
    for (const iovec& v : iov) {
      if (skip >= v.iov_len) {
        skip -= v.iov_len;
        continue;
      }
      cur[n++] = {static_cast<char*>(v.iov_base) + skip, v.iov_len - skip};
      skip = 0;
    }
    msghdr msg{};
    msg.msg_iov = cur;
    msg.msg_iovlen = size_t(n);
    const ssize_t r = ::sendmsg(fd_, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (r > 0) {
      sent += size_t(r);
      continue;
    }
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd p{fd_, POLLOUT, 0};
      const int pr = ::poll(&p, 1, poll_timeout_ms(deadline));
      if (pr == 0) throw ChannelTimeout("control channel: send timed out");
      if (pr < 0 && errno != EINTR) throw ChannelClosed(errno_text("control channel poll"));
      if (pr > 0 && (p.revents & (POLLERR | POLLHUP)) && !(p.revents & POLLOUT))
        throw ChannelClosed("control channel: peer closed");
      continue;
    }
    throw ChannelClosed(errno_text("control channel send"));
  }
}

void ControlChannel::read_exact(char* dst, size_t n, Clock::time_point deadline) {
  size_t got = 0;
  while (got < n) {
    const ssize_t r = ::recv(fd_, dst + got, n - got, MSG_DONTWAIT);
    if (r > 0) {
      got += size_t(r);
      continue;
    }
    if (r == 0) throw ChannelClosed("control channel: peer closed the connection");
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK)
      throw ChannelClosed(errno_text("control channel recv"));
    pollfd p{fd_, POLLIN, 0};
    const int pr = ::poll(&p, 1, poll_timeout_ms(deadline));
    if (pr == 0) throw ChannelTimeout("control channel: no reply before the deadline");
    if (pr < 0 && errno != EINTR) throw ChannelClosed(errno_text("control channel poll"));
  }
}

MessageHeader ControlChannel::read_header(Clock::time_point deadline) {
  if (fd_ < 0) throw ChannelClosed("control channel is closed");
  MessageHeader header;
  read_exact(reinterpret_cast<char*>(&header), sizeof(header), deadline);
  if (header.magic != kControlMagic) throw ProtocolError("control channel: bad magic");
  if (header.payload_size > kMaxPayload) throw ProtocolError("control channel: payload too large");
  return header;
}

Message ControlChannel::receive(Clock::time_point deadline) {
  const MessageHeader header = read_header(deadline);
  Message m;
  m.type = header.type;
  m.step = header.step;
  m.payload.resize(header.payload_size);
  read_exact(m.payload.data(), m.payload.size(), deadline);
  return m;
}

MessageHeader ControlChannel::expect_header(Clock::time_point deadline, int64_t step,
                                            MessageType type, MessageType alt_type) {
  const MessageHeader header = read_header(deadline);
  if (header.type == MessageType::kError) {
    std::string text(header.payload_size, '\0');
    read_exact(text.data(), text.size(), deadline);
    throw ProtocolError(text);
  }
  if (header.type != type && header.type != alt_type)
    throw ProtocolError(std::string("control channel: expected ") + message_type_name(type) +
                        ", got " + message_type_name(header.type));
  if (header.step != step)
    throw ProtocolError("control channel: lockstep violated: reply for step " +
                        std::to_string(header.step) + " while waiting for step " +
                        std::to_string(step));
  return header;
}

Message ControlChannel::expect(Clock::time_point deadline, int64_t step, MessageType type,
                               MessageType alt_type) {
  const MessageHeader header = expect_header(deadline, step, type, alt_type);
  Message m;
  m.type = header.type;
  m.step = header.step;
  m.payload.resize(header.payload_size);
  read_exact(m.payload.data(), m.payload.size(), deadline);
  return m;
}

std::pair<int, int> make_socket_pair() {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0)
    throw ChannelClosed(errno_text("socketpair"));
  return {fds[0], fds[1]};
}

std::vector<char> encode(const WorkerInit& m) {
  ByteWriter w;
  w.put_string(m.model_dir);
  w.put_string(m.variant);
  w.put_string(m.backend);
  w.put(m.device);
  w.put(m.page_size);
  w.put(m.num_pages);
  w.put_string(m.shm_name);
  w.put<uint8_t>(m.tpla);
  w.put_string(m.tpla_transform);
  w.put<uint8_t>(m.tpla_pd_separation);
  w.put(m.tpla_seed);
  w.put(m.tpla_slices);
  w.put(m.gpu_memory_fraction);
  w.put(m.reserve_bytes);
  w.put(m.cuda_graph_max_batch);
  return std::move(w.bytes());
}

WorkerInit decode_worker_init(const std::vector<char>& payload) {
  ByteReader r(payload);
  WorkerInit m;
  m.model_dir = r.get_string();
  m.variant = r.get_string();
  m.backend = r.get_string();
  m.device = r.get<int32_t>();
  m.page_size = r.get<int32_t>();
  m.num_pages = r.get<int64_t>();
  m.shm_name = r.get_string();
  m.tpla = r.get<uint8_t>() != 0;
  m.tpla_transform = r.get_string();
  m.tpla_pd_separation = r.get<uint8_t>() != 0;
  m.tpla_seed = r.get<uint64_t>();
  m.tpla_slices = r.get<int32_t>();
  m.gpu_memory_fraction = r.get<double>();
  m.reserve_bytes = r.get<int64_t>();
  m.cuda_graph_max_batch = r.get<int32_t>();
  if (!r.done()) throw ProtocolError("Init: trailing bytes");
  return m;
}

std::vector<char> encode(const WorkerReady& m) {
  ByteWriter w;
  w.put(m.rank);
  w.put(m.pid);
  w.put(m.weight_bytes);
  w.put(m.cache_bytes_per_token);
  w.put(m.cache_values_per_token_per_layer);
  w.put(m.num_pages);
  w.put_string(m.backend);
  return std::move(w.bytes());
}

WorkerReady decode_worker_ready(const std::vector<char>& payload) {
  ByteReader r(payload);
  WorkerReady m;
  m.rank = r.get<int32_t>();
  m.pid = r.get<int64_t>();
  m.weight_bytes = r.get<int64_t>();
  m.cache_bytes_per_token = r.get<int64_t>();
  m.cache_values_per_token_per_layer = r.get<int64_t>();
  m.num_pages = r.get<int64_t>();
  m.backend = r.get_string();
  if (!r.done()) throw ProtocolError("Ready: trailing bytes");
  return m;
}

namespace {

void write_step(ByteWriter& w, const StepBatch& m) {
  w.put(m.step);
  w.put_vector(m.tokens);
  w.put_vector(m.positions);
  w.put_vector(m.token_seq);
  w.put_vector(m.slots);
  w.put_vector(m.page_indptr);
  w.put_vector(m.page_indices);
  w.put_vector(m.logit_rows);
}

StepBatch read_step(ByteReader& r) {
  StepBatch m;
  m.step = r.get<int64_t>();
  m.tokens = r.get_vector<int32_t>();
  m.positions = r.get_vector<int32_t>();
  m.token_seq = r.get_vector<int32_t>();
  m.slots = r.get_vector<int32_t>();
  m.page_indptr = r.get_vector<int32_t>();
  m.page_indices = r.get_vector<int32_t>();
  m.logit_rows = r.get_vector<int32_t>();
  return m;
}

void write_sampling(ByteWriter& w, const SamplingBatch& m) {
  w.put_vector(m.rows);
  w.put_vector(m.penalty_indptr);
  w.put_vector(m.penalty_tokens);
  w.put_vector(m.penalty_counts);
}

SamplingBatch read_sampling(ByteReader& r) {
  SamplingBatch m;
  m.rows = r.get_vector<SamplingRow>();
  m.penalty_indptr = r.get_vector<int32_t>();
  m.penalty_tokens = r.get_vector<int32_t>();
  m.penalty_counts = r.get_vector<int32_t>();
  try {
    m.check();
  } catch (const std::invalid_argument& e) {
    throw ProtocolError(std::string("Step: ") + e.what());
  }
  return m;
}

}  // namespace

std::vector<char> encode(const StepBatch& m) {
  ByteWriter w;
  write_step(w, m);
  return std::move(w.bytes());
}

StepBatch decode_step_batch(const std::vector<char>& payload) {
  ByteReader r(payload);
  StepBatch m = read_step(r);
  if (!r.done()) throw ProtocolError("Step: trailing bytes");
  return m;
}

std::vector<char> encode_step_message(const StepBatch& step, StepReply reply,
                                      const SamplingBatch* sampling) {
  if (reply == StepReply::kTokens && sampling == nullptr)
    throw std::invalid_argument("a sampling step message needs its sampling batch");
  ByteWriter w;
  write_step(w, step);
  w.put(reply);
  if (reply == StepReply::kTokens) write_sampling(w, *sampling);
  return std::move(w.bytes());
}

StepMessage decode_step_message(const std::vector<char>& payload) {
  ByteReader r(payload);
  StepMessage m;
  m.step = read_step(r);
  m.reply = r.get<StepReply>();
  if (m.reply != StepReply::kAck && m.reply != StepReply::kTokens && m.reply != StepReply::kLogits)
    throw ProtocolError("Step: unknown reply kind");
  if (m.reply == StepReply::kTokens) {
    m.sampling = read_sampling(r);
    if (m.sampling.size() != int64_t(m.step.logit_rows.size()))
      throw ProtocolError("Step: sampling rows differ from logit rows");
  }
  if (!r.done()) throw ProtocolError("Step: trailing bytes");
  return m;
}

std::vector<char> encode(const SampledTokens& m) {
  ByteWriter w;
  w.put_vector(m.tokens);
  w.put_vector(m.logprobs);
  w.put_vector(m.top_indptr);
  w.put_vector(m.top_tokens);
  w.put_vector(m.top_logprobs);
  return std::move(w.bytes());
}

SampledTokens decode_sampled_tokens(const std::vector<char>& payload) {
  ByteReader r(payload);
  SampledTokens m;
  m.tokens = r.get_vector<int32_t>();
  m.logprobs = r.get_vector<float>();
  m.top_indptr = r.get_vector<int32_t>();
  m.top_tokens = r.get_vector<int32_t>();
  m.top_logprobs = r.get_vector<float>();
  if (!r.done()) throw ProtocolError("Tokens: trailing bytes");
  try {
    m.check(m.size());
  } catch (const std::invalid_argument& e) {
    throw ProtocolError(std::string("Tokens: ") + e.what());
  }
  return m;
}

}  // namespace mlra
