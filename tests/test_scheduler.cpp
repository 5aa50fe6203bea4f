// Scheduler scenarios with the fake runner: chunked prefill, decodes first under a budget,
// running limit, preemption with unchanged output, cancellation freeing pages, prefix reuse.
// Outputs are compared with an independent greedy loop over the fake logits (no cache at all).
#include <catch2/catch.hpp>

#include <algorithm>
#include <random>

#include "engine/block_manager.h"
#include "engine/scheduler.h"
#include "tests/fake_model_runner.h"

using namespace mlra;
using namespace mlra::testing;

namespace {

std::vector<int32_t> reference_greedy(std::vector<int32_t> history, int n,
                                      const FakeRunnerOptions& o) {
  std::vector<float> row(static_cast<size_t>(o.vocab_size));
  std::vector<int32_t> out;
  for (int i = 0; i < n; ++i) {
    fake_logits(history, o.vocab_size, o.text_vocab_size, row.data());
    const auto best = std::max_element(row.begin(), row.begin() + o.text_vocab_size) - row.begin();
    out.push_back(static_cast<int32_t>(best));
    history.push_back(static_cast<int32_t>(best));
  }
  return out;
}

std::vector<int32_t> random_prompt(std::mt19937_64& rng, int n, int vocab) {
  std::vector<int32_t> p(static_cast<size_t>(n));
  for (auto& t : p) t = static_cast<int32_t>(rng() % static_cast<uint64_t>(vocab));
  return p;
}

// Scheduler + block manager + fake runner + greedy argmax, stepping like the engine does.
struct Driver {
  Driver(FakeRunnerOptions o, SchedulerOptions so, bool prefix_cache = true)
      : opts(o),
        runner(o),
        bm(o.num_pages, o.page_size, prefix_cache),
        sch(bm, so),
        budget(so.max_step_tokens) {}

  Sequence* add(std::vector<int32_t> prompt, int32_t max_tokens) {
    auto s = std::make_unique<Sequence>();
    s->id = seqs.size();
    s->tokens = std::move(prompt);
    s->num_prompt = s->size();
    s->params.max_tokens = max_tokens;
    sch.add(s.get());
    seqs.push_back(std::move(s));
    return seqs.back().get();
  }

  ScheduledStep step() {
    ScheduledStep plan = sch.schedule();
    REQUIRE(plan.batch.num_tokens() <= budget);
    if (plan.empty()) return plan;
    std::vector<float> logits;
    runner.execute(plan.batch, logits);
    sch.on_step_done(plan);
    size_t row = 0;
    for (const ScheduledSeq& s : plan.seqs) {
      if (!s.sample) continue;
      const float* r = logits.data() + row++ * opts.vocab_size;
      const int32_t tok = static_cast<int32_t>(std::max_element(r, r + opts.text_vocab_size) - r);
      s.seq->tokens.push_back(tok);
      if (s.seq->num_generated() >= s.seq->params.max_tokens) sch.finish(s.seq);
    }
    check();
    return plan;
  }

  void run_to_end(int max_steps = 10000) {
    for (int i = 0; i < max_steps && sch.has_work(); ++i) step();
    REQUIRE_FALSE(sch.has_work());
  }

  void check() const {
    std::vector<const BlockTable*> tables;
    for (const auto& s : seqs) {
      if (s->status != SequenceStatus::kFinished) tables.push_back(&s->block_table);
    }
    const std::string violation = bm.check_invariants(tables);
    INFO(violation);
    REQUIRE(violation.empty());
  }

  std::vector<int32_t> generated(const Sequence* s) const {
    return {s->tokens.begin() + s->num_prompt, s->tokens.end()};
  }

  FakeRunnerOptions opts;
  FakeModelRunner runner;
  BlockManager bm;
  Scheduler sch;
  int32_t budget;
  std::vector<std::unique_ptr<Sequence>> seqs;
};

}  // namespace

TEST_CASE("chunked prefill splits a long prompt under the token budget", "[engine][scheduler]") {
  std::mt19937_64 rng(1);
  FakeRunnerOptions o;
  Driver d(o, {8, 8});
  auto prompt = random_prompt(rng, 21, 280);
  Sequence* s = d.add(prompt, 5);
  auto p1 = d.step();
  CHECK(p1.batch.num_tokens() == 8);
  CHECK(p1.batch.logit_rows.empty());
  auto p2 = d.step();
  CHECK(p2.batch.positions.front() == 8);
  CHECK(p2.batch.logit_rows.empty());
  auto p3 = d.step();
  CHECK(p3.batch.num_tokens() == 5);
  REQUIRE(p3.batch.logit_rows.size() == 1);
  CHECK(p3.batch.logit_rows[0] == 4);
  CHECK(s->num_generated() == 1);
  d.run_to_end();
  CHECK(d.generated(s) == reference_greedy(prompt, 5, o));
  CHECK(d.bm.num_used() == 0);
}

TEST_CASE("decodes are scheduled before prefills and the budget is never exceeded",
          "[engine][scheduler]") {
  std::mt19937_64 rng(2);
  FakeRunnerOptions o;
  Driver d(o, {8, 6});
  std::vector<std::vector<int32_t>> prompts;
  std::vector<Sequence*> seqs;
  for (int i = 0; i < 3; ++i) {
    prompts.push_back(random_prompt(rng, 2, 280));
    seqs.push_back(d.add(prompts.back(), 12));
  }
  d.step();  // admits all three short prompts (6 tokens)
  prompts.push_back(random_prompt(rng, 17, 280));
  seqs.push_back(d.add(prompts.back(), 4));
  auto plan = d.step();
  REQUIRE(plan.seqs.size() == 4);
  for (int i = 0; i < 3; ++i) CHECK(plan.seqs[static_cast<size_t>(i)].num_tokens == 1);
  CHECK(plan.seqs[3].seq == seqs[3]);
  CHECK(plan.seqs[3].num_tokens == 3);
  CHECK(plan.batch.num_tokens() == 6);
  CHECK(plan.batch.logit_rows == std::vector<int32_t>{0, 1, 2});
  d.run_to_end();
  for (size_t i = 0; i < seqs.size(); ++i) {
    CHECK(d.generated(seqs[i]) == reference_greedy(prompts[i], seqs[i]->params.max_tokens, o));
  }
}

TEST_CASE("the running-sequence limit holds and admission is first come first served",
          "[engine][scheduler]") {
  std::mt19937_64 rng(3);
  FakeRunnerOptions o;
  Driver d(o, {2, 64});
  std::vector<Sequence*> seqs;
  for (int i = 0; i < 5; ++i) seqs.push_back(d.add(random_prompt(rng, 3 + i, 280), 3 + i));
  std::vector<uint64_t> admission;
  for (int i = 0; i < 1000 && d.sch.has_work(); ++i) {
    CHECK(d.sch.running().size() <= 2);
    auto plan = d.step();
    for (const auto& s : plan.seqs) {
      if (std::find(admission.begin(), admission.end(), s.seq->id) == admission.end())
        admission.push_back(s.seq->id);
    }
  }
  CHECK(admission == std::vector<uint64_t>{0, 1, 2, 3, 4});
}

TEST_CASE("preemption by recompute resumes with identical output and frees everything",
          "[engine][scheduler][preemption]") {
  std::mt19937_64 rng(4);
  FakeRunnerOptions o;
  o.num_pages = 10;  // 40 tokens; three sequences need 28 each
  for (bool prefix_cache : {true, false}) {
    Driver d(o, {8, 16}, prefix_cache);
    std::vector<std::vector<int32_t>> prompts;
    std::vector<Sequence*> seqs;
    for (int i = 0; i < 3; ++i) {
      prompts.push_back(random_prompt(rng, 8, 280));
      seqs.push_back(d.add(prompts.back(), 20));
    }
    d.run_to_end();
    CHECK(d.sch.num_preemptions() > 0);
    int preempted = 0;
    for (size_t i = 0; i < seqs.size(); ++i) {
      preempted += seqs[i]->num_preemptions > 0;
      CHECK(d.generated(seqs[i]) == reference_greedy(prompts[i], 20, o));
    }
    CHECK(preempted > 0);
    CHECK(d.bm.num_used() == 0);
    for (int32_t p = 0; p < o.num_pages; ++p) CHECK(d.bm.ref_count(p) == 0);
  }
}

TEST_CASE("cancellation mid-prefill and mid-decode frees pages at once",
          "[engine][scheduler][cancel]") {
  std::mt19937_64 rng(5);
  FakeRunnerOptions o;
  Driver d(o, {8, 8});
  Sequence* a = d.add(random_prompt(rng, 30, 280), 50);
  auto b_prompt = random_prompt(rng, 3, 280);
  d.step();
  REQUIRE(a->num_computed == 8);
  REQUIRE(a->num_computed < a->num_prompt);
  const int64_t used = d.bm.num_used();
  CHECK(used == 2);
  d.sch.finish(a);  // mid-prefill
  CHECK(d.bm.num_used() == 0);
  d.check();

  Sequence* b = d.add(b_prompt, 50);
  for (int i = 0; i < 6; ++i) d.step();
  REQUIRE(b->num_generated() == 6);
  CHECK(d.bm.num_used() == 2);
  d.sch.finish(b);  // mid-decode
  CHECK(d.bm.num_used() == 0);
  CHECK_FALSE(d.sch.has_work());
  d.check();
  CHECK(d.sch.schedule().empty());
}

TEST_CASE("a shared prompt prefix is computed once and the output is unchanged",
          "[engine][scheduler][prefix]") {
  std::mt19937_64 rng(6);
  FakeRunnerOptions o;
  Driver d(o, {8, 64});
  auto stem = random_prompt(rng, 16, 280);  // four full pages
  auto p1 = stem;
  p1.push_back(7);
  p1.push_back(9);
  auto p2 = stem;
  p2.push_back(11);
  Sequence* a = d.add(p1, 4);
  d.run_to_end();
  const int64_t tokens_before = d.runner.total_tokens();
  Sequence* b = d.add(p2, 4);
  auto plan = d.step();
  CHECK(plan.batch.num_tokens() == 1);  // only the token after the 16 cached ones
  CHECK(plan.batch.positions[0] == 16);
  CHECK(b->num_cached_prompt == 16);
  CHECK(d.sch.prefix_hit_tokens() == 16);
  d.run_to_end();
  CHECK(d.runner.total_tokens() - tokens_before == 1 + 3);
  CHECK(d.generated(a) == reference_greedy(p1, 4, o));
  CHECK(d.generated(b) == reference_greedy(p2, 4, o));

  // The identical prompt (a multiple of the page size) keeps its last page to compute logits.
  Sequence* c = d.add(stem, 2);
  auto plan_c = d.step();
  CHECK(plan_c.batch.num_tokens() == 4);
  CHECK(plan_c.batch.positions[0] == 12);
  CHECK(c->num_cached_prompt == 12);
  d.run_to_end();
  CHECK(d.generated(c) == reference_greedy(stem, 2, o));
}

TEST_CASE("random workloads under memory pressure match the reference",
          "[engine][scheduler][preemption]") {
  std::mt19937_64 rng(8);
  FakeRunnerOptions o;
  o.num_pages = 24;
  Driver d(o, {6, 10});
  auto stem = random_prompt(rng, 9, 280);
  std::vector<std::vector<int32_t>> prompts;
  std::vector<Sequence*> seqs;
  for (int i = 0; i < 24; ++i) {
    auto p = (i % 2 == 0) ? stem : random_prompt(rng, 1 + static_cast<int>(rng() % 12), 280);
    auto tail = random_prompt(rng, static_cast<int>(rng() % 4), 280);
    p.insert(p.end(), tail.begin(), tail.end());
    prompts.push_back(p);
    seqs.push_back(d.add(p, 1 + static_cast<int32_t>(rng() % 30)));
    if (rng() % 3 == 0) d.step();
  }
  d.run_to_end();
  for (size_t i = 0; i < seqs.size(); ++i) {
    CHECK(d.generated(seqs[i]) == reference_greedy(prompts[i], seqs[i]->params.max_tokens, o));
  }
  CHECK(d.bm.num_used() == 0);
}
