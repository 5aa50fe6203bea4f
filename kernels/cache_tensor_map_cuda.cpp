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

bool make_fp8_code_map(const AttentionParams& p, CUtensorMap& codes) {
  auto encode = tensor_map_encoder();
  if (!encode || !p.fp8_cache) return false;
  const Fp8CacheLayout& l = p.fp8;
  const int64_t ps = int64_t(1) << p.page_shift;
  const cuuint64_t pages = cuuint64_t(p.cache_rows / ps), page_bytes = cuuint64_t(l.page_bytes(ps));
  const cuuint32_t elem_strides[3] = {1, 1, 1};
  const cuuint64_t code_dims[3] = {cuuint64_t(l.quantized()), cuuint64_t(ps), pages};
  const cuuint64_t code_strides[2] = {cuuint64_t(l.quantized()), page_bytes};
  const cuuint32_t code_box[3] = {128, cuuint32_t(p.box_rows), 1};
  return encode(&codes, CU_TENSOR_MAP_DATA_TYPE_UINT8, 3, const_cast<void*>(p.cache), code_dims,
                code_strides, code_box, elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
                CU_TENSOR_MAP_SWIZZLE_NONE, CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

bool make_fp8_cache_maps(const AttentionParams& p, CUtensorMap& codes, CUtensorMap& tail) {
  auto encode = tensor_map_encoder();
  if (!encode || !make_fp8_code_map(p, codes) || p.fp8.tail == 0) return false;
  const Fp8CacheLayout& l = p.fp8;
  const int64_t ps = int64_t(1) << p.page_shift;
  const cuuint64_t pages = cuuint64_t(p.cache_rows / ps), page_bytes = cuuint64_t(l.page_bytes(ps));
  const cuuint32_t elem_strides[3] = {1, 1, 1};
  void* tail_base = static_cast<char*>(const_cast<void*>(p.cache)) + l.tail_at(ps, 0);
  const cuuint64_t tail_dims[3] = {cuuint64_t(l.tail), cuuint64_t(ps), pages};
  const cuuint64_t tail_strides[2] = {cuuint64_t(2 * l.tail), page_bytes};
  const cuuint32_t tail_box[3] = {64, cuuint32_t(p.box_rows), 1};
  return encode(&tail, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 3, tail_base, tail_dims, tail_strides,
                tail_box, elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

}  // namespace mlra::cuda
