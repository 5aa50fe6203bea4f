// See cache_tensor_map.h.
#include "kernels/cache_tensor_map.h"

#include <cudaTypedefs.h>

namespace mlra::cuda {
namespace {

// cuTensorMapEncodeTiled through the runtime's driver entry point (no libcuda link needed);
// null when the driver does not offer it.
PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static const PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult found{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault,
                                         &found) != cudaSuccess ||
        found != cudaDriverEntryPointSuccess)
      f = nullptr;
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(f);
  }();
  return fn;
}

}  // namespace

bool make_cache_map(const AttentionParams& p, CUtensorMap& map) {
  auto encode = tensor_map_encoder();
  if (!encode) return false;
  const cuuint64_t dims[2] = {cuuint64_t(p.row_width), cuuint64_t(p.cache_rows)};
  const cuuint64_t strides[1] = {cuuint64_t(p.row_width) * 2};
  const cuuint32_t box[2] = {64, cuuint32_t(p.box_rows)};
  const cuuint32_t elem_strides[2] = {1, 1};
  return encode(&map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, const_cast<void*>(p.cache), dims,
                strides, box, elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
                CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

}  // namespace mlra::cuda
