// Defaults of the optional Backend capabilities: a backend that cannot record says so clearly.
#include "kernels/backend.h"

#include <stdexcept>

namespace mlra {

void Backend::begin_capture() {
  throw std::logic_error("backend " + name() + " cannot record ops (supports_capture() is false)");
}

void Backend::rms_norm_groups(const MatView& x, const Tensor& w, int64_t groups, float eps,
                              float scale, const MatView& out) {
  if (groups < 1 || x.cols % groups != 0 || w.numel() != x.cols)
    throw std::invalid_argument("rms_norm_groups: columns must split into equal groups of w");
  const int64_t g = x.cols / groups;
  for (int64_t i = 0; i < groups; ++i) {
    Tensor wg = w;
    wg.data = static_cast<char*>(w.data) + i * g * int64_t(dtype_size(w.dtype));
    wg.shape = {g};
    rms_norm(x.cols_slice(i * g, g), wg, eps, scale, out.cols_slice(i * g, g));
  }
}

void Backend::add_rms_norm(const MatView& delta, const MatView& acc, const Tensor& w, float eps,
                           const MatView& out) {
  add(delta, acc);
  rms_norm(acc, w, eps, 1.0f, out);
}

std::unique_ptr<CapturedOps> Backend::end_capture() {
  throw std::logic_error("backend " + name() + " cannot record ops (supports_capture() is false)");
}

}  // namespace mlra
