// Read-only memory map of one whole file (RAII). Checkpoint tensors point straight into the
// mapping, so a Checkpoint keeps its MappedFiles alive for as long as it hands out pointers.
// Invariant: bytes() spans exactly size() valid bytes; an empty file maps to an empty span.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>

namespace mlra {

class MappedFile {
 public:
  // Throws CheckpointError naming the path when the file cannot be opened or mapped.
  explicit MappedFile(const std::filesystem::path& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  std::span<const std::byte> bytes() const { return {data_, size_}; }
  uint64_t size() const { return size_; }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  const std::byte* data_ = nullptr;
  uint64_t size_ = 0;
};

}  // namespace mlra
