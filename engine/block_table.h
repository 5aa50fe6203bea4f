// The pages of one sequence in position order, plus how far its full pages have been
// registered in the prefix cache (num_hashed pages, chained through last_hash).
#pragma once

#include <cstdint>
#include <vector>

namespace mlra {

struct BlockTable {
  std::vector<int32_t> pages;
  int32_t num_hashed = 0;  // leading pages registered under their content-chain hash
  uint64_t last_hash = 0;  // chain hash of page num_hashed - 1 (0 when none)

  int32_t size() const { return static_cast<int32_t>(pages.size()); }
};

}  // namespace mlra
