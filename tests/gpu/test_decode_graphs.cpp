// Decode steps replayed from CUDA graphs against the same steps run eagerly: logits agree within
// bf16 noise (padding changes GEMM and split-KV shapes), the padded rows never disturb real
// sequences' caches, one graph is recorded per padded size, and a replay is bit-identical to
// the recording's eager twin. Also: the cache sized by gpu_memory_fraction stays under the cap.
#include <catch2/catch.hpp>

#include <algorithm>
#include <functional>
#include <set>

#include "engine/local_runner.h"
#include "gpu_decode_fixture.h"
#include "gpu_test_util.h"

using namespace mlra;
using namespace mlra::gputest;

namespace {

int32_t argmax_row(const std::vector<float>& l, size_t row, int64_t V) {
  auto b = l.begin() + std::ptrdiff_t(row * size_t(V));
  return int32_t(std::max_element(b, b + V) - b);
}

float margin_row(const std::vector<float>& l, size_t row, int64_t V) {
  std::vector<float> top(l.begin() + std::ptrdiff_t(row * size_t(V)),
                         l.begin() + std::ptrdiff_t((row + 1) * size_t(V)));
  std::partial_sort(top.begin(), top.begin() + 2, top.end(), std::greater<float>());
  return top[0] - top[1];
}

}  // namespace

TEST_CASE("decode graphs replay what the eager path computes", "[gpu][graphs]") {
  for (const char* v : {"mlra4", "mla", "gla2", "gqa", "mlra4_gated", "mfa"}) {
    INFO(v);
    const TinyModel m = tiny_model(v);
    const int64_t V = m.config.vocab_size;
    const ShardPlan plan = make_shard_plan(m.config, 1, 0);
    DecodeSequences seqs({5, 1234, 9, 7, false}, V);
    DecodeModel eager = cuda_model(m.config, plan, *m.ckpt, seqs.cache());
    DecodeModel graphed = cuda_model(m.config, plan, *m.ckpt, seqs.cache(), {}, 16);
    REQUIRE(graphed.model->decode_graph_size(3) == 4);
    REQUIRE(graphed.model->decode_graph_size(17) == 0);
    REQUIRE(eager.model->decode_graph_size(1) == 0);

    std::vector<int32_t> last(size_t(seqs.size()));
    forward_all({&eager, &graphed}, seqs.prefill());
    const std::vector<float>& le = eager.logits;
    const std::vector<float>& lg = graphed.logits;
    REQUIRE(rel_l2(lg, le) < kTinyDecodeBound);  // prefill is eager on both: bf16 noise only
    for (int s = 0; s < seqs.size(); ++s) last[size_t(s)] = argmax_row(le, size_t(s), V);

    const std::vector<std::vector<int>> schedule = {
        {0, 1, 2, 3, 4}, {1, 3, 4}, {2}, {0, 1, 2, 3, 4}, {0, 4}, {1, 2, 3}, {0, 2}};
    std::set<int> padded_sizes;
    int compared = 0;
    StepBatch step;
    for (const auto& picked : schedule) {
      std::vector<int32_t> tokens;
      for (int s : picked) tokens.push_back(last[size_t(s)]);
      step = seqs.decode(picked, tokens);
      padded_sizes.insert(graphed.model->decode_graph_size(int(picked.size())));
      forward_all({&eager, &graphed}, step);
      const double err = rel_l2(lg, le);
      CAPTURE(picked.size(), err);
      CHECK(err < kDeviceDecodeBound);
      for (size_t i = 0; i < picked.size(); ++i) {
        if (margin_row(le, i, V) > 0.1f) {
          CHECK(argmax_row(lg, i, V) == argmax_row(le, i, V));
          ++compared;
        }
        last[size_t(picked[i])] = argmax_row(le, i, V);
      }
    }
    CHECK(compared >= 5);
    CHECK(graphed.model->recorded_graphs() == padded_sizes.size());

    // The last step again: both calls replay, rewrite the same cache rows with the same values
    // and must give bit-identical logits (the first call at a size ran eagerly, then recorded).
    std::vector<float> again1, again2;
    graphed.model->forward(step, again1);
    graphed.model->forward(step, again2);
    CHECK(again1 == again2);
    CHECK(rel_l2(again1, lg) < kDeviceDecodeBound);
  }
}

TEST_CASE("gpu_memory_fraction caps the memory the cache may take", "[gpu][graphs]") {
  const auto dir = std::filesystem::path(MLRA_TEST_DATA) / "tiny" / "mlra4";
  RunnerConfig o;
  o.model_dir = dir;
  o.variant = "mlra4";
  o.backend = "cuda";
  o.page_size = 64;
  o.gpu_memory_fraction = 0.25;
  auto runner = make_local_runner(o);
  const RunnerInfo info = runner->info();
  CHECK(info.num_pages > 1000);  // a quarter of an H100/H200 holds millions of tiny-model tokens
  auto probe = make_cuda_backend(0);
  const DeviceMemory m = probe->memory();
  const double used = double(m.total_bytes - m.free_bytes);
  CAPTURE(info.num_pages, used, m.total_bytes);
  CHECK(used <= 0.25 * double(m.total_bytes));
  o.gpu_memory_fraction = 0.0001;  // below what the weights and reserve need
  CHECK_THROWS_WITH(make_local_runner(o), Catch::Contains("leaves no room"));
}
