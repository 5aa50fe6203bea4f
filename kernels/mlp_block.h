// The MLP half of a one-token decode layer, up to its all-reduce, in one persistent launch:
// acc += delta; h = RMSNorm(acc) * ln2; a = silu(h . W1^T) * (h . W2^T); y = a . proj^T.
// A cooperative grid (every block resident) runs the norm and the SwiGLU GEMV, meets at a grid
// barrier, then runs the down GEMV, so the launch boundary between the two products (a drained
// last wave, then a fresh DRAM latency for the next kernel's first weights) disappears: each
// block's down-projection rows are copied into its shared memory while the SwiGLU product
// streams, and its first fc12 loads are issued before pdl_wait() (weights never change).
// Rounding points as in the composition (add_rms_norm, linear_swiglu, linear): h bf16, each
// SwiGLU product bf16 before the silu, a and y bf16; f32 sums in a fixed order (deterministic).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <map>

#include "kernels/tensor.h"

namespace mlra::cuda {

// One row (M = 1). delta [1, d] bf16 (may alias y); acc [1, d] f32; ln2 [d] bf16; w12 [2F, d]
// bf16 = [W1; W2]; proj [d, F] bf16 (ld a multiple of 8, pad past F never read into y); h [1, d],
// a [1, F] bf16 outputs (the composition's intermediates); y [1, d] bf16.
struct MlpBlockOperands {
  MatView delta, acc;
  const void* ln2 = nullptr;
  DType ln2_dtype = DType::kBF16;
  float eps = 0.0f;
  MatView w12, proj, h, a, y;
};

// Owns what the persistent kernel keeps between launches on one device: two barrier words (a
// generation-counted grid barrier that leaves its counter at zero, so graph replays need no
// reset) and whether the runtime takes a cooperative launch with the PDL attribute. One per
// backend: launches sharing the words must be ordered (one stream).
class MlpBlockKernel {
 public:
  explicit MlpBlockKernel(int device);
  ~MlpBlockKernel();
  MlpBlockKernel(const MlpBlockKernel&) = delete;
  MlpBlockKernel& operator=(const MlpBlockKernel&) = delete;

  // True when launch() takes these operands: one row, the dtypes above, 16-byte aligned rows
  // (delta, acc, ln2, w12, proj, h, a; a's ld a multiple of 8), d % 8 == 0, and d, F small
  // enough for the shared-memory rows (d <= 8192, F <= 16384).
  bool supports(const MlpBlockOperands& o) const;
  // Enqueues the kernel on `stream`; requires supports(o). Graph capturable.
  void launch(const MlpBlockOperands& o, cudaStream_t stream);
  // False only while `stream` records and the runtime refused to record a cooperative launch
  // (asked once, at construction): the caller composes instead.
  bool runs_on(cudaStream_t stream) const;
  // Whether launches carry the PDL attribute beside the cooperative one (asked as above).
  bool uses_pdl() const { return pdl_; }
  bool capturable() const { return capturable_; }

 private:
  struct Shape {
    int grid = 0, preload_rows = 0;
    size_t smem = 0;
  };
  Shape shape_for(int64_t d, int64_t f, int64_t proj_ld);

  int device_ = 0;
  unsigned* barrier_ = nullptr;  // [count, generation]
  bool pdl_ = false, capturable_ = false;
  int sms_ = 0;
  size_t max_smem_ = 0;                  // dynamic shared memory a block may use
  std::map<size_t, int> blocks_per_sm_;  // by dynamic shared memory bytes
};

}  // namespace mlra::cuda
