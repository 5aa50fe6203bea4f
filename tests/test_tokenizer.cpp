// GPT-2 tokenizer tests: ids equal an independent implementation (npm gpt-3-encoder, ids in
// tests/data/tokenizer/corpus.json) and a naive GPT-2 merge loop written here; round trips on
// random mixed-script text; streaming detokenization; tokenizer.json loading; where the files are
// found; speed on long runs.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>

#include <unistd.h>

#include "models/gpt2_tokenizer.h"
#include "models/incremental_detokenizer.h"
#include "models/utf8.h"

namespace fs = std::filesystem;
using mlra::Gpt2Tokenizer;

namespace {

const fs::path kAssets = fs::path(MLRA_SOURCE_DIR) / "models" / "assets" / "gpt2";

const Gpt2Tokenizer& tokenizer() {
  static const Gpt2Tokenizer tok = Gpt2Tokenizer::load(kAssets);
  return tok;
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Reference ids of a corpus entry: gpt-3-encoder's, or the hand-checked tiktoken ids where the
// JavaScript regex's \s differs (see the entry's "note").
std::vector<int32_t> reference_ids(const nlohmann::json& entry) {
  return entry.value("tiktoken_ids", entry.at("ids")).get<std::vector<int32_t>>();
}

nlohmann::json corpus() {
  static const nlohmann::json j =
      nlohmann::json::parse(read_file(fs::path(MLRA_TEST_DATA) / "tokenizer" / "corpus.json"));
  return j;
}

// Validity judged by PCRE2's own UTF-8 checker, independent of models/utf8.cpp.
bool pcre2_valid_utf8(const std::string& s) {
  int err = 0;
  PCRE2_SIZE off = 0;
  static pcre2_code* empty =
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(""), 0, PCRE2_UTF, &err, &off, nullptr);
  pcre2_match_data* md = pcre2_match_data_create(1, nullptr);
  const int rc =
      pcre2_match(empty, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), 0, 0, md, nullptr);
  pcre2_match_data_free(md);
  return rc >= 0;
}

void append_utf8(uint32_t cp, std::string& out) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// Random valid UTF-8 drawn from mixed scripts, whitespace, digits, punctuation and emoji.
std::string random_text(std::mt19937& rng, int max_chars) {
  static const std::vector<std::pair<uint32_t, uint32_t>> kRanges = {
      {0x20, 0x7E},     {0x20, 0x20},       {0x09, 0x0D},       {0xA0, 0xFF},     {0x100, 0x17F},
      {0x300, 0x36F},   {0x391, 0x3C9},     {0x410, 0x44F},     {0x5D0, 0x5EA},   {0x627, 0x64A},
      {0x660, 0x669},   {0x905, 0x939},     {0x3041, 0x3096},   {0x4E00, 0x9FFF}, {0xAC00, 0xD7A3},
      {0x2000, 0x206F}, {0x1F300, 0x1F64F}, {0x1F900, 0x1F9FF}, {0x85, 0x85},     {0x2028, 0x2029},
      {0x3000, 0x3000}, {0xFE0F, 0xFE0F},   {0x10000, 0x1007F}};
  std::uniform_int_distribution<int> len_dist(0, max_chars);
  std::uniform_int_distribution<size_t> range_dist(0, kRanges.size() - 1);
  std::string out;
  for (int n = len_dist(rng); n > 0; --n) {
    const auto [lo, hi] = kRanges[range_dist(rng)];
    append_utf8(std::uniform_int_distribution<uint32_t>(lo, hi)(rng), out);
  }
  return out;
}

// Naive GPT-2 BPE on the byte-level spelling, written from the published algorithm: repeatedly
// merge every occurrence of the lowest-ranked adjacent pair, left to right.
class NaiveBpe {
 public:
  NaiveBpe() {
    encoder_ = nlohmann::json::parse(read_file(kAssets / "encoder.json"));
    std::istringstream in(read_file(kAssets / "vocab.bpe"));
    std::string line;
    std::getline(in, line);  // #version
    for (int rank = 0; std::getline(in, line);) {
      if (line.empty()) continue;
      const size_t sp = line.find(' ');
      by_rank_.emplace_back(line.substr(0, sp), line.substr(sp + 1));
      ranks_[by_rank_.back()] = rank++;
    }
    uint32_t next = 256;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
      spell_[b].clear();
      append_utf8(printable ? b : next++, spell_[b]);
    }
  }

  std::vector<int32_t> encode_piece(const std::string& piece) const {
    std::vector<std::string> word;
    for (unsigned char c : piece) word.push_back(spell_[c]);
    while (word.size() > 1) {
      int best = -1;
      for (size_t i = 0; i + 1 < word.size(); ++i) {
        auto it = ranks_.find({word[i], word[i + 1]});
        if (it != ranks_.end() && (best < 0 || it->second < best)) best = it->second;
      }
      if (best < 0) break;
      const auto& pair = by_rank_[best];
      std::vector<std::string> merged;
      for (size_t i = 0; i < word.size();) {
        if (i + 1 < word.size() && word[i] == pair.first && word[i + 1] == pair.second) {
          merged.push_back(word[i] + word[i + 1]);
          i += 2;
        } else {
          merged.push_back(word[i++]);
        }
      }
      word = std::move(merged);
    }
    std::vector<int32_t> ids;
    for (const auto& w : word) ids.push_back(encoder_.at(w).get<int32_t>());
    return ids;
  }

 private:
  nlohmann::json encoder_;
  std::map<std::pair<std::string, std::string>, int> ranks_;
  std::vector<std::pair<std::string, std::string>> by_rank_;
  std::string spell_[256];
};

}  // namespace

TEST_CASE("GPT-2 vocabulary basics", "[tokenizer]") {
  const auto& tok = tokenizer();
  CHECK(tok.vocab_size() == 50257);
  CHECK(tok.eot_id() == 50256);
  CHECK(tok.token_bytes(50256) == "<|endoftext|>");
  CHECK(tok.token_bytes(220) == " ");
  CHECK(tok.token_bytes(198) == "\n");
  CHECK(tok.encode("Hello world") == std::vector<int32_t>{15496, 995});
}

TEST_CASE("encode matches gpt-3-encoder on the reference corpus", "[tokenizer]") {
  const auto& tok = tokenizer();
  const auto entries = corpus();
  REQUIRE(entries.size() >= 50);
  for (const auto& e : entries) {
    const std::string text = e.at("text");
    INFO("text: " << text);
    CHECK(tok.encode(text) == reference_ids(e));
    CHECK(tok.decode(tok.encode(text)) == text);
  }
}

TEST_CASE("heap BPE equals the naive GPT-2 merge loop on random words", "[tokenizer]") {
  const auto& tok = tokenizer();
  static const NaiveBpe naive;
  std::mt19937 rng(1234);
  const std::string letters = "etaoinshrdlucmfwypvbgkqjxzETAOINSHRD";
  for (int trial = 0; trial < 300; ++trial) {
    std::string word = trial % 2 ? " " : "";
    const int n = std::uniform_int_distribution<int>(1, 24)(rng);
    for (int i = 0; i < n; ++i)
      word += letters[std::uniform_int_distribution<size_t>(0, letters.size() - 1)(rng)];
    INFO("word: '" << word << "'");
    CHECK(tok.encode(word) == naive.encode_piece(word));
  }
  CHECK(tok.encode(std::string(300, 'a')) == naive.encode_piece(std::string(300, 'a')));
}

TEST_CASE("decode(encode(x)) == x on random mixed-script text", "[tokenizer]") {
  const auto& tok = tokenizer();
  std::mt19937 rng(42);
  for (int trial = 0; trial < 400; ++trial) {
    const std::string text = random_text(rng, 80);
    REQUIRE(pcre2_valid_utf8(text));
    const auto ids = tok.encode(text);
    for (int32_t id : ids) REQUIRE(tok.contains(id));
    CHECK(tok.decode(ids) == text);
  }
}

TEST_CASE("special tokens only with encode_with_special", "[tokenizer]") {
  const auto& tok = tokenizer();
  const std::string text = "a<|endoftext|>b <|endoftext|><|endoftext|>";
  const auto ordinary = tok.encode(text);
  CHECK(std::find(ordinary.begin(), ordinary.end(), 50256) == ordinary.end());
  std::vector<int32_t> expected = tok.encode("a");
  expected.push_back(50256);
  const auto b = tok.encode("b ");
  expected.insert(expected.end(), b.begin(), b.end());
  expected.push_back(50256);
  expected.push_back(50256);
  CHECK(tok.encode_with_special(text) == expected);
  CHECK(tok.decode(expected) == text);
}

TEST_CASE("invalid ids and invalid UTF-8 are rejected", "[tokenizer]") {
  const auto& tok = tokenizer();
  CHECK_THROWS_AS(tok.decode({15496, 50257}), mlra::TokenizerError);
  CHECK_THROWS_AS(tok.decode({-1}), mlra::TokenizerError);
  CHECK_THROWS_AS(tok.token_bytes(1 << 20), mlra::TokenizerError);
  CHECK_THROWS_AS(tok.encode("ok \xC3\x28 bad"), mlra::TokenizerError);
  CHECK_THROWS_AS(tok.encode("\xED\xA0\x80"), mlra::TokenizerError);  // a surrogate
  CHECK_THROWS_AS(Gpt2Tokenizer::load("/nonexistent/dir"), mlra::TokenizerError);
  mlra::IncrementalDetokenizer detok(tok);
  CHECK_THROWS_AS(detok.push(50257), mlra::TokenizerError);
}

TEST_CASE("long runs of one character encode fast", "[tokenizer]") {
  const auto& tok = tokenizer();
  for (const std::string unit :
       {"a", " ", "!", "7", "\n", "\xF0\x9F\x94\xA5", " a", "\xE4\xB8\xAD"}) {
    std::string text;
    while (text.size() < 100 * 1024) text += unit;
    const auto start = std::chrono::steady_clock::now();
    const auto ids = tok.encode(text);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    INFO("unit '" << unit << "' took " << seconds << " s");
    CHECK(seconds < 0.5);
    CHECK(tok.decode(ids) == text);
  }
}

TEST_CASE("incremental detokenization concatenates to decode, deltas stay valid", "[tokenizer]") {
  const auto& tok = tokenizer();
  for (const auto& e : corpus()) {
    const auto ids = reference_ids(e);
    mlra::IncrementalDetokenizer detok(tok);
    std::string joined;
    for (int32_t id : ids) {
      const std::string delta = detok.push(id);
      CHECK(pcre2_valid_utf8(delta));
      joined += delta;
      CHECK(detok.pending_bytes() <= 3);
    }
    CHECK(detok.flush().empty());
    CHECK(joined == tok.decode(ids));
    CHECK(detok.text() == joined);
  }
}

TEST_CASE("incremental detokenization of random ids matches a final lossy decode", "[tokenizer]") {
  const auto& tok = tokenizer();
  std::mt19937 rng(7);
  std::uniform_int_distribution<int32_t> id_dist(0, tok.vocab_size() - 1);
  // Byte-only tokens (ids 0..255 spell single bytes) make broken characters likely.
  std::uniform_int_distribution<int32_t> byte_dist(0, 255);
  for (int trial = 0; trial < 300; ++trial) {
    std::vector<int32_t> ids(std::uniform_int_distribution<int>(1, 30)(rng));
    for (auto& id : ids) id = trial % 2 ? byte_dist(rng) : id_dist(rng);
    mlra::IncrementalDetokenizer detok(tok);
    std::string joined;
    for (int32_t id : ids) {
      const std::string delta = detok.push(id);
      REQUIRE(pcre2_valid_utf8(delta));
      joined += delta;
    }
    const std::string tail = detok.flush();
    REQUIRE(pcre2_valid_utf8(tail));
    joined += tail;
    CHECK(joined == mlra::utf8_repair(tok.decode(ids)));
    CHECK(detok.text() == joined);
  }
}

TEST_CASE("utf8_repair follows Python's errors='replace'", "[tokenizer]") {
  const std::string r = "\xEF\xBF\xBD";
  // Expected values from CPython: bytes.decode("utf-8", errors="replace").
  CHECK(mlra::utf8_repair("abc") == "abc");
  CHECK(mlra::utf8_repair("\x80") == r);
  CHECK(mlra::utf8_repair("\xE2\x82") == r);  // truncated 3-byte: one U+FFFD
  CHECK(mlra::utf8_repair("\xE2\x82"
                          "A") == r + "A");
  CHECK(mlra::utf8_repair("\xF0\x9F\x98") == r);
  CHECK(mlra::utf8_repair("\xC0\xAF") == r + r);                  // overlong lead is invalid alone
  CHECK(mlra::utf8_repair("\xED\xA0\x80") == r + r + r);          // surrogate
  CHECK(mlra::utf8_repair("\xF4\x90\x80\x80") == r + r + r + r);  // above U+10FFFF
  CHECK(mlra::utf8_repair("\xE0\x80") == r + r);
  CHECK(mlra::utf8_repair("\xF1\x80\x41") == r + "A");
  std::string out;
  CHECK(mlra::utf8_repair_prefix("ok\xF0\x9F", false, &out) == 2);
  CHECK(out == "ok");
}

TEST_CASE("tokenizer.json loading gives the same ids", "[tokenizer]") {
  const nlohmann::json encoder = nlohmann::json::parse(read_file(kAssets / "encoder.json"));
  nlohmann::json merges = nlohmann::json::array();
  std::istringstream in(read_file(kAssets / "vocab.bpe"));
  std::string line;
  std::getline(in, line);
  while (std::getline(in, line))
    if (!line.empty()) merges.push_back(line);
  nlohmann::json j = {{"version", "1.0"},
                      {"added_tokens", {{{"id", 50256}, {"content", "<|endoftext|>"}}}},
                      {"model", {{"type", "BPE"}, {"vocab", encoder}, {"merges", merges}}}};
  const fs::path dir = fs::temp_directory_path() / ("mlra_tok_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "tokenizer.json") << j.dump();
  const Gpt2Tokenizer hf = Gpt2Tokenizer::load(dir);
  fs::remove_all(dir);
  CHECK(hf.vocab_size() == 50257);
  CHECK(hf.eot_id() == 50256);
  for (const auto& e : corpus()) {
    const std::string text = e.at("text");
    CHECK(hf.encode(text) == reference_ids(e));
  }
}

TEST_CASE("encode is thread safe and agrees across threads", "[tokenizer]") {
  const auto& tok = tokenizer();
  const Gpt2Tokenizer copy = tok;  // copies share the vocabulary and the cache
  std::mt19937 rng(99);
  std::vector<std::string> texts;
  for (int i = 0; i < 200; ++i) texts.push_back(random_text(rng, 60));
  std::vector<std::vector<int32_t>> expected;
  for (const auto& t : texts) expected.push_back(tok.encode(t));
  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (size_t i = 0; i < texts.size(); ++i)
        if ((t % 2 ? copy : tok).encode(texts[(i + t * 37) % texts.size()]) !=
            expected[(i + t * 37) % texts.size()])
          ++mismatches[t];
    });
  for (auto& th : threads) th.join();
  CHECK(mismatches == std::vector<int>(4, 0));
}

TEST_CASE("has_tokenizer_files wants a whole set of files", "[tokenizer]") {
  const fs::path dir = fs::temp_directory_path() / ("mlra_tokfiles_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  CHECK_FALSE(mlra::has_tokenizer_files(dir));  // missing folder
  fs::create_directories(dir);
  CHECK_FALSE(mlra::has_tokenizer_files(dir));
  std::ofstream(dir / "encoder.json") << "{}";
  CHECK_FALSE(mlra::has_tokenizer_files(dir));  // vocabulary without merges
  std::ofstream(dir / "vocab.bpe") << "";
  CHECK(mlra::has_tokenizer_files(dir));
  fs::remove(dir / "vocab.bpe");
  std::ofstream(dir / "merges.txt") << "";
  CHECK_FALSE(mlra::has_tokenizer_files(dir));  // merges of the other pair
  std::ofstream(dir / "vocab.json") << "{}";
  CHECK(mlra::has_tokenizer_files(dir));
  fs::remove_all(dir);
  fs::create_directories(dir / "tokenizer.json");  // a folder of that name is not the file
  CHECK_FALSE(mlra::has_tokenizer_files(dir));
  fs::remove_all(dir);
  CHECK(mlra::has_tokenizer_files(kAssets));
}

TEST_CASE("installed_tokenizer_dir finds the files of an image, a bundle and a build tree",
          "[tokenizer]") {
  const fs::path root = fs::temp_directory_path() / ("mlra_tokinst_" + std::to_string(::getpid()));
  fs::remove_all(root);
  auto place = [](const fs::path& dir) {
    fs::create_directories(dir);
    std::ofstream(dir / "encoder.json") << "{}";
    std::ofstream(dir / "vocab.bpe") << "";
  };
  // The image and bundle layout (docker/image_tree.sh, scripts/bundle.sh): bin/.real/<exe>.
  const fs::path image = root / "opt" / "mlra-serve";
  CHECK(mlra::installed_tokenizer_dir(image / "bin" / ".real" / "mlra-serve").empty());
  place(image / "share" / "mlra-serve" / "gpt2");
  CHECK(mlra::installed_tokenizer_dir(image / "bin" / ".real" / "mlra-serve") ==
        image / "share" / "mlra-serve" / "gpt2");
  CHECK(mlra::installed_tokenizer_dir(image / "bin" / "mlra-serve") ==
        image / "share" / "mlra-serve" / "gpt2");
  // A build tree: <source>/build/<preset>/server/<exe> finds <source>/models/assets/gpt2.
  const fs::path source = root / "src";
  place(source / "models" / "assets" / "gpt2");
  CHECK(mlra::installed_tokenizer_dir(source / "build" / "cpu" / "server" / "mlra-serve") ==
        source / "models" / "assets" / "gpt2");
  // Five folders up at most: a binary deeper than that finds nothing.
  CHECK(mlra::installed_tokenizer_dir(source / "a" / "b" / "c" / "d" / "e" / "mlra-serve").empty());
  fs::remove_all(root);

  // This test binary lives in a build tree of the source tree.
  CHECK(mlra::has_tokenizer_files(mlra::default_tokenizer_dir()));
}
