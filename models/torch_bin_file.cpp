// PyTorch .bin indexing: zip directory -> restricted unpickle of data.pkl -> storage entries.
// The archive prefix is whatever directory holds data.pkl ("archive/" in torch 2.x, the file
// stem in torch 1.x), so it is discovered rather than assumed.
#include "models/torch_bin_file.h"

#include <map>

#include "models/checkpoint_integrity.h"
#include "models/pickle_reader.h"
#include "models/zip_archive.h"

namespace mlra {

TorchBinIndex index_torch_bin(std::span<const std::byte> file_bytes, const std::string& label) {
  ZipArchive zip(file_bytes, label);
  std::string prefix;
  int found = 0;
  for (const auto& name : zip.names()) {
    const size_t slash = name.find('/');
    if (slash != std::string::npos && name.substr(slash + 1) == "data.pkl") {
      prefix = name.substr(0, slash + 1);
      ++found;
    }
  }
  if (found != 1)
    throw CheckpointError(label + ": expected exactly one <archive>/data.pkl in the zip, found " +
                          std::to_string(found) + " (not a torch.save file?)");
  if (zip.has(prefix + "byteorder")) {
    auto bo = zip.entry(prefix + "byteorder");
    if (std::string(reinterpret_cast<const char*>(bo.data()), bo.size()) != "little")
      throw CheckpointError(label + ": big-endian torch.save files are not supported");
  }

  zip.verify(prefix + "data.pkl");
  const auto pickled = unpickle_state_dict(zip.entry(prefix + "data.pkl"), label);
  std::map<std::string, DType> storage_dtype;  // one storage must have one dtype
  TorchBinIndex index;
  std::vector<TensorInfo>& out = index.tensors;
  out.reserve(pickled.size());
  for (const auto& p : pickled) {
    const std::string entry = prefix + "data/" + p.storage.key;
    if (!zip.has(entry))
      throw CheckpointError(label + ": tensor '" + p.name + "' refers to storage '" +
                            p.storage.key + "' missing from the zip");
    auto [it, fresh] = storage_dtype.emplace(p.storage.key, p.storage.dtype);
    if (!fresh && it->second != p.storage.dtype)
      throw CheckpointError(label + ": storage '" + p.storage.key + "' used with two dtypes");
    const auto bytes = zip.entry(entry);
    const uint64_t elem = dtype_size(p.storage.dtype);
    // pickle_reader checked the view against the declared numel; check numel against the bytes.
    if (static_cast<uint64_t>(p.storage.numel) > bytes.size() / elem)
      throw CheckpointError(label + ": tensor '" + p.name + "': storage '" + p.storage.key +
                            "' declares " + std::to_string(p.storage.numel) +
                            " elements but holds " + std::to_string(bytes.size()) + " bytes");
    TensorInfo t;
    t.name = p.name;
    t.file = label;
    t.dtype = p.storage.dtype;
    t.shape = p.shape;
    t.strides = p.strides;
    t.data = bytes.data() + static_cast<uint64_t>(p.storage_offset) * elem;
    t.storage_id = label + ":" + p.storage.key;
    out.push_back(std::move(t));
  }
  for (const auto& name : zip.names()) {
    if (name == prefix + "data.pkl") continue;
    const ZipEntry& e = zip.entry_info(name);
    index.regions.push_back({label + ": zip entry '" + name + "'", e.data, e.crc32});
  }
  return index;
}

}  // namespace mlra
