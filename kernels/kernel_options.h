// Kernel choices of the CUDA backend: one value handed to make_cuda_backend() when a rank's
// backend is made, and from there to every kernel family. The defaults are the measured winners;
// a field exists only where a measured case favours another value (kernels/README.md, "Kernel
// options", names the case). Settable per test and per benchmark; the server config carries it
// under the key "kernels" (engine/kernel_options_json.h).
#pragma once

#include <string>

namespace mlra {

struct KernelOptions {
  static constexpr int kMaxGemvRows = 8;      // the GEMV's row limit (kernels/gemv.h)
  static constexpr int kMaxKvSplitPerSm = 2;  // K/V decode CTAs resident per SM

  // Most rows a linear may have to go to our small-M GEMV instead of cuBLAS (0: cuBLAS only):
  // one row to the FMA kernel, 2..8 rows to the tensor-core kernel; linear_swiglu fuses SwiGLU
  // into the GEMV for the same row counts.
  int gemv_max_rows = 8;
  // W_UK^T per head beside W_UK (Backend::latent_uk_layouts): 1 keeps the copy, so the latent
  // query product of 2..gemv_max_rows-token steps runs on the tensor-core GEMV instead of cuBLAS;
  // 0 keeps W_UK only. Default 0 until measured on a GPU.
  int latent_uk_t = 0;
  // Split-KV target of the K/V decode kernel in CTAs per SM; 0: one per SM unless that leaves
  // SMs idle (kv_split_target in kernels/kv_decode_attention.cu).
  int kv_split_per_sm = 0;
  // The MLP half of one-token decode layers (Backend::mlp_block): 0 composes add_rms_norm, the
  // SwiGLU GEMV and the down GEMV (three launches); 1 runs them as one cooperative persistent
  // kernel (kernels/mlp_block.h).
  int mlp_block = 0;
  // The front of the attention half of one-token decode layers (Backend::attn_block, not TPLA):
  // 0 composes the x product, the c_q norm, the q_nope product, the virtual queries and the
  // cache entry (five launches or more); 1 runs them as one cooperative persistent kernel
  // (kernels/attn_block.h).
  int attn_block = 0;
  // Products whose K % 8 != 0 (the MLP down-projection at most TP degrees): 0 sends them to
  // cuBLAS (over the padded row pitch, ld > K); 1 runs them on the GEMV's K tail (kernels/gemv.h).
  // Products with K % 8 == 0 take the GEMV under either value.
  int gemv_k_tail = 0;

  bool operator==(const KernelOptions&) const = default;
};

// Empty when every field is in range, else "<field> must be ..." for the first one that is not.
std::string kernel_options_error(const KernelOptions& options);

}  // namespace mlra
