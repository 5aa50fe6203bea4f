// Restricted unpickler for the data.pkl of a torch.save'd state_dict (protocol 2, as torch.save
// writes; protocol 4's FRAME/STACK_GLOBAL/MEMOIZE/SHORT_BINUNICODE also accepted). It interprets
// only the opcodes a state_dict uses and an allow-list of globals (OrderedDict, tensor/parameter
// rebuild functions, Float/BFloat16/Half storage types); nothing is ever executed or imported.
// Invariant: every other opcode or global, and any input past the depth/size limits, throws
// CheckpointError naming it; the result is plain metadata, data bytes stay in the zip.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "kernels/tensor.h"

namespace mlra {

struct PickledStorage {
  std::string key;  // entry name under <archive>/data/
  DType dtype = DType::kF32;
  int64_t numel = 0;  // elements, as the persistent id declares
};

struct PickledTensor {
  std::string name;  // state_dict key
  PickledStorage storage;
  int64_t storage_offset = 0;  // elements
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;  // elements
};

// Limits against hostile input; real state_dict pickles stay far below them.
struct PickleLimits {
  int max_depth = 64;            // container nesting and MARK nesting
  size_t max_stack = 1u << 20;   // values on the stack
  size_t max_values = 1u << 22;  // values created in total
  size_t max_memo = 1u << 20;    // memo entries
};

// Parses the pickle into its state_dict entries, in pickle order. `label` prefixes every error.
// Checks that every tensor's elements lie inside the storage's declared numel.
std::vector<PickledTensor> unpickle_state_dict(std::span<const std::byte> pickle,
                                               const std::string& label,
                                               const PickleLimits& limits = {});

}  // namespace mlra
