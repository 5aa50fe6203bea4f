// Tensor storage and strided matrix views shared by every backend.
// A Tensor owns device (or host) memory through a shared deleter; a MatView is a non-owning
// row-major 2-D window (rows x cols, leading dimension ld in elements) that ops read and write.
// Invariant: kernels/ never includes engine/ or models/; these types are the whole vocabulary.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace mlra {

enum class DType : uint8_t { kF32, kBF16, kF16, kI32, kI64, kU8 };
enum class DeviceKind : uint8_t { kCpu, kCuda };

constexpr size_t dtype_size(DType t) {
  switch (t) {
    case DType::kF32:
      return 4;
    case DType::kBF16:
      return 2;
    case DType::kF16:
      return 2;
    case DType::kI32:
      return 4;
    case DType::kI64:
      return 8;
    case DType::kU8:
      return 1;
  }
  return 0;
}
const char* dtype_name(DType t);

struct Tensor {
  void* data = nullptr;
  DType dtype = DType::kF32;
  DeviceKind device = DeviceKind::kCpu;
  std::vector<int64_t> shape;  // row-major, contiguous
  std::shared_ptr<void> owner;

  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
  size_t bytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype); }
  template <class T>
  T* as() const {
    return static_cast<T*>(data);
  }
};

// Row-major strided 2-D view: element (r, c) lives at data + (r * ld + c) * dtype_size(dtype).
struct MatView {
  void* data = nullptr;
  DType dtype = DType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t ld = 0;

  MatView cols_slice(int64_t begin, int64_t n) const {
    return {static_cast<char*>(data) + begin * dtype_size(dtype), dtype, rows, n, ld};
  }
  MatView rows_slice(int64_t begin, int64_t n) const {
    return {static_cast<char*>(data) + begin * ld * dtype_size(dtype), dtype, n, cols, ld};
  }
};

// The whole tensor as a matrix of `cols` columns (rows = numel / cols).
inline MatView as_mat(const Tensor& t, int64_t cols) {
  if (cols <= 0 || t.numel() % cols != 0) throw std::invalid_argument("as_mat: bad column count");
  return {t.data, t.dtype, t.numel() / cols, cols, cols};
}

}  // namespace mlra
