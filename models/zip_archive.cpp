// Zip central-directory reader for PyTorch .bin files (torch.save's zip container).
//
// Why no library: libzip / minizip hand out entry contents only through read() calls into a
// caller buffer, never as a pointer into the mapped file, so loading a 5 GB shard would copy it
// once more. torch.save stores every entry uncompressed (method 0), which makes an entry just a
// byte range of the file; finding those ranges needs only the End Of Central Directory record
// (plus its Zip64 variant: 2.9B fp32 shards are ~5 GB and a single-file save ~11.5 GB, so
// entry offsets pass 4 GB and torch writes Zip64 records) and the local headers, whose extra
// field torch 2.x uses to pad entries to 64-byte alignment.
#include "models/zip_archive.h"

#include <algorithm>

#include "models/checkpoint.h"
#include "models/checkpoint_integrity.h"
#include "models/le_bytes.h"

namespace mlra {
namespace {

constexpr uint32_t kEocdSig = 0x06054b50;
constexpr uint32_t kZip64LocatorSig = 0x07064b50;
constexpr uint32_t kZip64EocdSig = 0x06064b50;
constexpr uint32_t kCentralSig = 0x02014b50;
constexpr uint32_t kLocalSig = 0x04034b50;
constexpr uint64_t kEocdSize = 22;
constexpr uint64_t kCentralSize = 46;
constexpr uint64_t kLocalSize = 30;
constexpr uint64_t kMaxComment = 0xFFFF;

}  // namespace

ZipArchive::ZipArchive(std::span<const std::byte> bytes, std::string label)
    : bytes_(bytes), label_(std::move(label)) {
  read_directory();
}

std::span<const std::byte> ZipArchive::entry(const std::string& name) const {
  return entry_info(name).data;
}

const ZipEntry& ZipArchive::entry_info(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) throw CheckpointError(label_ + ": zip entry '" + name + "' not found");
  return it->second;
}

void ZipArchive::verify(const std::string& name) const {
  const ZipEntry& e = entry_info(name);
  check_crc32(e.data, e.crc32, label_ + ": zip entry '" + name + "'");
}

std::vector<std::string> ZipArchive::names() const {
  std::vector<std::string> out;
  for (const auto& [name, e] : entries_) out.push_back(name);
  return out;
}

void ZipArchive::read_directory() {
  const uint64_t size = bytes_.size();
  const std::byte* base = bytes_.data();
  auto fail = [&](const std::string& what) -> CheckpointError {
    return CheckpointError(label_ + ": not a valid zip archive: " + what);
  };
  // Overflow-safe "[off, off + len) lies inside the file".
  auto inside = [&](uint64_t off, uint64_t len) { return off <= size && len <= size - off; };

  if (size < kEocdSize) throw fail("file too short (" + std::to_string(size) + " bytes)");
  uint64_t eocd = size;  // sentinel: not found
  const uint64_t lowest = size - kEocdSize > kMaxComment ? size - kEocdSize - kMaxComment : 0;
  for (uint64_t p = size - kEocdSize + 1; p-- > lowest;) {
    if (load_u32(base + p) == kEocdSig && p + kEocdSize + load_u16(base + p + 20) <= size) {
      eocd = p;
      break;
    }
  }
  if (eocd == size) throw fail("end of central directory record not found");

  uint64_t n_entries = load_u16(base + eocd + 10);
  uint64_t cd_size = load_u32(base + eocd + 12);
  uint64_t cd_offset = load_u32(base + eocd + 16);
  if (eocd >= 20 && load_u32(base + eocd - 20) == kZip64LocatorSig) {
    const uint64_t z = load_u64(base + eocd - 20 + 8);
    if (!inside(z, 56) || load_u32(base + z) != kZip64EocdSig)
      throw fail("Zip64 end of central directory record missing or out of bounds");
    n_entries = load_u64(base + z + 32);
    cd_size = load_u64(base + z + 40);
    cd_offset = load_u64(base + z + 48);
  }
  if (!inside(cd_offset, cd_size)) throw fail("central directory lies outside the file");
  if (n_entries > cd_size / kCentralSize) throw fail("entry count exceeds directory size");

  uint64_t p = cd_offset;
  const uint64_t cd_end = cd_offset + cd_size;
  for (uint64_t i = 0; i < n_entries; ++i) {
    if (p > cd_end || cd_end - p < kCentralSize || load_u32(base + p) != kCentralSig)
      throw fail("bad central directory header #" + std::to_string(i));
    const uint16_t flags = load_u16(base + p + 8);
    const uint16_t method = load_u16(base + p + 10);
    const uint32_t crc = load_u32(base + p + 16);
    uint64_t comp = load_u32(base + p + 20);
    uint64_t uncomp = load_u32(base + p + 24);
    const uint64_t name_len = load_u16(base + p + 28);
    const uint64_t extra_len = load_u16(base + p + 30);
    const uint64_t comment_len = load_u16(base + p + 32);
    uint64_t local = load_u32(base + p + 42);
    const uint64_t var_len = name_len + extra_len + comment_len;
    if (cd_end - p - kCentralSize < var_len)
      throw fail("central header #" + std::to_string(i) + " overruns directory");
    const std::string name(reinterpret_cast<const char*>(base + p + kCentralSize), name_len);

    // Zip64 extended information: only the fields whose 32-bit slot is saturated, in order.
    const std::byte* ex = base + p + kCentralSize + name_len;
    for (uint64_t q = 0; q + 4 <= extra_len;) {
      const uint16_t id = load_u16(ex + q), len = load_u16(ex + q + 2);
      if (q + 4 + len > extra_len) throw fail("extra field of '" + name + "' overruns its header");
      if (id == 0x0001) {
        uint64_t f = q + 4;
        auto take = [&](uint64_t& v) {
          if (v != 0xFFFFFFFFu) return;
          if (f + 8 > q + 4 + len) throw fail("short Zip64 extra field in '" + name + "'");
          v = load_u64(ex + f);
          f += 8;
        };
        take(uncomp);
        take(comp);
        take(local);
      }
      q += 4 + len;
    }
    if (flags & 0x1) throw fail("entry '" + name + "' is encrypted");
    if (method != 0)
      throw CheckpointError(
          label_ + ": zip entry '" + name + "' is compressed (method " + std::to_string(method) +
          "); torch.save writes stored entries only, re-save without compression");
    if (comp != uncomp) throw fail("stored entry '" + name + "' has differing sizes");

    if (!inside(local, kLocalSize) || load_u32(base + local) != kLocalSig)
      throw fail("local header of '" + name + "' missing or out of bounds");
    const uint64_t l_name = load_u16(base + local + 26), l_extra = load_u16(base + local + 28);
    const uint64_t data = local + kLocalSize + l_name + l_extra;
    if (l_name != name_len || !inside(local + kLocalSize, l_name) ||
        !std::equal(base + local + kLocalSize, base + local + kLocalSize + l_name,
                    base + p + kCentralSize))
      throw fail("local header name of '" + name + "' differs from the central directory");
    if (!inside(data, comp)) throw fail("data of '" + name + "' lies outside the file");
    if (!entries_.emplace(name, ZipEntry{{base + data, comp}, crc}).second)
      throw fail("duplicate entry '" + name + "'");
    p += kCentralSize + var_len;
  }
}

}  // namespace mlra
