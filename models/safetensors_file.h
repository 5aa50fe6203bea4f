// Indexes one mapped safetensors file (u64 LE header length, JSON header, data) into
// TensorInfos pointing into the mapping. Only F32, BF16 and F16 are accepted.
// Invariant: every returned tensor's [begin, end) byte range lies inside the data section and
// holds exactly numel * dtype_size bytes.
#pragma once

#include <string>
#include <vector>

#include <cstddef>
#include <span>

#include "models/checkpoint.h"

namespace mlra {

// `bytes` (the mapped file) must outlive the result; `label` names the file in errors.
std::vector<TensorInfo> index_safetensors(std::span<const std::byte> bytes,
                                          const std::string& label);

}  // namespace mlra
