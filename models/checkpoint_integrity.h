// Load-time integrity of checkpoint bytes: the CRC-32 (zlib) that torch.save's zip container
// declares for every member, computed over chunks in parallel and joined with crc32_combine, the
// split of that work over the TP ranks (each verifies its share, together all of it, once), and
// running it beside the weight loading.
// Finiteness of the weights is checked where they are converted (Checkpoint::read_f32).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "models/checkpoint.h"

namespace mlra {

uint32_t crc32_of(std::span<const std::byte> bytes);  // one thread

// Throws CheckpointError "<where>: CRC-32 mismatch ..." when `bytes` do not hash to `expected`.
void check_crc32(std::span<const std::byte> bytes, uint32_t expected, const std::string& where);

// The regions of share `part` of `parts`: regions go, largest first, to the share with the fewest
// bytes so far (ties to the lowest part), so every rank computes the same split from the same list.
std::vector<size_t> regions_of_part(const std::vector<ChecksummedRegion>& regions, int part,
                                    int parts);

// Verifies share `part` of `parts` of the regions with `threads` threads (0: the hardware's
// threads divided by `parts`, at least 1). Throws CheckpointError naming the first bad region.
// When `stop` becomes true the threads finish their current chunk and it returns unverified.
void verify_regions(const std::vector<ChecksummedRegion>& regions, int part = 0, int parts = 1,
                    int threads = 0, const std::atomic<bool>* stop = nullptr);

// verify_regions over every checksummed region of `ckpt` (safetensors files declare none).
void verify_checkpoint_checksums(const Checkpoint& ckpt, int part = 0, int parts = 1,
                                 int threads = 0);

// verify_checkpoint_checksums on a background thread, so the CRC-32 pass overlaps loading the
// weights (which reads the same mapped pages: the file comes from disk once). wait() returns when
// it is done and throws its CheckpointError; the destructor stops it early and joins.
class BackgroundChecksums {
 public:
  BackgroundChecksums(std::shared_ptr<const Checkpoint> ckpt, int part, int parts);
  ~BackgroundChecksums();
  BackgroundChecksums(const BackgroundChecksums&) = delete;
  BackgroundChecksums& operator=(const BackgroundChecksums&) = delete;
  void wait();

 private:
  std::shared_ptr<const Checkpoint> ckpt_;
  std::atomic<bool> stop_{false};
  std::exception_ptr error_;
  std::thread thread_;
};

}  // namespace mlra
