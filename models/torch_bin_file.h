// Indexes one mmapped PyTorch .bin (torch.save zip: <archive>/data.pkl, <archive>/data/<key>,
// <archive>/version) into TensorInfos pointing into the mapping; no tensor bytes are copied.
// data.pkl's CRC-32 is checked before it is parsed; the other members' are returned as regions
// for verify_checkpoint_checksums, which may split them over TP ranks.
// Invariant: every returned tensor's strided extent lies inside its storage entry's bytes.
#pragma once

#include <string>
#include <vector>

#include <cstddef>
#include <span>

#include "models/checkpoint.h"

namespace mlra {

struct TorchBinIndex {
  std::vector<TensorInfo> tensors;
  std::vector<ChecksummedRegion> regions;  // every zip member but data.pkl, in name order
};

// `bytes` (the mapped file) must outlive the result. `label` is the file name used in error
// messages and TensorInfo::file.
TorchBinIndex index_torch_bin(std::span<const std::byte> bytes, const std::string& label);

}  // namespace mlra
