// Read-only access to a HuggingFace MLRA checkpoint folder: config.json plus PyTorch .bin
// (zip + pickle, single or sharded with pytorch_model.bin.index.json) or safetensors (single or
// sharded with model.safetensors.index.json). Files are memory-mapped; a tensor is read (and
// converted to float32) only when asked for, and a slice reads only its own bytes, so a TP rank
// never touches the weights it does not own.
// Every failure is a CheckpointError whose one-line message names the file and the tensor.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "kernels/tensor.h"

namespace mlra {

struct CheckpointError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct TensorInfo {
  std::string name;
  std::string file;           // shard file name the tensor lives in
  DType dtype = DType::kF32;  // kF32, kBF16 or kF16
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;     // in elements
  const std::byte* data = nullptr;  // first element (storage base + storage offset), mmapped
  // Identifies the underlying storage ("<file>:<storage key>" or "<file>:@<byte offset>"): tied
  // weights (transformer.wte / lm_head) share one, so a loader can upload the matrix once.
  std::string storage_id;
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

// Bytes of a shard whose CRC-32 the file declares (a zip member of a torch.save .bin), checked by
// verify_checkpoint_checksums (models/checkpoint_integrity.h).
struct ChecksummedRegion {
  std::string where;  // "<file>: zip entry '<name>'"
  std::span<const std::byte> bytes;
  uint32_t crc32 = 0;
};

// A half-open index range [begin, end) along one dimension.
using Range = std::pair<int64_t, int64_t>;

// Which load-time integrity checks run. kVerify is the serving path's and every default; no
// config key reaches kSkip. kSkip exists only so `mlra-bench load` can time the same load with and
// without the checks in one run: it skips exactly the finiteness check of read_f32 here, and
// open_checked_checkpoint (models/model_loader.h) also skips shape validation and the CRC-32 pass.
enum class Integrity { kVerify, kSkip };

// (bytes_done, bytes_total, tensors_done) while shards are mapped and indexed.
using LoadProgress = std::function<void(uint64_t, uint64_t, size_t)>;

class Checkpoint {
 public:
  // Opens `dir`: finds the index or single weight file, maps every shard, parses every tensor's
  // metadata. Throws CheckpointError. `on_progress(bytes_done, bytes_total, tensors_done)` is
  // called while shards are indexed (may be empty). `integrity` kSkip: read_f32 does not check
  // finiteness (benchmarks only, see Integrity).
  static std::shared_ptr<Checkpoint> open(const std::filesystem::path& dir,
                                          const LoadProgress& on_progress = {},
                                          Integrity integrity = Integrity::kVerify);

  virtual ~Checkpoint() = default;
  virtual const std::filesystem::path& dir() const = 0;
  virtual std::vector<std::string> names() const = 0;  // sorted
  virtual bool has(const std::string& name) const = 0;
  virtual const TensorInfo& info(const std::string& name) const = 0;  // throws if absent
  virtual std::string format() const = 0;  // "pytorch-bin" or "safetensors"
  virtual std::vector<std::string> files() const = 0;
  virtual uint64_t total_bytes() const = 0;  // mapped bytes over all shards
  // Every region whose CRC-32 the shards declare, in file order (none for safetensors).
  virtual const std::vector<ChecksummedRegion>& checksummed_regions() const;

  // The whole tensor, converted to float32, row-major contiguous. Every value read is checked
  // finite (unless opened with Integrity::kSkip): a NaN or infinity throws CheckpointError naming
  // the tensor and the element.
  std::vector<float> read_f32(const std::string& name) const;
  // A hyper-rectangle: one Range per dimension; result is row-major contiguous float32.
  std::vector<float> read_f32(const std::string& name, const std::vector<Range>& ranges) const;

 protected:
  bool check_finite_ = true;
};

}  // namespace mlra
