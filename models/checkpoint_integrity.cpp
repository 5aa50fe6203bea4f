// CRC-32 verification of checkpoint regions: zlib's crc32 over 32 MiB chunks on a few threads,
// joined per region with crc32_combine (the same value one pass gives), and a deterministic
// byte-balanced split of the regions over TP ranks.
#include "models/checkpoint_integrity.h"

#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <numeric>
#include <thread>

#include <spdlog/spdlog.h>

namespace mlra {
namespace {

constexpr uint64_t kChunkBytes = uint64_t(32) << 20;

struct Chunk {
  size_t region;
  uint64_t offset, size;
};

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

CheckpointError mismatch(const std::string& where, uint32_t expected, uint32_t actual) {
  return CheckpointError(where + ": CRC-32 mismatch (the zip declares " + hex32(expected) +
                         ", the bytes hash to " + hex32(actual) +
                         "): the file is corrupt or was changed after it was saved");
}

}  // namespace

uint32_t crc32_of(std::span<const std::byte> bytes) {
  uLong crc = crc32(0L, Z_NULL, 0);
  const auto* p = reinterpret_cast<const Bytef*>(bytes.data());
  for (uint64_t done = 0; done < bytes.size();) {
    const uint64_t n = std::min<uint64_t>(bytes.size() - done, kChunkBytes);
    crc = crc32(crc, p + done, static_cast<uInt>(n));
    done += n;
  }
  return static_cast<uint32_t>(crc);
}

void check_crc32(std::span<const std::byte> bytes, uint32_t expected, const std::string& where) {
  const uint32_t actual = crc32_of(bytes);
  if (actual != expected) throw mismatch(where, expected, actual);
}

std::vector<size_t> regions_of_part(const std::vector<ChecksummedRegion>& regions, int part,
                                    int parts) {
  if (parts < 1 || part < 0 || part >= parts)
    throw std::invalid_argument("regions_of_part: part " + std::to_string(part) + " of " +
                                std::to_string(parts));
  std::vector<size_t> order(regions.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return regions[a].bytes.size() > regions[b].bytes.size();
  });
  std::vector<uint64_t> load(size_t(parts), 0);
  std::vector<size_t> mine;
  for (size_t i : order) {
    const size_t p = size_t(std::min_element(load.begin(), load.end()) - load.begin());
    load[p] += regions[i].bytes.size();
    if (int(p) == part) mine.push_back(i);
  }
  std::sort(mine.begin(), mine.end());
  return mine;
}

void verify_regions(const std::vector<ChecksummedRegion>& regions, int part, int parts, int threads,
                    const std::atomic<bool>* stop) {
  const std::vector<size_t> mine = regions_of_part(regions, part, parts);
  std::vector<Chunk> chunks;
  for (size_t r : mine) {
    const uint64_t size = regions[r].bytes.size();
    if (size == 0) chunks.push_back({r, 0, 0});
    for (uint64_t off = 0; off < size; off += kChunkBytes)
      chunks.push_back({r, off, std::min(kChunkBytes, size - off)});
  }
  if (threads <= 0) threads = std::max(1, int(std::thread::hardware_concurrency()) / parts);
  threads = std::max(1, std::min<int>(threads, int(chunks.size())));
  std::vector<uint32_t> crcs(chunks.size());
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t c; (c = next.fetch_add(1)) < chunks.size();) {
      if (stop && *stop) return;
      const Chunk& k = chunks[c];
      crcs[c] = crc32_of(regions[k.region].bytes.subspan(k.offset, k.size));
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  if (stop && *stop) return;
  // Chunks of one region are consecutive and in order.
  for (size_t c = 0; c < chunks.size();) {
    const size_t r = chunks[c].region;
    uLong crc = crcs[c];
    for (++c; c < chunks.size() && chunks[c].region == r; ++c)
      crc = crc32_combine(crc, crcs[c], static_cast<z_off_t>(chunks[c].size));
    if (static_cast<uint32_t>(crc) != regions[r].crc32)
      throw mismatch(regions[r].where, regions[r].crc32, static_cast<uint32_t>(crc));
  }
}

void verify_checkpoint_checksums(const Checkpoint& ckpt, int part, int parts, int threads) {
  verify_regions(ckpt.checksummed_regions(), part, parts, threads);
}

BackgroundChecksums::BackgroundChecksums(std::shared_ptr<const Checkpoint> ckpt, int part,
                                         int parts)
    : ckpt_(std::move(ckpt)) {
  // One hardware thread stays with the loader.
  const int threads =
      std::max(1, (int(std::thread::hardware_concurrency()) - parts) / std::max(parts, 1));
  thread_ = std::thread([this, part, parts, threads] {
    const auto t0 = std::chrono::steady_clock::now();
    try {
      verify_regions(ckpt_->checksummed_regions(), part, parts, threads, &stop_);
    } catch (...) {
      error_ = std::current_exception();
    }
    spdlog::debug(
        "{}: CRC-32 of share {} of {} checked on {} threads in {:.0f} ms", ckpt_->dir().string(),
        part, parts, threads,
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  });
}

BackgroundChecksums::~BackgroundChecksums() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

void BackgroundChecksums::wait() {
  if (thread_.joinable()) thread_.join();
  if (error_) std::rethrow_exception(error_);
}

}  // namespace mlra
