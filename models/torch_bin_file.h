// Indexes one mmapped PyTorch .bin (torch.save zip: <archive>/data.pkl, <archive>/data/<key>,
// <archive>/version) into TensorInfos pointing into the mapping; no tensor bytes are copied.
// Invariant: every returned tensor's strided extent lies inside its storage entry's bytes.
#pragma once

#include <string>
#include <vector>

#include "models/checkpoint.h"
#include "models/mapped_file.h"

namespace mlra {

// `label` is the file name used in error messages and TensorInfo::file.
std::vector<TensorInfo> index_torch_bin(const MappedFile& file, const std::string& label);

}  // namespace mlra
