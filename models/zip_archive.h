// Index of the stored (uncompressed) entries of a zip archive held in memory, e.g. a mmapped
// PyTorch .bin. Entry data are returned as spans into that memory: zero-copy. Each entry keeps
// the CRC-32 its central directory record declares; verify() checks the bytes against it.
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

struct ZipEntry {
  std::span<const std::byte> data;
  uint32_t crc32 = 0;  // as declared by the central directory
};

class ZipArchive {
 public:
  // `bytes` must outlive the archive. `label` (the file name) prefixes every error message.
  ZipArchive(std::span<const std::byte> bytes, std::string label);

  bool has(const std::string& name) const { return entries_.count(name) != 0; }
  std::span<const std::byte> entry(const std::string& name) const;  // throws when absent
  const ZipEntry& entry_info(const std::string& name) const;        // throws when absent
  std::vector<std::string> names() const;                           // sorted
  // Throws CheckpointError naming the file and entry when the entry's bytes do not match the
  // CRC-32 the directory declares.
  void verify(const std::string& name) const;

 private:
  void read_directory();
  std::span<const std::byte> bytes_;
  std::string label_;
  std::map<std::string, ZipEntry> entries_;
};

}  // namespace mlra
