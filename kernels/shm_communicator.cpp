// Shared-memory communicator. Segment: header {magic, size, slot_bytes, barrier} then
// 2 x size slots. Chunk k of a reduction uses slot set k % 2: every rank copies its chunk into
// its slot, waits at the barrier, then sums all slots in rank order into its buffer. A rank can
// only overwrite set k % 2 again (chunk k + 2) after the barrier of chunk k + 1, which every rank
// passes only after reading chunk k, so one barrier per chunk suffices.
#include "kernels/shm_communicator.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>

namespace mlra {
namespace {

constexpr uint32_t kShmMagic = 0x4d4c5348;  // "MLSH"
constexpr size_t kAlign = 64;

struct ShmHeader {
  uint32_t magic;
  int32_t size;
  uint64_t slot_bytes;
  pthread_barrier_t barrier;
};

size_t header_bytes() {
  return (sizeof(ShmHeader) + kAlign - 1) / kAlign * kAlign;
}
size_t segment_bytes(int size, size_t slot_bytes) {
  return header_bytes() + 2 * size_t(size) * slot_bytes;
}

std::string errno_text(const std::string& what) {
  return what + ": " + std::strerror(errno);
}

std::string unique_name() {
  static std::atomic<uint64_t> counter{0};
  const auto now = std::chrono::steady_clock::now().time_since_epoch().count();
  return "/mlra-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) + "-" +
         std::to_string(uint64_t(now) % 1000000007ULL);
}

class ShmCommunicator final : public Communicator {
 public:
  ShmCommunicator(void* base, size_t bytes, int rank)
      : base_(base), bytes_(bytes), header_(static_cast<ShmHeader*>(base)), rank_(rank) {}
  ~ShmCommunicator() override { ::munmap(base_, bytes_); }

  int rank() const override { return rank_; }
  int size() const override { return header_->size; }

  void all_reduce_sum(void* data, int64_t n, DType dtype) override {
    if (dtype != DType::kF32) throw std::invalid_argument("shm communicator: float32 only");
    float* buf = static_cast<float*>(data);
    const int64_t chunk = int64_t(header_->slot_bytes / sizeof(float));
    for (int64_t off = 0; off < n; off += chunk) {
      const int64_t m = std::min(chunk, n - off);
      const int set = int(parity_++ & 1);
      std::memcpy(slot(set, rank_), buf + off, size_t(m) * sizeof(float));
      wait();
      float* out = buf + off;
      std::memcpy(out, slot(set, 0), size_t(m) * sizeof(float));
      for (int r = 1; r < size(); ++r) {
        const float* in = slot(set, r);
        for (int64_t i = 0; i < m; ++i) out[i] += in[i];
      }
    }
  }

 private:
  float* slot(int set, int r) const {
    char* p = static_cast<char*>(base_) + header_bytes() +
              (size_t(set) * size_t(header_->size) + size_t(r)) * header_->slot_bytes;
    return reinterpret_cast<float*>(p);
  }
  void wait() {
    const int rc = pthread_barrier_wait(&header_->barrier);
    if (rc != 0 && rc != PTHREAD_BARRIER_SERIAL_THREAD)
      throw ShmError("shm communicator: barrier failed");
  }

  void* base_;
  size_t bytes_;
  ShmHeader* header_;
  int rank_;
  uint64_t parity_ = 0;
};

}  // namespace

ShmSegment::ShmSegment(int size, size_t slot_bytes) : name_(unique_name()) {
  if (size < 1) throw ShmError("shm segment: size must be >= 1");
  slot_bytes = std::max<size_t>(slot_bytes / kAlign * kAlign, kAlign);
  bytes_ = segment_bytes(size, slot_bytes);
  const int fd = ::shm_open(name_.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  if (fd < 0) throw ShmError(errno_text("shm_open " + name_));
  linked_ = true;
  if (::ftruncate(fd, off_t(bytes_)) != 0) {
    const std::string why = errno_text("ftruncate " + name_);
    ::close(fd);
    unlink();
    throw ShmError(why);
  }
  base_ = ::mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  if (base_ == MAP_FAILED) {
    base_ = nullptr;
    unlink();
    throw ShmError(errno_text("mmap " + name_));
  }
  auto* h = static_cast<ShmHeader*>(base_);
  h->size = size;
  h->slot_bytes = slot_bytes;
  pthread_barrierattr_t attr;
  pthread_barrierattr_init(&attr);
  pthread_barrierattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
  const int rc = pthread_barrier_init(&h->barrier, &attr, unsigned(size));
  pthread_barrierattr_destroy(&attr);
  if (rc != 0) {
    ::munmap(base_, bytes_);
    base_ = nullptr;
    unlink();
    throw ShmError("shm segment: pthread_barrier_init failed");
  }
  std::atomic_thread_fence(std::memory_order_release);
  h->magic = kShmMagic;
}

ShmSegment::~ShmSegment() {
  unlink();
  if (base_) ::munmap(base_, bytes_);
}

void ShmSegment::unlink() {
  if (linked_) ::shm_unlink(name_.c_str());
  linked_ = false;
}

std::unique_ptr<Communicator> open_shm_communicator(const std::string& name, int rank, int size) {
  const int fd = ::shm_open(name.c_str(), O_RDWR, 0);
  if (fd < 0) throw ShmError(errno_text("shm_open " + name));
  ShmHeader probe;
  if (::pread(fd, &probe, sizeof(probe), 0) != ssize_t(sizeof(probe))) {
    ::close(fd);
    throw ShmError("shm segment " + name + ": too short");
  }
  if (probe.magic != kShmMagic || probe.size != size || rank < 0 || rank >= size) {
    ::close(fd);
    throw ShmError("shm segment " + name + ": not initialised for " + std::to_string(size) +
                   " ranks (rank " + std::to_string(rank) + ")");
  }
  const size_t bytes = segment_bytes(size, probe.slot_bytes);
  void* base = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  if (base == MAP_FAILED) throw ShmError(errno_text("mmap " + name));
  return std::make_unique<ShmCommunicator>(base, bytes, rank);
}

}  // namespace mlra
