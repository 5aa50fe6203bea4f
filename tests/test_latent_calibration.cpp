// TPLA calibration (`tpla-calibrate`) on the tiny MLA checkpoint: streamed second moments equal a
// direct sum over the very latents the model cached; the written transform loads, is orthogonal
// and exact without slicing; served with that transform, the cached (transformed) latents of the
// calibration set have a diagonal second moment with descending eigenvalues (which fails when
// the PCA is taken over the wrong vectors, e.g. before the RMSNorm gain); bad inputs are one-line
// CLI errors.
#include <unistd.h>
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>

#include "engine/local_runner.h"
#include "engine/perplexity.h"
#include "engine/server_config.h"
#include "models/checkpoint.h"
#include "models/latent_calibration.h"
#include "models/tpla.h"
#include "server/cli/tpla_calibrate_command.h"
#include "step_builder.h"

using namespace mlra;
namespace fs = std::filesystem;

namespace {

fs::path tiny(const char* v) {
  return fs::path(MLRA_TEST_DATA) / "tiny" / v;
}

fs::path scratch_dir() {
  const fs::path d = fs::temp_directory_path() / ("mlra_calib_" + std::to_string(::getpid()));
  fs::create_directories(d);
  return d;
}

std::vector<int32_t> random_tokens(int n, uint32_t seed, int vocab = 512) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = int32_t(rng() % uint32_t(vocab));
  return t;
}

// Release-format token file (256 x int32 header, uint16 tokens).
void write_token_file(const fs::path& p, const std::vector<int32_t>& tokens) {
  std::ofstream out(p, std::ios::binary);
  int32_t header[256] = {20240520, 1, int32_t(tokens.size())};
  out.write(reinterpret_cast<const char*>(header), sizeof(header));
  for (int32_t t : tokens) {
    const uint16_t v = uint16_t(t);
    out.write(reinterpret_cast<const char*>(&v), 2);
  }
}

// Keeps every observed row (double) per layer.
struct Recorder final : LatentObserver {
  std::vector<std::vector<double>> rows;
  int64_t width = 0;
  void observe(int64_t layer, const float* r, int64_t tokens, int64_t w) override {
    if (int64_t(rows.size()) <= layer) rows.resize(size_t(layer + 1));
    width = w;
    rows[size_t(layer)].insert(rows[size_t(layer)].end(), r, r + tokens * w);
  }
};

std::vector<double> direct_second_moment(const std::vector<double>& rows, int64_t n) {
  const int64_t count = int64_t(rows.size()) / n;
  std::vector<double> m(size_t(n * n), 0.0);
  for (int64_t t = 0; t < count; ++t)
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j)
        m[size_t(i * n + j)] += rows[size_t(t * n + i)] * rows[size_t(t * n + j)];
  for (auto& x : m) x /= double(count);
  return m;
}

double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double d = 0;
  for (size_t i = 0; i < a.size(); ++i) d = std::max(d, std::abs(a[i] - b[i]));
  return d;
}

// Largest |M_ij| / sqrt(M_ii M_jj) over i != j.
double max_correlation(const std::vector<double>& m, int64_t n) {
  double worst = 0;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j)
      if (i != j)
        worst = std::max(worst, std::abs(m[size_t(i * n + j)]) /
                                    std::sqrt(m[size_t(i * n + i)] * m[size_t(j * n + j)]));
  return worst;
}

CalibrationOptions small_run() {
  CalibrationOptions o;
  o.window = 100;
  o.max_tokens = 250;  // windows of 100, 100 and 50 tokens
  return o;
}

ModelConfig tpla_config(const std::string& transform) {
  ModelConfig c = load_model_config(tiny("mla") / "config.json", *parse_variant("mla"));
  c.mla_tp_mode = LatentTpMode::kTpla;
  c.tpla_options.transform = transform;
  c.tpla_options.slices = 1;
  c.tpla_options.pd_separation = false;
  return c;
}

// Second moments of the cache rows when serving `transform` with one slice (U^T c, unsliced).
LatentMoments served_moments(const std::vector<int32_t>& tokens, const std::string& transform) {
  const ModelConfig c = tpla_config(transform);
  LatentMoments m(c.n_layer, c.latent_dim());
  observe_calibration_run(tiny("mla"), c, tokens, small_run(), m);
  return m;
}

struct Captured {
  int code;
  std::string text;
};

Captured calibrate(const TplaCalibrateArgs& a) {
  std::FILE* err = std::tmpfile();
  const int code = run_tpla_calibrate(a, err);
  std::rewind(err);
  std::string text;
  for (int ch; (ch = std::fgetc(err)) != EOF;) text.push_back(char(ch));
  std::fclose(err);
  return {code, text};
}

}  // namespace

TEST_CASE("streamed second moments equal a direct sum", "[tpla][calibration]") {
  std::mt19937 rng(11);
  std::normal_distribution<float> n;
  const int64_t width = 7;
  LatentMoments m(2, width);
  std::vector<double> all;
  for (int64_t tokens : {1, 5, 13}) {
    std::vector<float> rows(size_t(tokens * width));
    for (auto& x : rows) x = n(rng);
    m.observe(1, rows.data(), tokens, width);
    all.insert(all.end(), rows.begin(), rows.end());
  }
  CHECK(m.count(0) == 0);
  CHECK(m.count(1) == 19);
  CHECK(max_abs_diff(m.second_moment(1), direct_second_moment(all, width)) < 1e-12);
  std::vector<float> wrong(14);
  CHECK_THROWS(m.observe(0, wrong.data(), 2, 6));
  CHECK_THROWS(m.second_moment(0));
}

TEST_CASE("calibration moments are those of the latents the model caches", "[tpla][calibration]") {
  const auto tokens = random_tokens(300, 5);
  // The same run, recorded row by row, must give the same moments as the streamed sums.
  struct Tee final : LatentObserver {
    Recorder rec;
    LatentMoments moments{2, 32};
    void observe(int64_t l, const float* r, int64_t t, int64_t w) override {
      rec.observe(l, r, t, w);
      moments.observe(l, r, t, w);
    }
  } tee;
  ModelConfig c = load_model_config(tiny("mla") / "config.json", *parse_variant("mla"));
  observe_calibration_run(tiny("mla"), c, tokens, small_run(), tee);
  const LatentMoments streamed =
      collect_latent_moments(tiny("mla"), *parse_variant("mla"), tokens, small_run());
  REQUIRE(streamed.layers() == 2);
  REQUIRE(tee.rec.rows.size() == 2);
  for (int64_t l = 0; l < 2; ++l) {
    CHECK(streamed.count(l) == 250);
    CHECK(int64_t(tee.rec.rows[size_t(l)].size()) == 250 * 32);
    const auto direct = direct_second_moment(tee.rec.rows[size_t(l)], 32);
    CHECK(max_abs_diff(streamed.second_moment(l), direct) < 1e-9 * direct[0]);
  }
  // The rows are the cache's latent part: c = kv_scale * g (.) n(a), so mean(c_i^2 / g_i^2) is
  // kv_scale^2 (an RMS-normed row has mean square 1) for every row.
  const auto ckpt = Checkpoint::open(tiny("mla"));
  const auto g = ckpt->read_f32("transformer.h.0.attn.kv_a_layernorm.weight");
  const double s2 = double(c.kv_scale()) * c.kv_scale();
  for (size_t t = 0; t < 250; t += 37) {
    double ms = 0;
    for (size_t i = 0; i < 32; ++i) ms += std::pow(tee.rec.rows[0][t * 32 + i] / g[i], 2);
    CHECK(std::abs(ms / 32 / s2 - 1) < 1e-3);
  }
}

TEST_CASE("tpla-calibrate writes an orthogonal PCA transform that is exact unsliced",
          "[tpla][calibration]") {
  const fs::path dir = scratch_dir();
  const auto tokens = random_tokens(250, 9);
  write_token_file(dir / "calib.bin", tokens);
  TplaCalibrateArgs a;
  a.model_dir = tiny("mla").string();
  a.token_files = {(dir / "calib.bin").string()};
  a.window = 100;
  a.out = (dir / "pca.tpla").string();
  const Captured run = calibrate(a);
  INFO(run.text);
  REQUIRE(run.code == 0);
  for (int64_t l = 0; l < 2; ++l) {
    const auto u = load_transform_layer(a.out, l, 32);
    // float32 storage bounds orthogonality at ~1e-7.
    for (int i = 0; i < 32; ++i)
      for (int j = 0; j < 32; ++j) {
        double dot = 0;
        for (int k = 0; k < 32; ++k) dot += double(u[size_t(k * 32 + i)]) * u[size_t(k * 32 + j)];
        CHECK(std::abs(dot - (i == j ? 1.0 : 0.0)) < 1e-6);
      }
  }
  CHECK_THROWS(load_transform_layer(a.out, 2, 32));

  // Unsliced (TP1, one slice) the transform folds away exactly: logits equal plain MLA.
  auto runner = [&](bool tpla) {
    RunnerConfig o;
    o.model_dir = tiny("mla");
    o.variant = "mla";
    o.page_size = 8;
    o.num_pages = 16;
    if (tpla) {
      o.mla_tp_mode = LatentTpMode::kTpla;
      o.tpla = tpla_config(a.out).tpla_options;
    }
    return make_local_runner(o);
  };
  const auto prompt = random_tokens(21, 4);
  auto base = runner(false), pca = runner(true);
  for (const auto& step : {testing::build_step({{0, 0, prompt, true}}, 8, 16),
                           testing::build_step({{0, 21, {7}, true}}, 8, 16),
                           testing::build_step({{0, 22, {300}, true}}, 8, 16)}) {
    std::vector<float> want, got;
    base->execute(step, want);
    pca->execute(step, got);
    CHECK(testing::rel_l2(got, want) < 1e-5);
  }
  fs::remove_all(dir);
}

TEST_CASE("served PCA latents are decorrelated, largest first, on the calibration set",
          "[tpla][calibration]") {
  const fs::path dir = scratch_dir();
  const auto tokens = random_tokens(250, 21);
  const LatentMoments calib =
      collect_latent_moments(tiny("mla"), *parse_variant("mla"), tokens, small_run());
  const auto ckpt = Checkpoint::open(tiny("mla"));
  std::vector<std::vector<float>> right, wrong;
  for (int64_t l = 0; l < 2; ++l) {
    const auto m = calib.second_moment(l);
    right.push_back(slice_ordered_pca(m, 32, SliceOrder::kDescending, 1));
    // What a collector that tapped the latent before the RMSNorm gain g would have produced.
    const auto g =
        ckpt->read_f32("transformer.h." + std::to_string(l) + ".attn.kv_a_layernorm.weight");
    auto pre_gain = m;
    for (int i = 0; i < 32; ++i)
      for (int j = 0; j < 32; ++j)
        pre_gain[size_t(i * 32 + j)] /= double(g[size_t(i)]) * g[size_t(j)];
    wrong.push_back(slice_ordered_pca(pre_gain, 32, SliceOrder::kDescending, 1));
  }
  save_transform_file(dir / "right.tpla", right, 32);
  save_transform_file(dir / "wrong.tpla", wrong, 32);
  const LatentMoments served = served_moments(tokens, (dir / "right.tpla").string());
  const LatentMoments served_wrong = served_moments(tokens, (dir / "wrong.tpla").string());
  for (int64_t l = 0; l < 2; ++l) {
    const auto m = served.second_moment(l);
    CAPTURE(l);
    CHECK(max_correlation(m, 32) < 1e-4);
    for (int i = 1; i < 32; ++i) CHECK(m[size_t(i * 33)] <= m[size_t((i - 1) * 33)] * (1 + 1e-6));
    CHECK(max_correlation(served_wrong.second_moment(l), 32) > 1e-2);
  }
  fs::remove_all(dir);
}

TEST_CASE("interleaved order deals components round-robin to slices", "[tpla][calibration]") {
  std::mt19937 rng(2);
  std::normal_distribution<double> n;
  std::vector<double> a(12 * 12), m(12 * 12, 0.0);
  for (auto& x : a) x = n(rng);
  for (int i = 0; i < 12; ++i)
    for (int j = 0; j < 12; ++j)
      for (int k = 0; k < 12; ++k)
        m[size_t(i * 12 + j)] += a[size_t(i * 12 + k)] * a[size_t(j * 12 + k)];
  const auto desc = slice_ordered_pca(m, 12, SliceOrder::kDescending, 3);
  const auto inter = slice_ordered_pca(m, 12, SliceOrder::kInterleaved, 3);
  for (int r = 0; r < 3; ++r)
    for (int j = 0; j < 4; ++j)
      for (int i = 0; i < 12; ++i)
        CHECK(inter[size_t(i * 12 + r * 4 + j)] == desc[size_t(i * 12 + j * 3 + r)]);
  CHECK_THROWS(slice_ordered_pca(m, 12, SliceOrder::kInterleaved, 5));
}

TEST_CASE("tpla-calibrate rejects bad inputs with one line", "[tpla][calibration]") {
  const fs::path dir = scratch_dir();
  std::ofstream(dir / "empty.txt").close();
  std::ofstream(dir / "text.txt") << "Once upon a time";
  write_token_file(dir / "big_ids.bin", {1, 2, 40000});
  write_token_file(dir / "ok.bin", random_tokens(50, 1));
  TplaCalibrateArgs base;
  base.model_dir = tiny("mla").string();
  base.token_files = {(dir / "ok.bin").string()};
  base.out = (dir / "out.tpla").string();
  struct Case {
    const char* name;
    std::function<void(TplaCalibrateArgs&)> edit;
    const char* says;
  };
  const std::vector<Case> cases = {
      {"not MLA", [&](auto& a) { a.model_dir = tiny("mlra4").string(); },
       "is not an MLA checkpoint"},
      {"variant", [&](auto& a) { a.attention = "gla2"; }, "for MLA checkpoints, not gla2"},
      {"no model", [&](auto& a) { a.model_dir = (dir / "nothing").string(); }, "nothing"},
      {"empty text", [&](auto& a) { a.text_files = {(dir / "empty.txt").string()}; }, "is empty"},
      {"unreadable text", [&](auto& a) { a.text_files = {(dir / "missing.txt").string()}; },
       "cannot read"},
      {"tokenizer folder",
       [&](auto& a) {
         a.text_files = {(dir / "text.txt").string()};
         a.tokenizer_dir = dir.string();
       },
       "holds no tokenizer files"},
      {"unreadable tokens", [&](auto& a) { a.token_files = {(dir / "missing.bin").string()}; },
       "cannot open"},
      {"no input", [&](auto& a) { a.token_files.clear(); }, "no calibration input"},
      {"vocabulary", [&](auto& a) { a.token_files = {(dir / "big_ids.bin").string()}; },
       "outside the model's vocabulary"},
      {"window", [&](auto& a) { a.window = 4096; }, "exceeds the model's block_size"},
      {"order", [&](auto& a) { a.order = "random"; }, "--order"},
      {"slices",
       [&](auto& a) {
         a.order = "interleaved";
         a.slices = 3;
       },
       "does not split into 3"},
      {"out folder", [&](auto& a) { a.out = (dir / "no" / "x.tpla").string(); }, "does not exist"},
  };
  for (const auto& c : cases) {
    INFO(c.name);
    TplaCalibrateArgs a = base;
    c.edit(a);
    const Captured r = calibrate(a);
    INFO(r.text);
    CHECK(r.code == 2);
    CHECK(r.text.find(c.says) != std::string::npos);
    CHECK(std::count(r.text.begin(), r.text.end(), '\n') == 1);
  }
  CHECK(!fs::exists(base.out));
  fs::remove_all(dir);
}

TEST_CASE("the example TPLA config names a transform file and validates", "[tpla][calibration]") {
  const ServerConfig c =
      load_server_config(fs::path(MLRA_SOURCE_DIR) / "configs" / "mla_tpla_pca.json");
  CHECK_NOTHROW(validate_server_config(c));
  CHECK(c.runner.mla_tp_mode == LatentTpMode::kTpla);
  CHECK(fs::path(c.runner.tpla.transform).is_absolute());  // relative paths would follow the cwd
}

TEST_CASE("perplexity --prefill measures TPLA decode under pd separation", "[tpla][calibration]") {
  const auto tokens = random_tokens(2 * 40 + 1, 17);
  auto ppl = [&](bool tpla, bool pd_sep, int32_t prefill) {
    RunnerConfig o;
    o.model_dir = tiny("mla");
    o.variant = "mla";
    o.page_size = 8;
    o.num_pages = 8;
    if (tpla) {
      o.mla_tp_mode = LatentTpMode::kTpla;
      o.tpla.transform = "identity";
      o.tpla.slices = 2;  // sliced on one rank: the same numbers as TP2
      o.tpla.pd_separation = pd_sep;
    }
    auto runner = make_local_runner(o);
    return evaluate_perplexity(*runner, tokens, 40, 2, prefill);
  };
  const auto mla = ppl(false, false, 0), mla_split = ppl(false, false, 16);
  CHECK(mla_split.tokens == 80);
  CHECK(mla_split.continuation_tokens == 48);
  CHECK(std::abs(mla_split.mean_nll - mla.mean_nll) < 1e-5);  // a continuation is exact for MLA
  const auto sliced = ppl(true, false, 0), sliced_split = ppl(true, false, 16);
  CHECK(std::abs(sliced.mean_nll - mla.mean_nll) > 1e-6);
  CHECK(std::abs(sliced_split.mean_nll - sliced.mean_nll) < 1e-5);
  // pd separation: one prefill step is all exact MLA; after a prefill of 16 the rest is TPLA.
  const auto pd = ppl(true, true, 0), pd_split = ppl(true, true, 16);
  CHECK(std::abs(pd.mean_nll - mla.mean_nll) < 1e-5);
  auto prefix_nll = [](const PerplexityResult& r) {
    return r.mean_nll * double(r.tokens) - r.mean_nll_continuation * double(r.continuation_tokens);
  };
  CHECK(std::abs(prefix_nll(pd_split) - prefix_nll(mla_split)) < 1e-3);  // prefill part: exact
  CHECK(std::abs(pd_split.mean_nll_continuation - mla_split.mean_nll_continuation) > 1e-6);
  CHECK(std::abs(pd_split.mean_nll - mla.mean_nll) > 1e-6);
  CHECK_THROWS(ppl(false, false, 40));
}
