// Checkpoint slices -> backend tensors.
#include "models/weight_loader.h"

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
