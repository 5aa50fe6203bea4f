// GPT-2 byte-level BPE. Text is split by the GPT-2 regex (PCRE2 JIT, UTF + UCP), each piece's
// bytes become byte tokens and are merged by rank (bpe_merge.cpp). Vocabulary strings are stored
// as raw bytes: the byte-to-unicode spelling of the files is undone once, at load time.
// Pieces that are whole tokens map directly, as tiktoken does; other short pieces are cached.
#define PCRE2_CODE_UNIT_WIDTH 8
#include "models/gpt2_tokenizer.h"

#include <pcre2.h>

#include <array>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <shared_mutex>
#include <sstream>
#include <unordered_map>

#include "models/bpe_merge.h"

namespace mlra {
namespace fs = std::filesystem;
namespace {

constexpr std::string_view kEotText = "<|endoftext|>";
constexpr size_t kMaxCachedWordBytes = 64;
constexpr size_t kMaxCachedWords = 1 << 17;
constexpr int64_t kMaxVocab = int64_t{1} << 22;

// GPT-2's pattern with \s spelled out as Unicode White_Space, the class tiktoken's regex engine
// and Python's `regex` use. PCRE2's UCP \s would also match U+180E, and JavaScript's \s (npm
// gpt-3-encoder) matches U+FEFF but not U+0085.
constexpr std::string_view kWs =
    "\\t-\\r "
    "\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}";

std::string gpt2_pattern() {
  const std::string ws(kWs);
  return "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" + ws + "\\p{L}\\p{N}]+|[" + ws +
         "]+(?![^" + ws + "])|[" + ws + "]+";
}

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
template <typename V>
using StringMap = std::unordered_map<std::string, V, StringHash, std::equal_to<>>;

// GPT-2's byte-to-unicode map: printable Latin-1 bytes spell themselves, the other 68 bytes take
// code points 256.. in byte order.
std::array<uint32_t, 256> byte_to_codepoint() {
  std::array<uint32_t, 256> map{};
  uint32_t next = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
    map[b] = printable ? b : next++;
  }
  return map;
}

// Undoes the byte-to-unicode spelling of one vocabulary string.
std::string unspell(const std::string& spelled) {
  static const std::unordered_map<uint32_t, char> kDecode = [] {
    std::unordered_map<uint32_t, char> m;
    const auto map = byte_to_codepoint();
    for (int b = 0; b < 256; ++b) m[map[b]] = static_cast<char>(b);
    return m;
  }();
  std::string out;
  for (size_t i = 0; i < spelled.size();) {
    const auto c = static_cast<uint8_t>(spelled[i]);
    const int len = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    uint32_t cp = len == 1 ? c : c & (0x3F >> (len - 1));
    for (int k = 1; k < len && i + k < spelled.size(); ++k)
      cp = (cp << 6) | (spelled[i + k] & 0x3F);
    auto it = kDecode.find(cp);
    if (it == kDecode.end())
      throw TokenizerError("vocabulary entry '" + spelled + "' is not byte-level BPE spelling");
    out.push_back(it->second);
    i += len;
  }
  return out;
}

std::string read_text(const fs::path& path) {
  std::error_code ec;
  const auto type = fs::status(path, ec).type();
  if (type != fs::file_type::regular && type != fs::file_type::not_found)
    throw TokenizerError("tokenizer file " + path.string() + " is not a regular file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw TokenizerError("cannot open tokenizer file " + path.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

nlohmann::json parse_json(std::string_view text, const std::string& what) {
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw TokenizerError(what + ": invalid JSON: " + e.what());
  }
}

using MergePairs = std::vector<std::pair<std::string, std::string>>;

// vocab.bpe / merges.txt: an optional "#version" line, then "left right" per line, rank = order.
MergePairs parse_merges_text(std::string_view text, const std::string& what) {
  std::istringstream in{std::string(text)};
  MergePairs pairs;
  std::string line;
  for (int line_no = 1; std::getline(in, line); ++line_no) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (line_no == 1 && line.starts_with("#"))) continue;
    const size_t space = line.find(' ');
    if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos)
      throw TokenizerError(what + ":" + std::to_string(line_no) + ": expected 'left right', got '" +
                           line + "'");
    pairs.emplace_back(line.substr(0, space), line.substr(space + 1));
  }
  return pairs;
}

// A token id from a JSON value, inside [0, kMaxVocab): a hostile file must not size the
// vocabulary table (one string per id) to billions of entries.
int32_t token_id(const nlohmann::json& id, const std::string& what, const std::string& token) {
  if (!id.is_number_integer())
    throw TokenizerError(what + ": id of '" + token + "' is not an integer");
  const int64_t v = id.get<int64_t>();
  if (v < 0 || v >= kMaxVocab)
    throw TokenizerError(what + ": id " + std::to_string(v) + " of '" + token + "' outside [0, " +
                         std::to_string(kMaxVocab) + ")");
  return static_cast<int32_t>(v);
}

struct RegexDeleter {
  void operator()(pcre2_code* code) const { pcre2_code_free(code); }
};

}  // namespace

struct Gpt2Tokenizer::State {
  std::vector<std::string> token_bytes;  // (vocab_size) raw bytes by id
  StringMap<int32_t> ordinary_ids;       // raw bytes -> id, special tokens excluded
  std::array<int32_t, 256> byte_ids{};   // id of each single byte
  MergeTable merges;
  int32_t eot_id = -1;
  std::unique_ptr<pcre2_code, RegexDeleter> regex;

  mutable std::shared_mutex cache_mutex;
  mutable StringMap<std::vector<int32_t>> cache;

  void encode_piece(std::string_view piece, std::vector<int32_t>& out) const;
  void encode_ordinary(std::string_view text, std::vector<int32_t>& out) const;
};

namespace {

using SpelledVocab = std::vector<std::pair<std::string, int32_t>>;

void compile_regex(Gpt2Tokenizer::State& state) {
  const std::string pattern = gpt2_pattern();
  int error = 0;
  PCRE2_SIZE error_offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   PCRE2_UTF | PCRE2_UCP, &error, &error_offset, nullptr);
  if (!code) throw TokenizerError("cannot compile the GPT-2 pre-tokenizer regex");
  state.regex.reset(code);
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // without JIT the interpreter still works
}

// Builds the state from spelled vocabulary entries, spelled merge pairs and raw special tokens.
std::shared_ptr<Gpt2Tokenizer::State> build_state(const SpelledVocab& vocab,
                                                  const MergePairs& merge_pairs,
                                                  const SpelledVocab& raw_specials) {
  auto state = std::make_shared<Gpt2Tokenizer::State>();
  size_t size = 0;
  for (const auto& [_, id] : vocab) size = std::max<size_t>(size, id + 1);
  for (const auto& [_, id] : raw_specials) size = std::max<size_t>(size, id + 1);
  state->token_bytes.resize(size);
  std::vector<bool> seen(size, false);
  auto add = [&](std::string bytes, int32_t id, bool special) {
    if (id < 0) throw TokenizerError("negative token id " + std::to_string(id));
    if (seen[id] && state->token_bytes[id] != bytes)
      throw TokenizerError("token id " + std::to_string(id) + " assigned twice");
    seen[id] = true;
    if (!special) state->ordinary_ids.emplace(bytes, id);
    if (bytes == kEotText) state->eot_id = id;
    state->token_bytes[id] = std::move(bytes);
  };
  for (const auto& [spelled, id] : vocab) add(unspell(spelled), id, spelled == kEotText);
  for (const auto& [raw, id] : raw_specials) add(raw, id, true);
  for (size_t id = 0; id < size; ++id)
    if (!seen[id]) throw TokenizerError("token id " + std::to_string(id) + " missing from vocab");
  if (state->eot_id < 0) throw TokenizerError("vocabulary has no <|endoftext|> token");

  for (int b = 0; b < 256; ++b) {
    auto it = state->ordinary_ids.find(std::string(1, static_cast<char>(b)));
    if (it == state->ordinary_ids.end())
      throw TokenizerError("vocabulary lacks the single-byte token " + std::to_string(b));
    state->byte_ids[b] = it->second;
  }
  auto id_of = [&](const std::string& bytes) {
    auto it = state->ordinary_ids.find(bytes);
    if (it == state->ordinary_ids.end())
      throw TokenizerError("merge refers to a token missing from the vocabulary");
    return it->second;
  };
  for (size_t rank = 0; rank < merge_pairs.size(); ++rank) {
    const std::string left = unspell(merge_pairs[rank].first);
    const std::string right = unspell(merge_pairs[rank].second);
    const MergeRule rule{static_cast<int32_t>(rank), id_of(left + right)};
    state->merges.emplace(merge_key(id_of(left), id_of(right)), rule);  // first rank wins
  }
  compile_regex(*state);
  return state;
}

SpelledVocab vocab_from_json(const nlohmann::json& j, const std::string& what) {
  if (!j.is_object()) throw TokenizerError(what + ": expected an object of token -> id");
  SpelledVocab vocab;
  vocab.reserve(j.size());
  for (const auto& [token, id] : j.items()) vocab.emplace_back(token, token_id(id, what, token));
  return vocab;
}

}  // namespace

Gpt2Tokenizer Gpt2Tokenizer::load(const fs::path& dir) {
  const std::pair<const char*, const char*> kPairs[] = {{"encoder.json", "vocab.bpe"},
                                                        {"vocab.json", "merges.txt"}};
  for (const auto& [vocab_file, merges_file] : kPairs) {
    if (fs::exists(dir / vocab_file) && fs::exists(dir / merges_file))
      return parse_bpe(read_text(dir / vocab_file), read_text(dir / merges_file),
                       (dir / vocab_file).string(), (dir / merges_file).string());
  }
  if (fs::exists(dir / "tokenizer.json")) return load_hf_json(dir / "tokenizer.json");
  throw TokenizerError("no tokenizer files in " + dir.string() +
                       " (expected encoder.json + vocab.bpe, vocab.json + merges.txt, or "
                       "tokenizer.json)");
}

Gpt2Tokenizer Gpt2Tokenizer::load_hf_json(const fs::path& file) {
  return parse_hf_json(read_text(file), file.string());
}

Gpt2Tokenizer Gpt2Tokenizer::parse_bpe(std::string_view vocab_json, std::string_view merges,
                                       const std::string& vocab_label,
                                       const std::string& merges_label) {
  const auto vocab = vocab_from_json(parse_json(vocab_json, vocab_label), vocab_label);
  return Gpt2Tokenizer(build_state(vocab, parse_merges_text(merges, merges_label), {}));
}

Gpt2Tokenizer Gpt2Tokenizer::parse_hf_json(std::string_view text, const std::string& what) {
  const nlohmann::json j = parse_json(text, what);
  if (!j.is_object() || !j.contains("model") || !j["model"].is_object())
    throw TokenizerError(what + ": no 'model' object");
  const auto& model = j["model"];
  if (model.contains("type") && model["type"] != "BPE")
    throw TokenizerError(what + ": model.type is not BPE");
  if (!model.contains("vocab") || !model.contains("merges") || !model["merges"].is_array())
    throw TokenizerError(what + ": model needs 'vocab' and 'merges'");
  MergePairs merges;
  for (const auto& m : model["merges"]) {
    if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
      continue;
    }
    const std::string s = m.is_string() ? m.get<std::string>() : std::string();
    const size_t space = s.find(' ');
    if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos)
      throw TokenizerError(what + ": malformed merge " + m.dump());
    merges.emplace_back(s.substr(0, space), s.substr(space + 1));
  }
  SpelledVocab specials;
  if (j.contains("added_tokens") && j["added_tokens"].is_array())
    for (const auto& t : j["added_tokens"]) {
      if (!t.is_object() || !t.contains("content") || !t["content"].is_string() ||
          !t.contains("id"))
        throw TokenizerError(what + ": malformed added token " + t.dump());
      const std::string content = t["content"].get<std::string>();
      specials.emplace_back(content, token_id(t["id"], what, content));
    }
  return Gpt2Tokenizer(build_state(vocab_from_json(model["vocab"], what), merges, specials));
}

void Gpt2Tokenizer::State::encode_piece(std::string_view piece, std::vector<int32_t>& out) const {
  if (auto it = ordinary_ids.find(piece); it != ordinary_ids.end()) {
    out.push_back(it->second);
    return;
  }
  const bool cacheable = piece.size() <= kMaxCachedWordBytes;
  if (cacheable) {
    std::shared_lock lock(cache_mutex);
    if (auto it = cache.find(piece); it != cache.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> symbols(piece.size());
  for (size_t i = 0; i < piece.size(); ++i) symbols[i] = byte_ids[static_cast<uint8_t>(piece[i])];
  std::vector<int32_t> merged = bpe_merge(symbols, merges);
  out.insert(out.end(), merged.begin(), merged.end());
  if (cacheable) {
    std::unique_lock lock(cache_mutex);
    if (cache.size() >= kMaxCachedWords) cache.clear();  // bounds memory under adversarial text
    cache.emplace(std::string(piece), std::move(merged));
  }
}

void Gpt2Tokenizer::State::encode_ordinary(std::string_view text, std::vector<int32_t>& out) const {
  std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> match(
      pcre2_match_data_create_from_pattern(regex.get(), nullptr), &pcre2_match_data_free);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  uint32_t options = 0;  // the first call validates the whole subject as UTF-8
  size_t offset = 0;
  while (offset < text.size()) {
    const int rc =
        pcre2_match(regex.get(), subject, text.size(), offset, options, match.get(), nullptr);
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(match.get());
    if (rc <= 0 && rc >= PCRE2_ERROR_UTF8_ERR21 && rc <= PCRE2_ERROR_UTF8_ERR1)
      throw TokenizerError("text is not valid UTF-8 (byte offset " + std::to_string(ov[0]) + ")");
    if (rc <= 0 || ov[1] <= ov[0])
      throw TokenizerError("pre-tokenizer failed at byte " + std::to_string(offset) + " (pcre2 " +
                           std::to_string(rc) + ")");
    encode_piece(text.substr(ov[0], ov[1] - ov[0]), out);
    offset = ov[1];
    options = PCRE2_NO_UTF_CHECK;
  }
}

std::vector<int32_t> Gpt2Tokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 1);
  state_->encode_ordinary(text, ids);
  return ids;
}

std::vector<int32_t> Gpt2Tokenizer::encode_with_special(std::string_view text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 1);
  for (size_t pos = 0;;) {
    const size_t hit = text.find(kEotText, pos);
    state_->encode_ordinary(text.substr(pos, hit == std::string_view::npos ? hit : hit - pos), ids);
    if (hit == std::string_view::npos) return ids;
    ids.push_back(state_->eot_id);
    pos = hit + kEotText.size();
  }
}

const std::string& Gpt2Tokenizer::token_bytes(int32_t id) const {
  if (!contains(id))
    throw TokenizerError("token id " + std::to_string(id) + " outside the vocabulary [0, " +
                         std::to_string(vocab_size()) + ")");
  return state_->token_bytes[id];
}

std::string Gpt2Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string text;
  for (int32_t id : ids) text += token_bytes(id);
  return text;
}

int32_t Gpt2Tokenizer::eot_id() const {
  return state_->eot_id;
}

int32_t Gpt2Tokenizer::vocab_size() const {
  return static_cast<int32_t>(state_->token_bytes.size());
}

bool has_tokenizer_files(const fs::path& dir) {
  std::error_code ec;
  auto has = [&](const char* file) { return fs::is_regular_file(dir / file, ec); };
  return (has("encoder.json") && has("vocab.bpe")) || (has("vocab.json") && has("merges.txt")) ||
         has("tokenizer.json");
}

fs::path installed_tokenizer_dir(const fs::path& exe) {
  fs::path dir = exe.parent_path();
  for (int up = 0; up < 5 && !dir.empty(); ++up, dir = dir.parent_path()) {
    for (const fs::path& candidate :
         {dir / "share" / "mlra-serve" / "gpt2", dir / "models" / "assets" / "gpt2"}) {
      if (has_tokenizer_files(candidate)) return candidate.lexically_normal();
    }
    if (dir == dir.parent_path()) break;
  }
  return {};
}

fs::path default_tokenizer_dir() {
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    if (fs::path installed = installed_tokenizer_dir(exe); !installed.empty()) return installed;
  }
  return fs::path(MLRA_SOURCE_DIR) / "models" / "assets" / "gpt2";
}

}  // namespace mlra
