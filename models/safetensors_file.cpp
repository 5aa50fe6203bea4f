// safetensors indexing: the JSON header is parsed with nlohmann (bounded to 100 MB), every entry's
// dtype, shape and data_offsets are validated against the data section before use.
#include "models/safetensors_file.h"

#include <nlohmann/json.hpp>

#include "models/le_bytes.h"

namespace mlra {
namespace {

constexpr uint64_t kMaxHeader = 100u << 20;
constexpr uint64_t kMaxElements = uint64_t{1} << 50;

DType parse_dtype(const std::string& s, const std::string& where) {
  if (s == "F32") return DType::kF32;
  if (s == "BF16") return DType::kBF16;
  if (s == "F16") return DType::kF16;
  throw CheckpointError(where + ": unsupported dtype '" + s + "' (need F32, BF16 or F16)");
}

}  // namespace

std::vector<TensorInfo> index_safetensors(std::span<const std::byte> bytes,
                                          const std::string& label) {
  if (bytes.size() < 8) throw CheckpointError(label + ": truncated safetensors file (no header)");
  const uint64_t header_len = load_u64(bytes.data());
  if (header_len > kMaxHeader || header_len > bytes.size() - 8)
    throw CheckpointError(label + ": safetensors header length " + std::to_string(header_len) +
                          " exceeds the file");
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(bytes.data() + 8, bytes.data() + 8 + header_len);
  } catch (const nlohmann::json::exception& e) {
    throw CheckpointError(label + ": bad safetensors header JSON: " + e.what());
  }
  if (!header.is_object()) throw CheckpointError(label + ": safetensors header is not an object");
  const std::byte* data = bytes.data() + 8 + header_len;
  const uint64_t data_size = bytes.size() - 8 - header_len;

  std::vector<TensorInfo> out;
  for (const auto& [name, e] : header.items()) {
    if (name == "__metadata__") continue;
    const std::string where = label + ": tensor '" + name + "'";
    if (!e.is_object() || !e.contains("dtype") || !e["dtype"].is_string() || !e.contains("shape") ||
        !e["shape"].is_array() || !e.contains("data_offsets") || !e["data_offsets"].is_array() ||
        e["data_offsets"].size() != 2)
      throw CheckpointError(where + ": malformed header entry");
    TensorInfo t;
    t.name = name;
    t.file = label;
    t.dtype = parse_dtype(e["dtype"].get<std::string>(), where);
    if (e["shape"].size() > 8) throw CheckpointError(where + ": rank above 8");
    uint64_t numel = 1;
    for (const auto& d : e["shape"]) {
      if (!d.is_number_unsigned() || d.get<uint64_t>() > kMaxElements)
        throw CheckpointError(where + ": bad shape");
      const uint64_t n = d.get<uint64_t>();
      t.shape.push_back(static_cast<int64_t>(n));
      // Checked before multiplying: [2^40, 2^40] would wrap to 0 elements.
      if (n != 0 && numel > kMaxElements / n) throw CheckpointError(where + ": tensor too large");
      numel *= n;
    }
    t.strides.assign(t.shape.size(), 1);
    for (size_t k = t.shape.size(); k-- > 1;) t.strides[k - 1] = t.strides[k] * t.shape[k];
    const auto& off = e["data_offsets"];
    if (!off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      throw CheckpointError(where + ": bad data_offsets");
    const uint64_t begin = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
    if (begin > end || end > data_size)
      throw CheckpointError(where + ": data_offsets [" + std::to_string(begin) + ", " +
                            std::to_string(end) + ") outside the " + std::to_string(data_size) +
                            "-byte data section");
    if (end - begin != numel * dtype_size(t.dtype))
      throw CheckpointError(where + ": " + std::to_string(end - begin) + " bytes for " +
                            std::to_string(numel) + " elements");
    t.data = data + begin;
    t.storage_id = label + ":@" + std::to_string(begin);
    out.push_back(std::move(t));
  }
  return out;
}

}  // namespace mlra
