// Indexes one mmapped safetensors file (u64 LE header length, JSON header, data) into
// TensorInfos pointing into the mapping. Only F32, BF16 and F16 are accepted.
// Invariant: every returned tensor's [begin, end) byte range lies inside the data section and
// holds exactly numel * dtype_size bytes.
#pragma once

#include <string>
#include <vector>

#include "models/checkpoint.h"
#include "models/mapped_file.h"

namespace mlra {

std::vector<TensorInfo> index_safetensors(const MappedFile& file, const std::string& label);

}  // namespace mlra
