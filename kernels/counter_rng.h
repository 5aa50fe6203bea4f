// The sampler's only randomness: a counter-based uniform keyed by (seed, generated-token index).
// Header-only and usable from host and device code, so the CPU and CUDA samplers draw the very
// same double for the same key (integer mixing, then an exact 53-bit conversion).
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define MLRA_HOST_DEVICE __host__ __device__
#else
#define MLRA_HOST_DEVICE
#endif

namespace mlra {

MLRA_HOST_DEVICE inline uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Uniform double in [0, 1) from (seed, index).
MLRA_HOST_DEVICE inline double uniform_from(uint64_t seed, uint64_t index) {
  const uint64_t bits = splitmix64(splitmix64(seed) ^ splitmix64(index + 0x51ed2701f3a5c7b9ULL));
  return static_cast<double>(bits >> 11) * 0x1.0p-53;
}

}  // namespace mlra
