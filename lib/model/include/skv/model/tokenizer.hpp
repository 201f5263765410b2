// Byte-level BPE tokenizer built from GGUF metadata (tokenizer.ggml.model = "gpt2"): the GPT-2
// byte-to-unicode mapping, ranked merges, and the pre-tokenizer split named by
// tokenizer.ggml.pre, implemented by hand (std::regex has no \p{L}); Unicode categories come
// from ICU.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace skv::gguf { class File; }

namespace skv::model {

// Pre-tokenizer families (llama.cpp's names in tokenizer.ggml.pre).
enum class PreTokenizer {
  gpt2,          // 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  digits_gpt2,   // every \p{N} alone first, then gpt2 (smollm, starcoder, refact, codeshell...)
  llama3,        // (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
                 //  ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+  (llama-bpe)
  qwen2,         // as llama3 with \p{N} one digit at a time
};

// Splits text into pre-tokens (byte ranges, concatenating back to text).
std::vector<std::string> pre_tokenize(std::string_view text, PreTokenizer kind);

class Tokenizer {
 public:
  // Token types from tokenizer.ggml.token_type (llama.cpp's llama_token_type).
  enum TokenType : int32_t { normal = 1, unknown = 2, control = 3, user_defined = 4, unused = 5, byte = 6 };

  Tokenizer(std::vector<std::string> tokens, const std::vector<std::string>& merges,
            std::vector<int32_t> token_types, PreTokenizer pre, int32_t bos, int32_t eos,
            bool add_bos);
  static Tokenizer from_gguf(const gguf::File& f);

  // parse_special: control/user-defined token texts in `text` become their ids.
  std::vector<int32_t> encode(std::string_view text, bool add_bos = false,
                              bool parse_special = false) const;
  // Control tokens are skipped unless keep_special.
  std::string decode(std::span<const int32_t> ids, bool keep_special = false) const;
  std::string token_bytes(int32_t id) const;  // raw bytes of one token

  int32_t bos() const noexcept { return bos_; }
  int32_t eos() const noexcept { return eos_; }
  bool add_bos_default() const noexcept { return add_bos_; }
  size_t size() const noexcept { return tokens_.size(); }
  PreTokenizer pre() const noexcept { return pre_; }

 private:
  void encode_plain(std::string_view text, std::vector<int32_t>& out) const;
  void bpe_word(const std::string& word, std::vector<int32_t>& out) const;

  std::vector<std::string> tokens_;
  std::vector<int32_t> types_;
  std::unordered_map<std::string, int32_t> ids_;
  std::unordered_map<std::string, int32_t> merge_rank_;  // "left right" -> rank
  std::vector<std::pair<std::string, int32_t>> specials_;  // longest first
  PreTokenizer pre_;
  int32_t bos_, eos_;
  bool add_bos_;
};

}  // namespace skv::model
