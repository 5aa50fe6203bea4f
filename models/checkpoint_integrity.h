// Load-time integrity of checkpoint bytes: the CRC-32 (zlib) that torch.save's zip container
// declares for every member, computed over chunks in parallel and joined with crc32_combine, and
// the split of that work over the TP ranks (each verifies its share, together all of it, once).
// Finiteness of the weights is checked where they are converted (Checkpoint::read_f32).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
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
void verify_regions(const std::vector<ChecksummedRegion>& regions, int part = 0, int parts = 1,
                    int threads = 0);

// verify_regions over every checksummed region of `ckpt` (safetensors files declare none).
void verify_checkpoint_checksums(const Checkpoint& ckpt, int part = 0, int parts = 1,
                                 int threads = 0);

}  // namespace mlra
