// Moves (slices of) checkpoint tensors onto a backend, converting to its weight dtype. A TP rank
// asks only for the rows/columns it owns, so it never reads the rest of the checkpoint.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "models/checkpoint.h"

namespace mlra {

// Row pitch (elements) of a matrix whose row length K is not a multiple of it: the row is padded
// to the next multiple so every row starts 16-byte aligned in bf16, as the CUDA GEMV's vector
// loads need (kernels/gemv.h). Pad values are zeros in weights and never read into a result.
constexpr int64_t kRowAlign = 8;
inline int64_t padded_ld(int64_t cols, int64_t align = kRowAlign) {
  return (cols + align - 1) / align * align;
}

class WeightLoader {
 public:
  WeightLoader(const Checkpoint& ckpt, Backend& backend) : ckpt_(ckpt), backend_(backend) {}

  // Whole tensor, or a hyper-rectangle slice (one Range per dimension), as a backend tensor.
  Tensor load(const std::string& name) const;
  Tensor load(const std::string& name, const std::vector<Range>& ranges) const;
  // Rows (dim 0) gathered from several ranges, concatenated in order: a rank's heads may come
  // from separate blocks of a weight.
  Tensor load_rows(const std::string& name, const std::vector<Range>& row_ranges) const;
  std::vector<float> read(const std::string& name, const std::vector<Range>& ranges) const {
    return ckpt_.read_f32(name, ranges);
  }
  std::vector<float> read(const std::string& name) const { return ckpt_.read_f32(name); }
  // A 2-D slice [rows, cols] stored as [rows, padded_ld(cols, align)], the pad columns zero; view
  // it as MatView{data, dtype, rows, cols, shape[1]}.
  Tensor load_padded(const std::string& name, const std::vector<Range>& ranges,
                     int64_t align) const;
  // Host floats -> backend tensor of the weight dtype.
  Tensor upload(const std::vector<float>& data, const std::vector<int64_t>& shape) const;
  const std::vector<int64_t>& shape(const std::string& name) const {
    return ckpt_.info(name).shape;
  }
  Backend& backend() const { return backend_; }
  int64_t bytes_loaded() const { return bytes_loaded_; }

 private:
  const Checkpoint& ckpt_;
  Backend& backend_;
  mutable int64_t bytes_loaded_ = 0;
};

}  // namespace mlra
