// make_runner: LocalRunner for TP=1 or in-process TP, ProcessRunner otherwise.
#include "engine/runner_factory.h"

#include "engine/process_runner.h"
#include "engine/server_config.h"
#include "models/cache_shape.h"
#include "models/local_runner.h"

namespace mlra {

RunnerOptions runner_options(const ServerConfig& c) {
  RunnerOptions o;
  o.model_dir = c.model_dir;
  o.variant = c.variant;
  o.backend = c.backend;
  o.tp = c.tp;
  o.page_size = c.page_size;
  o.num_pages = c.num_pages;
  o.cache_memory_bytes = c.cache_memory_bytes;
  o.kv_cache = parse_kv_cache_dtype(c.kv_cache_dtype).value_or(CacheEncoding::kPlain);
  o.max_context = c.max_context;
  o.gpu_memory_fraction = c.gpu_memory_fraction;
  o.cuda_graph_max_batch = c.cuda_graph_max_batch;
  o.mla_tp_mode = c.mla_tp_mode == "tpla" ? LatentTpMode::kTpla : LatentTpMode::kReplicate;
  o.tpla.transform = c.tpla_transform;
  o.tpla.pd_separation = c.tpla_pd_separation;
  o.tpla.slices = c.tpla_slices;
  o.latent_prefill.mode = parse_latent_prefill(c.latent_prefill).value_or(LatentPrefill::kAuto);
  o.latent_prefill.scratch_bytes = c.latent_prefill_scratch_bytes;
  return o;
}

std::unique_ptr<ModelRunner> make_runner(const RunnerOptions& o) {
  if (o.tp == 1 || o.in_process) {
    LocalRunnerOptions l;
    l.model_dir = o.model_dir;
    l.variant = o.variant;
    l.backend = o.backend;
    l.tp = o.tp;
    l.device = o.first_device;
    l.page_size = o.page_size;
    l.num_pages = o.num_pages;
    l.cache_memory_bytes = o.cache_memory_bytes;
    l.kv_cache = o.kv_cache;
    l.max_context = o.max_context;
    l.gpu_memory_fraction = o.gpu_memory_fraction;
    l.cuda_graph_max_batch = o.cuda_graph_max_batch;
    l.mla_tp_mode = o.mla_tp_mode;
    l.tpla = o.tpla;
    l.latent_prefill = o.latent_prefill;
    return make_local_runner(l);
  }
  return std::make_unique<ProcessRunner>(o);
}

}  // namespace mlra
