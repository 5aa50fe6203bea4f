// One TP rank's share of a model: embedding, layers (attention + SwiGLU MLP, each followed by an
// all-reduce of the partial output), final norm and tied LM head, plus this rank's paged cache.
// The same code runs every variant on every backend; all ranks run forward() in lockstep with
// identical StepBatches. Only rank 0 computes logits.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <vector>

#include "kernels/backend.h"
#include "kernels/communicator.h"
#include "models/attention_layer.h"
#include "models/checkpoint.h"
#include "models/model_config.h"
#include "models/shard_plan.h"
#include "models/step_batch.h"
#include "models/step_context.h"
#include "models/weight_loader.h"

namespace mlra {

struct CacheOptions {
  int32_t page_size = 64;
  int64_t num_pages = 0;
  // kPlain: the backend's cache_dtype(); kFp8E4M3: FP8 groups per latent / K / V head with a
  // float32 scale each, RoPE keys bf16 (models/cache_shape.h fp8_cache_layout).
  CacheEncoding encoding = CacheEncoding::kPlain;
};

class Transformer {
 public:
  // Loads this rank's weights; allocates the cache now when cache.num_pages > 0, else
  // allocate_cache() must follow (to size it from the memory left after the weights).
  // row_align: the row pitch of the MLP down-projection (its K, the rank's intermediate rows) and
  // of its input, padded_ld(K, row_align) (weight_loader.h); 1 stores them unpadded (tests).
  Transformer(const ModelConfig& config, const ShardPlan& plan, const Checkpoint& ckpt,
              Backend& backend, Communicator& comm, const CacheOptions& cache,
              int64_t row_align = kRowAlign);
  void allocate_cache(int64_t num_pages);

  // Writes every step token's cache entry, runs all layers and, on rank 0, returns the logits of
  // step.logit_rows ([rows, vocab] float32, row-major). Other ranks return an empty vector.
  void forward(const StepBatch& step, std::vector<float>& logits);
  // The same, but rank 0's logits stay on the backend's device: `consume` gets the [rows, vocab]
  // f32 view (valid during the call only), e.g. to sample there and copy back only token ids.
  // Not called on other ranks or when the step has no logit rows.
  using LogitsConsumer = std::function<void(const MatView&)>;
  void forward(const StepBatch& step, const LogitsConsumer& consume);

  // Pure decode steps (one token per sequence, every row's logits, no fresh prefill) of up to
  // max_batch sequences replay a recorded graph per padded batch size (decode_graph_sizes()),
  // recorded on first use. Needs a backend that supports capture; 0 turns graphs off. Every TP
  // rank must use the same setting (the recordings contain the all-reduces).
  void enable_decode_graphs(int max_batch);
  // The padded batch a pure decode step of n sequences replays at; 0 when it runs eagerly.
  int decode_graph_size(int n) const;
  size_t recorded_graphs() const { return graphs_.size(); }

  // Calibration tap: eager steps hand every latent layer's cache rows to `observer` (nullptr:
  // off); pure decode steps then skip graphs, since observing downloads in the middle of a step.
  void set_latent_observer(LatentObserver* observer) { latent_observer_ = observer; }

  const ModelConfig& config() const { return config_; }
  const ShardPlan& plan() const { return plan_; }
  int64_t weight_bytes() const { return weight_bytes_; }
  int64_t cache_bytes_per_token() const;  // this rank, all layers, in the cache's encoding
  const CacheOptions& cache_options() const { return cache_opts_; }

 private:
  struct Layer {
    std::unique_ptr<AttentionLayer> attn;
    Tensor ln1, ln2;  // [d]
    Tensor fc12;      // [2 * ff_local, d]: W_fc1 rows, then W_fc2 rows
    Tensor proj;      // [d, ff_ld]: columns ff_local.. are zero pad
    Tensor cache;     // plain: [num_pages, page_size, cache_width]; FP8: [num_pages, page bytes]
  };
  PagedCacheView cache_view(const Layer& layer) const;
  bool is_pure_decode(const StepBatch& s) const;
  void forward_eager(const StepBatch& s, const LogitsConsumer& consume);
  void forward_graph(const StepBatch& s, int padded, const LogitsConsumer& consume);
  // embed -> layers -> (rank 0, rows > 0) final norm and LM head of `rows` gathered rows into
  // logits [rows, vocab]. Only enqueues ops, so it can be recorded.
  void run_body(const StepContext& ctx, const int32_t* row_ids, int64_t rows,
                const MatView& logits);

  ModelConfig config_;
  ShardPlan plan_;
  Backend& backend_;
  Communicator& comm_;
  CacheOptions cache_opts_;
  Fp8CacheLayout fp8_layout_;  // the FP8 cache's row layout (FP8 encoding only)
  Tensor embedding_;           // [vocab, d], tied with the LM head
  Tensor final_norm_;
  std::vector<Layer> layers_;
  int64_t ff_ld_ = 0;  // row pitch of proj and of the SwiGLU output: padded_ld(ff_local)
  int64_t weight_bytes_ = 0;
  LatentObserver* latent_observer_ = nullptr;

  // Decode graphs. Padded sequences write and read the scratch page, one page past the pages the
  // scheduler hands out, so they never touch a real sequence's cache.
  int max_graph_batch_ = 0;
  std::map<int, std::unique_ptr<CapturedOps>> graphs_;  // padded batch -> recording
  Tensor graph_inputs_;  // packed step arrays at fixed addresses (layout in forward_graph)
  int64_t graph_index_capacity_ = 0;  // page-table entries graph_inputs_ holds
  Tensor graph_logits_;               // [max_graph_batch, vocab] f32, rank 0
};

}  // namespace mlra
