// Checkpoint folder detection (sharded/single .bin, sharded/single safetensors), the mapped-shard
// container, and strided float32 reads of whole tensors or hyper-rectangle slices.
#include "models/checkpoint.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <set>

#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "models/mapped_file.h"
#include "models/safetensors_file.h"
#include "models/torch_bin_file.h"

namespace mlra {
namespace {

namespace fs = std::filesystem;

float half_to_float(uint16_t h) {
  const uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);  // inf / nan
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else {  // subnormal: normalise
    int e = -1;
    uint32_t m = mant;
    do {
      ++e;
      m <<= 1;
    } while ((m & 0x400) == 0);
    bits = sign | ((112 - e) << 23) | ((m & 0x3ff) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// The common case, contiguous bf16, as one loop the compiler vectorizes; with kCheck the finiteness
// test (exponent all ones) reads the same source bits in the same pass instead of a second pass.
template <bool kCheck>
bool convert_bf16_run(const std::byte* src, int64_t n, float* dst) {
  uint32_t special = 0;
  for (int64_t k = 0; k < n; ++k) {
    uint16_t h;
    std::memcpy(&h, src + 2 * k, 2);
    const uint32_t bits = uint32_t{h} << 16;
    std::memcpy(dst + k, &bits, 4);
    if constexpr (kCheck) special |= static_cast<uint32_t>((h & 0x7f80u) == 0x7f80u);
  }
  return special == 0;
}

// Converts n elements spaced `stride` elements apart, starting at `src`, to float32. Returns
// false when `check_finite` and any converted value is NaN or infinite (exponent all ones).
bool convert_run(const std::byte* src, DType dtype, int64_t stride, int64_t n, float* dst,
                 bool check_finite) {
  const size_t es = dtype_size(dtype);
  if (dtype == DType::kF32 && stride == 1) {
    std::memcpy(dst, src, size_t(n) * 4);
  } else if (dtype == DType::kBF16 && stride == 1) {
    return check_finite ? convert_bf16_run<true>(src, n, dst)
                        : convert_bf16_run<false>(src, n, dst);
  } else {
    for (int64_t k = 0; k < n; ++k, src += stride * static_cast<int64_t>(es)) {
      if (dtype == DType::kF32) {
        std::memcpy(dst + k, src, 4);
      } else {
        uint16_t h;
        std::memcpy(&h, src, 2);
        if (dtype == DType::kBF16) {
          const uint32_t bits = uint32_t{h} << 16;
          std::memcpy(dst + k, &bits, 4);
        } else {
          dst[k] = half_to_float(h);
        }
      }
    }
  }
  if (!check_finite) return true;
  // The run was just written, so this pass reads cache, not memory.
  uint32_t special = 0;
  for (int64_t k = 0; k < n; ++k) {
    uint32_t bits;
    std::memcpy(&bits, dst + k, 4);
    special |= static_cast<uint32_t>((bits & 0x7f800000u) == 0x7f800000u);
  }
  return special == 0;
}

// The message for the first non-finite value of a read: its index in the whole tensor.
CheckpointError non_finite(const TensorInfo& t, const std::vector<Range>& ranges,
                           const std::vector<float>& out) {
  size_t flat = 0;
  while (flat < out.size() && std::isfinite(out[flat])) ++flat;
  const float v = out[std::min(flat, out.size() - 1)];
  std::string at;
  for (size_t d = ranges.size(); d-- > 0;) {
    const auto extent = static_cast<size_t>(ranges[d].second - ranges[d].first);
    at = std::to_string(ranges[d].first + int64_t(flat % extent)) + (at.empty() ? "" : ", ") + at;
    flat /= extent;
  }
  return CheckpointError(t.file + ": tensor '" + t.name + "' holds a non-finite value (" +
                         (std::isnan(v) ? "nan" : "inf") + ") at [" + at +
                         "]: the weights are corrupt");
}

const char* file_kind(fs::file_type type) {
  switch (type) {
    case fs::file_type::directory:
      return "a directory";
    case fs::file_type::fifo:
      return "a FIFO";
    case fs::file_type::socket:
      return "a socket";
    case fs::file_type::block:
      return "a block device";
    case fs::file_type::character:
      return "a character device";
    default:
      return "not a regular file";
  }
}

// A shard's size; a shard that is absent, or is not a regular file (a FIFO would block the
// loader forever), is named as such.
uint64_t regular_file_size(const fs::path& path) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (st.type() == fs::file_type::not_found)
    throw CheckpointError(path.string() + ": missing shard (no such file)");
  if (ec) throw CheckpointError(path.string() + ": cannot stat shard: " + ec.message());
  if (st.type() != fs::file_type::regular)
    throw CheckpointError(path.string() + ": shard is " + file_kind(st.type()) +
                          ", not a regular file");
  const auto size = fs::file_size(path, ec);
  if (ec) throw CheckpointError(path.string() + ": cannot read the shard's size: " + ec.message());
  return size;
}

class FolderCheckpoint final : public Checkpoint {
 public:
  FolderCheckpoint(fs::path dir, std::string format, Integrity integrity)
      : dir_(std::move(dir)), format_(std::move(format)) {
    check_finite_ = integrity == Integrity::kVerify;
  }

  const fs::path& dir() const override { return dir_; }
  std::vector<std::string> names() const override {
    std::vector<std::string> out;
    for (const auto& [name, t] : tensors_) out.push_back(name);
    return out;
  }
  bool has(const std::string& name) const override { return tensors_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const override {
    auto it = tensors_.find(name);
    if (it == tensors_.end())
      throw CheckpointError(dir_.string() + ": no tensor '" + name + "' in the checkpoint");
    return it->second;
  }
  std::string format() const override { return format_; }
  std::vector<std::string> files() const override {
    std::vector<std::string> out;
    for (const auto& f : files_) out.push_back(f->path().filename().string());
    return out;
  }
  uint64_t total_bytes() const override {
    uint64_t n = 0;
    for (const auto& f : files_) n += f->size();
    return n;
  }
  const std::vector<ChecksummedRegion>& checksummed_regions() const override { return regions_; }

  // Maps `file_names` and indexes them; `weight_map` (empty for a single file) says which tensor
  // lives in which file and is authoritative.
  void load(const std::vector<std::string>& file_names,
            const std::map<std::string, std::string>& weight_map, const LoadProgress& progress) {
    uint64_t total = 0, done = 0;
    for (const auto& f : file_names) total += regular_file_size(dir_ / f);
    const bool bin = format_ == "pytorch-bin";
    for (const auto& f : file_names) {
      files_.push_back(std::make_unique<MappedFile>(dir_ / f));
      std::vector<TensorInfo> tensors;
      if (bin) {
        TorchBinIndex index = index_torch_bin(files_.back()->bytes(), f);
        tensors = std::move(index.tensors);
        for (auto& r : index.regions) regions_.push_back(std::move(r));
      } else {
        tensors = index_safetensors(files_.back()->bytes(), f);
      }
      size_t ignored = 0;
      for (const auto& t : tensors) {
        if (!weight_map.empty()) {
          auto it = weight_map.find(t.name);
          if (it == weight_map.end() || it->second != f) {
            ++ignored;
            continue;
          }
        }
        if (!tensors_.emplace(t.name, t).second)
          throw CheckpointError(f + ": tensor '" + t.name + "' appears in two files");
      }
      if (ignored)
        spdlog::warn("{}: {} tensors not listed for this file in the index, ignored", f, ignored);
      done += files_.back()->size();
      if (progress) progress(done, total, tensors_.size());
    }
    for (const auto& [name, file] : weight_map)
      if (!tensors_.count(name))
        throw CheckpointError(file + ": index lists tensor '" + name + "' but the file lacks it");
  }

 private:
  fs::path dir_;
  std::string format_;
  std::vector<std::unique_ptr<MappedFile>> files_;
  std::map<std::string, TensorInfo> tensors_;
  std::vector<ChecksummedRegion> regions_;
};

// weight_map of a HF *.index.json; file names must be plain names inside the folder.
std::map<std::string, std::string> read_weight_map(const fs::path& index) {
  std::error_code ec;
  if (const auto type = fs::status(index, ec).type(); type != fs::file_type::regular)
    throw CheckpointError(index.string() + ": " + file_kind(type) + ", not a regular file");
  std::ifstream in(index);
  if (!in) throw CheckpointError(index.string() + ": cannot open");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw CheckpointError(index.string() + ": invalid JSON: " + e.what());
  }
  if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
    throw CheckpointError(index.string() + ": no 'weight_map' object");
  std::map<std::string, std::string> out;
  for (const auto& [name, file] : j["weight_map"].items()) {
    if (!file.is_string())
      throw CheckpointError(index.string() + ": weight_map['" + name + "'] is not a string");
    const std::string f = file.get<std::string>();
    if (f.empty() || f.find('/') != std::string::npos || f == "." || f == "..")
      throw CheckpointError(index.string() + ": bad shard file name '" + f + "'");
    out.emplace(name, f);
  }
  if (out.empty()) throw CheckpointError(index.string() + ": empty weight_map");
  return out;
}

}  // namespace

std::shared_ptr<Checkpoint> Checkpoint::open(const fs::path& dir, const LoadProgress& on_progress,
                                             Integrity integrity) {
  if (!fs::is_directory(dir)) throw CheckpointError(dir.string() + ": not a directory");
  struct Candidate {
    const char* file;
    const char* format;
    bool sharded;
  };
  constexpr Candidate kCandidates[] = {{"pytorch_model.bin.index.json", "pytorch-bin", true},
                                       {"pytorch_model.bin", "pytorch-bin", false},
                                       {"model.safetensors.index.json", "safetensors", true},
                                       {"model.safetensors", "safetensors", false}};
  for (const auto& c : kCandidates) {
    if (!fs::exists(dir / c.file)) continue;
    auto ckpt = std::make_shared<FolderCheckpoint>(dir, c.format, integrity);
    if (c.sharded) {
      const auto weight_map = read_weight_map(dir / c.file);
      std::set<std::string> unique;
      std::vector<std::string> files;
      for (const auto& [name, f] : weight_map)
        if (unique.insert(f).second) files.push_back(f);
      std::sort(files.begin(), files.end());
      ckpt->load(files, weight_map, on_progress);
    } else {
      ckpt->load({c.file}, {}, on_progress);
    }
    return ckpt;
  }
  throw CheckpointError(dir.string() +
                        ": no weights found (expected pytorch_model.bin.index.json, "
                        "pytorch_model.bin, model.safetensors.index.json or model.safetensors)");
}

const std::vector<ChecksummedRegion>& Checkpoint::checksummed_regions() const {
  static const std::vector<ChecksummedRegion> kNone;
  return kNone;
}

std::vector<float> Checkpoint::read_f32(const std::string& name) const {
  std::vector<Range> all;
  for (int64_t d : info(name).shape) all.push_back({0, d});
  return read_f32(name, all);
}

std::vector<float> Checkpoint::read_f32(const std::string& name,
                                        const std::vector<Range>& ranges) const {
  const TensorInfo& t = info(name);
  const size_t rank = t.shape.size();
  if (ranges.size() != rank)
    throw CheckpointError(t.file + ": tensor '" + name + "': " + std::to_string(ranges.size()) +
                          " ranges for a rank-" + std::to_string(rank) + " tensor");
  int64_t count = 1;
  for (size_t d = 0; d < rank; ++d) {
    const auto [b, e] = ranges[d];
    if (b < 0 || b > e || e > t.shape[d])
      throw CheckpointError(t.file + ": tensor '" + name + "': range [" + std::to_string(b) + ", " +
                            std::to_string(e) + ") out of dim " + std::to_string(d) + " of size " +
                            std::to_string(t.shape[d]));
    count *= e - b;
  }
  std::vector<float> out(static_cast<size_t>(count));
  if (count == 0) return out;
  const int64_t es = static_cast<int64_t>(dtype_size(t.dtype));
  if (rank == 0) {
    if (!convert_run(t.data, t.dtype, 1, 1, out.data(), check_finite_))
      throw non_finite(t, ranges, out);
    return out;
  }
  // Odometer over all but the last dimension; the last dimension is one strided run.
  const int64_t inner = ranges[rank - 1].second - ranges[rank - 1].first;
  std::vector<int64_t> idx(rank - 1, 0);
  bool finite = true;
  for (float* dst = out.data(); dst < out.data() + count; dst += inner) {
    int64_t off = ranges[rank - 1].first * t.strides[rank - 1];
    for (size_t d = 0; d + 1 < rank; ++d) off += (ranges[d].first + idx[d]) * t.strides[d];
    finite &=
        convert_run(t.data + off * es, t.dtype, t.strides[rank - 1], inner, dst, check_finite_);
    for (size_t d = rank - 1; d-- > 0;) {
      if (++idx[d] < ranges[d].second - ranges[d].first) break;
      idx[d] = 0;
    }
  }
  if (!finite) throw non_finite(t, ranges, out);
  return out;
}

}  // namespace mlra
