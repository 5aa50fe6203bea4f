// Checkpoint slices -> backend tensors.
#include "models/weight_loader.h"

#include <algorithm>
#include <stdexcept>

namespace mlra {

Tensor WeightLoader::upload(const std::vector<float>& data,
                            const std::vector<int64_t>& shape) const {
  Tensor t = backend_.alloc(shape, backend_.weight_dtype());
  if (t.numel() != int64_t(data.size())) throw std::logic_error("WeightLoader: size mismatch");
  backend_.upload_f32(t, data.data());
  bytes_loaded_ += int64_t(t.bytes());
  return t;
}

Tensor WeightLoader::load(const std::string& name) const {
  return upload(ckpt_.read_f32(name), ckpt_.info(name).shape);
}

Tensor WeightLoader::load(const std::string& name, const std::vector<Range>& ranges) const {
  std::vector<int64_t> shape;
  for (const auto& r : ranges) shape.push_back(r.second - r.first);
  return upload(ckpt_.read_f32(name, ranges), shape);
}

Tensor WeightLoader::load_padded(const std::string& name, const std::vector<Range>& ranges,
                                 int64_t align) const {
  if (ranges.size() != 2 || align < 1)
    throw std::invalid_argument("WeightLoader::load_padded: needs a 2-D slice and align >= 1");
  const int64_t rows = ranges[0].second - ranges[0].first;
  const int64_t cols = ranges[1].second - ranges[1].first, ld = padded_ld(cols, align);
  const std::vector<float> data = ckpt_.read_f32(name, ranges);
  if (ld == cols) return upload(data, {rows, cols});
  std::vector<float> padded(size_t(rows * ld), 0.0f);
  for (int64_t r = 0; r < rows; ++r)
    std::copy_n(data.begin() + r * cols, cols, padded.begin() + r * ld);
  return upload(padded, {rows, ld});
}

Tensor WeightLoader::load_rows(const std::string& name,
                               const std::vector<Range>& row_ranges) const {
  const auto& full = ckpt_.info(name).shape;
  std::vector<float> data;
  int64_t rows = 0;
  for (const auto& rr : row_ranges) {
    std::vector<Range> ranges{rr};
    for (size_t d = 1; d < full.size(); ++d) ranges.push_back({0, full[d]});
    auto part = ckpt_.read_f32(name, ranges);
    data.insert(data.end(), part.begin(), part.end());
    rows += rr.second - rr.first;
  }
  std::vector<int64_t> shape = full;
  shape[0] = rows;
  return upload(data, shape);
}

}  // namespace mlra
