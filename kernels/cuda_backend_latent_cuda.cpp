// The CUDA backend's latent attention ops: the fused one-token kernels (latent_projections.h:
// queries, up projection), the fused latent cache write, the batched row copy of the composed
// query path, and the W_UK layouts they take. Where a fused kernel cannot take the shapes, the
// base class's composition runs.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <vector>

#include "kernels/backend.h"
#include "kernels/cuda_backend_impl.h"
#include "kernels/cuda_check.h"
#include "kernels/cuda_ops.h"
#include "kernels/latent_projections.h"

namespace mlra::cuda_backend_detail {
namespace {

bool aligned16(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0;
}
bool all_bf16(std::initializer_list<MatView> views) {
  for (const MatView& v : views)
    if (v.dtype != DType::kBF16) return false;
  return true;
}
const __nv_bfloat16* bf16_ptr(const MatView& v) {
  return static_cast<const __nv_bfloat16*>(v.data);
}

// Unit counts and widths the fused latent kernels may take (the kernels check the rest).
bool fused_latent_shape(int64_t n_units, int64_t width) {
  return n_units >= cuda::kMinFusedLatentUnits && n_units <= cuda::kMaxLatentUnits &&
         width % 8 == 0;
}

// Units the fused latent kernels take: fused_latent_shape, bf16 weights, and for the queries
// kernel (need_uk) W_UK as w_uk ([n_heads, dn, width], the layout it reads).
bool fused_latent_units(const std::vector<Backend::LatentUnitView>& units, int64_t dn,
                        int64_t width, bool need_uk, cuda::LatentProjParams& p) {
  if (!fused_latent_shape(int64_t(units.size()), width)) return false;
  for (size_t i = 0; i < units.size(); ++i) {
    const auto& u = units[i];
    if ((need_uk && (u.w_uk.data == nullptr || u.w_uk.dtype != DType::kBF16)) ||
        u.w_uv.dtype != DType::kBF16 || u.n_heads <= 0)
      return false;
    p.unit[i] = {static_cast<const __nv_bfloat16*>(u.w_uk.data),
                 static_cast<const __nv_bfloat16*>(u.w_uv.data), int32_t(u.head0),
                 int32_t(u.n_heads), int32_t(u.v0)};
    p.n_virt = std::max<int32_t>(p.n_virt, int32_t(u.v0 + u.n_heads));
  }
  p.n_units = int32_t(units.size());
  p.dn = int32_t(dn);
  p.width = int32_t(width);
  return true;
}

}  // namespace

// One 3D copy where a view's rows lie a whole number of strides apart (the heads of a token row,
// rows = tokens), else one 2D copy per batch item. Graph capturable.
bool CudaBackend::copy_rows_batched(const MatView& src, int64_t src_stride, const MatView& dst,
                                    int64_t dst_stride, int64_t batch) {
  activate();
  MLRA_REQUIRE(src.dtype == dst.dtype && src.rows == dst.rows && src.cols == dst.cols,
               "copy_rows_batched: src and dst must have one dtype and shape");
  if (batch <= 0 || src.rows == 0 || src.cols == 0) return true;
  const size_t es = dtype_size(src.dtype), w = size_t(src.cols) * es;
  const auto whole = [&](const MatView& v, int64_t stride) {
    return stride >= v.cols && v.ld % stride == 0 && v.ld / stride >= batch;
  };
  if (whole(src, src_stride) && whole(dst, dst_stride)) {
    cudaMemcpy3DParms p{};
    p.srcPtr =
        make_cudaPitchedPtr(src.data, size_t(src_stride) * es, w, size_t(src.ld / src_stride));
    p.dstPtr =
        make_cudaPitchedPtr(dst.data, size_t(dst_stride) * es, w, size_t(dst.ld / dst_stride));
    p.extent = make_cudaExtent(w, size_t(batch), size_t(src.rows));
    p.kind = cudaMemcpyDeviceToDevice;
    MLRA_CUDA_CHECK(cudaMemcpy3DAsync(&p, stream()));
    return true;
  }
  for (int64_t i = 0; i < batch; ++i)
    MLRA_CUDA_CHECK(cudaMemcpy2DAsync(
        static_cast<char*>(dst.data) + i * dst_stride * int64_t(es), size_t(dst.ld) * es,
        static_cast<const char*>(src.data) + i * src_stride * int64_t(es), size_t(src.ld) * es, w,
        size_t(src.rows), cudaMemcpyDeviceToDevice, stream()));
  return true;
}

void CudaBackend::latent_cache_write(const MatView& row, const Tensor& w, int64_t groups, float eps,
                                     float scale, int64_t rot_dim, const int32_t* positions,
                                     float rope_base, const int32_t* slots,
                                     const PagedCacheView& cache) {
  activate();
  MLRA_REQUIRE(groups == 0 || w.numel() == row.cols - rot_dim, "latent_cache_write weight size");
  cuda::launch_latent_cache_write(row, w.data, w.dtype, groups, eps, scale, rot_dim, positions,
                                  rope_base, slots, cache, stream());
}

void CudaBackend::latent_queries(const MatView& q_nope, const MatView& cq, const MatView& rope_w,
                                 const std::vector<LatentUnitView>& units, int64_t dn, int64_t dr,
                                 int64_t width, const int32_t* positions, float rope_base,
                                 const MatView& qv) {
  activate();
  // One-token steps only: at 2..8 tokens the composition measured faster than fusing.
  cuda::LatentProjParams p;
  const bool ok = q_nope.rows == 1 && fused_latent_units(units, dn, width, true, p) &&
                  all_bf16({q_nope, cq, rope_w, qv}) && cq.cols % 8 == 0 && aligned16(cq.data) &&
                  rope_w.ld % 8 == 0 && aligned16(rope_w.data) && rope_w.rows % dr == 0 &&
                  dr % 2 == 0;
  if (ok) {
    p.heads = int32_t(rope_w.rows / dr);
    p.dr = int32_t(dr);
    p.r_q = int32_t(cq.cols);
    p.q_nope = bf16_ptr(q_nope);
    p.cq = bf16_ptr(cq);
    p.rope_w = bf16_ptr(rope_w);
    p.rope_ld = rope_w.ld;
    p.positions = positions;
    p.rope_base = double(rope_base);
    p.qv = static_cast<__nv_bfloat16*>(qv.data);
  }
  if (ok && cuda::latent_projections_support(p)) return cuda::launch_latent_queries(p, stream());
  if (!latent_uk_t_)  // units hold w_uk only: at 2..8 rows its product goes to cuBLAS
    return Backend::latent_queries(q_nope, cq, rope_w, units, dn, dr, width, positions, rope_base,
                                   qv);
  // Composed: the tensor-core GEMV takes W_UK only as w_uk_t, so 2..gemv_max_rows rows use that
  // copy where the unit has it. Other row counts (the FMA GEMV at one row, cuBLAS past the
  // GEMV's rows) take either layout and keep w_uk where the unit has both.
  std::vector<LatentUnitView> picked = units;
  const bool mma_rows = q_nope.rows >= 2 && q_nope.rows <= gemv_max_rows_;
  for (auto& u : picked)
    if (!mma_rows && u.w_uk.data != nullptr) u.w_uk_t = Tensor{};
  Backend::latent_queries(q_nope, cq, rope_w, picked, dn, dr, width, positions, rope_base, qv);
}

// Kernel option latent_uk_t 0: w_uk only (the base class's answer). 1: w_uk_t always (the
// composition's 2..8-row products run on the tensor-core GEMV), w_uk as well where the one-token
// fused kernel may run (its layout). The memory the copy costs per layer is listed at
// LatentAttention::Unit (models/latent_attention.h).
Backend::LatentUkLayouts CudaBackend::latent_uk_layouts(int64_t n_units, int64_t width) const {
  if (!latent_uk_t_) return Backend::latent_uk_layouts(n_units, width);
  return {fused_latent_shape(n_units, width), true};
}

void CudaBackend::latent_up_project(const MatView& z, const std::vector<LatentUnitView>& units,
                                    int64_t dn, int64_t width, float alpha, const MatView& o) {
  activate();
  cuda::LatentProjParams p;  // one-token steps only, as latent_queries
  const bool ok = z.rows == 1 && fused_latent_units(units, dn, width, false, p) &&
                  all_bf16({z, o}) && aligned16(z.data) && o.cols % dn == 0;
  if (!ok) return Backend::latent_up_project(z, units, dn, width, alpha, o);
  p.heads = int32_t(o.cols / dn);
  p.z = bf16_ptr(z);
  p.o = static_cast<__nv_bfloat16*>(o.data);
  p.alpha = alpha;
  cuda::launch_latent_up(p, stream());
}

}  // namespace mlra::cuda_backend_detail
