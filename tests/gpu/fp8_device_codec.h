// Device-side runs of the FP8 codec (kernels/fp8_e4m3.h) for the GPU tests: the header compiled
// by nvcc for the device must give the bits the host compiler's build gives, and both must agree
// with the hardware's own float -> E4M3 conversion (round to nearest even, saturating).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace mlra::gputest {

// Float32 bit patterns [begin, end) whose fp8_e4m3_encode on the device differs from
// __nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3); NaN inputs excluded (ours give 0, the
// hardware's NaN code is never written to a cache).
uint64_t fp8_encode_mismatches_vs_hardware(uint64_t begin, uint64_t end);

// fp8_quantize(x[i], scale[i]) on the device.
std::vector<uint8_t> fp8_quantize_on_device(const std::vector<float>& x,
                                            const std::vector<float>& scale);

}  // namespace mlra::gputest
