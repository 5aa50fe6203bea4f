// Stop strings across token boundaries: held-back text, exclusion of the match, earliest match,
// release at the end; and OutputStream's finish reasons (EOS, stop ids, stop strings, length).
#include <catch2/catch.hpp>

#include <random>

#include "engine/output_stream.h"
#include "engine/stop_matcher.h"
#include "tests/fake_model_runner.h"

using namespace mlra;

namespace {

// Feeds pieces one by one; returns all released text and whether/what stopped.
std::pair<std::string, std::string> run(std::vector<std::string> stops,
                                        const std::vector<std::string>& pieces) {
  StopMatcher m(std::move(stops));
  std::string out;
  for (const auto& p : pieces) {
    auto r = m.feed(p);
    out += r.text;
    if (r.stopped) return {out, r.matched};
  }
  return {out + m.flush(), ""};
}

}  // namespace

TEST_CASE("a stop string split over tokens is found and cut with everything after it",
          "[engine][stop]") {
  auto [text, matched] = run({"END"}, {"hello E", "N", "D world"});
  CHECK(text == "hello ");
  CHECK(matched == "END");
}

TEST_CASE("text that may start a stop string is held back, then released", "[engine][stop]") {
  StopMatcher m({"abc"});
  CHECK(m.feed("xxa").text == "xx");
  CHECK(m.feed("b").text.empty());
  auto r = m.feed("d");
  CHECK(r.text == "abd");
  CHECK_FALSE(r.stopped);
  CHECK(m.feed("ab").text.empty());
  CHECK(m.flush() == "ab");  // generation ended for another reason
}

TEST_CASE("the earliest of several stop strings wins", "[engine][stop]") {
  auto [text, matched] = run({"world", "lo w"}, {"hel", "lo wor", "ld"});
  CHECK(text == "hel");
  CHECK(matched == "lo w");
}

TEST_CASE("random streams: output equals the text before the first match", "[engine][stop]") {
  std::mt19937_64 rng(3);
  for (int trial = 0; trial < 500; ++trial) {
    std::string full;
    for (int i = 0; i < 40; ++i) full += static_cast<char>('a' + rng() % 3);
    std::vector<std::string> stops;
    for (int s = 0; s < 1 + static_cast<int>(rng() % 3); ++s) {
      std::string stop;
      for (int i = 0; i < 2 + static_cast<int>(rng() % 4); ++i)
        stop += static_cast<char>('a' + rng() % 3);
      stops.push_back(stop);
    }
    size_t first = std::string::npos;
    for (const auto& s : stops) first = std::min(first, full.find(s));
    std::vector<std::string> pieces;
    for (size_t at = 0; at < full.size();) {
      const size_t len = 1 + rng() % 4;
      pieces.push_back(full.substr(at, len));
      at += len;
    }
    auto [text, matched] = run(stops, pieces);
    INFO(full);
    CHECK(text == full.substr(0, first));
    CHECK(matched.empty() == (first == std::string::npos));
  }
}

TEST_CASE("output stream finish reasons: EOS, stop token id, stop string, length",
          "[engine][stop]") {
  using mlra::testing::fake_token_text;
  auto decoder = [] { return std::make_unique<mlra::testing::FakeStreamDecoder>(); };
  const int32_t eos = 99;
  SamplingParams p;
  p.max_tokens = 10;
  p.stop_token_ids = {7};
  {
    OutputStream out(p, eos, decoder());
    auto c = out.on_token(1, 1, nullptr);
    CHECK(c.text == fake_token_text(1));
    CHECK(c.finish_reason == FinishReason::kNone);
    auto e = out.on_token(eos, 2, nullptr);
    CHECK(e.finish_reason == FinishReason::kEos);
    CHECK(e.text.empty());
    CHECK(e.token_ids == std::vector<int32_t>{eos});
  }
  {
    OutputStream out(p, eos, decoder());
    auto c = out.on_token(7, 1, nullptr);
    CHECK(c.finish_reason == FinishReason::kStop);
    CHECK(c.text.empty());
  }
  {
    SamplingParams ignore = p;
    ignore.ignore_eos = true;
    ignore.max_tokens = 2;
    OutputStream out(ignore, eos, decoder());
    CHECK(out.on_token(eos, 1, nullptr).finish_reason == FinishReason::kNone);
    CHECK(out.on_token(3, 2, nullptr).finish_reason == FinishReason::kLength);
  }
  {
    // Token 1 = "ba", token 2 = "ca": stop "ac" spans the boundary; "b" is released first.
    SamplingParams s = p;
    s.stop = {"ac"};
    OutputStream out(s, eos, decoder());
    auto c1 = out.on_token(1, 1, nullptr);
    CHECK(c1.text == "b");
    auto c2 = out.on_token(2, 2, nullptr);
    CHECK(c2.finish_reason == FinishReason::kStop);
    CHECK(c2.stop_string == "ac");
    CHECK(c2.text.empty());
  }
  {
    // Held-back text is released when max_tokens ends the stream.
    SamplingParams s = p;
    s.stop = {"az"};
    s.max_tokens = 1;
    OutputStream out(s, eos, decoder());
    auto c = out.on_token(1, 1, nullptr);
    CHECK(c.finish_reason == FinishReason::kLength);
    CHECK(c.text == "ba");
  }
}
