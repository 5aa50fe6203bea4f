// check_config_against_model: the model's config.json (block_size, cache width per token) and
// the host's memory (sysinfo) against the server config.
#include "server/startup_checks.h"

#include <sys/sysinfo.h>

#include <fmt/format.h>

#include "engine/cache_budget.h"
#include "models/cache_shape.h"
#include "models/model_config.h"
#include "models/variant.h"

namespace mlra {

void check_config_against_model(const ServerConfig& server) {
  const RunnerConfig& c = server.runner;
  const ModelConfig model =
      load_model_config(c.model_dir / "config.json", *parse_variant(c.variant));
  if (c.max_context > 0 && model.block_size > 0 && c.max_context > model.block_size)
    throw ConfigError(fmt::format(
        "config key 'max_context': {} exceeds the model's block_size {} (config.json): it never "
        "saw positions past that; use at most {}, or 0 for the block size",
        c.max_context, model.block_size, model.block_size));
  if (c.backend != "cpu") return;
  const int64_t bytes_per_token =
      cache_row_bytes_per_rank(model, c.tp, c.kv_cache, cache_value_bytes(c.backend)).max_values *
      model.n_layer;
  const double per_rank = c.num_pages > 0
                              ? double(c.num_pages) * c.page_size * double(bytes_per_token)
                              : double(c.cache_memory_bytes);
  struct sysinfo info {};
  if (sysinfo(&info) != 0) return;
  const double host = double(info.totalram) * info.mem_unit;
  if (per_rank * c.tp > host)
    throw ConfigError(fmt::format(
        "the cache needs {:.1f} GiB per rank x tp {} ({}), more than this machine's {:.1f} GiB "
        "of memory",
        per_rank / double(1 << 30), c.tp,
        c.num_pages > 0 ? fmt::format("num_pages {}", c.num_pages)
                        : fmt::format("cache_memory_bytes {}", c.cache_memory_bytes),
        host / double(1 << 30)));
}

}  // namespace mlra
