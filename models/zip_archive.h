// Index of the stored (uncompressed) entries of a zip archive held in memory, e.g. a mmapped
// PyTorch .bin. Entry data are returned as spans into that memory: zero-copy.
// Invariant: every returned span lies inside the archive bytes; compressed or encrypted entries,
// and any inconsistency in the (Zip64) directory, throw CheckpointError naming the file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

namespace mlra {

class ZipArchive {
 public:
  // `bytes` must outlive the archive. `label` (the file name) prefixes every error message.
  ZipArchive(std::span<const std::byte> bytes, std::string label);

  bool has(const std::string& name) const { return entries_.count(name) != 0; }
  std::span<const std::byte> entry(const std::string& name) const;  // throws when absent
  std::vector<std::string> names() const;                           // sorted

 private:
  void read_directory();
  std::span<const std::byte> bytes_;
  std::string label_;
  std::map<std::string, std::span<const std::byte>> entries_;
};

}  // namespace mlra
