// Byte-level BPE: bytes -> GPT-2 printable code points -> ranked merges -> vocabulary ids.
#include "skv/model/tokenizer.hpp"

#include <algorithm>
#include <array>
#include <limits>

#include "skv/error.hpp"
#include "skv/formats/gguf.hpp"

namespace skv::model {
namespace {

std::string utf8(uint32_t cp) {
  std::string s;
  if (cp < 0x80) s += char(cp);
  else if (cp < 0x800) { s += char(0xC0 | (cp >> 6)); s += char(0x80 | (cp & 0x3F)); }
  else { s += char(0xE0 | (cp >> 12)); s += char(0x80 | ((cp >> 6) & 0x3F)); s += char(0x80 | (cp & 0x3F)); }
  return s;
}

// GPT-2's bytes_to_unicode: printable Latin-1 bytes map to themselves, the rest to 256+n.
struct ByteMap {
  std::array<std::string, 256> to_unicode;
  std::unordered_map<std::string, uint8_t> to_byte;
  ByteMap() {
    uint32_t n = 0;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
      to_unicode[b] = utf8(printable ? b : 256 + n++);
      to_byte[to_unicode[b]] = uint8_t(b);
    }
  }
};
const ByteMap& byte_map() {
  static const ByteMap m;
  return m;
}

size_t utf8_len(unsigned char b) { return b < 0x80 ? 1 : (b >> 5) == 6 ? 2 : (b >> 4) == 14 ? 3 : (b >> 3) == 30 ? 4 : 1; }

}  // namespace

Tokenizer::Tokenizer(std::vector<std::string> tokens, const std::vector<std::string>& merges,
                     std::vector<int32_t> token_types, PreTokenizer pre, int32_t bos, int32_t eos,
                     bool add_bos)
    : tokens_(std::move(tokens)), types_(std::move(token_types)), pre_(pre), bos_(bos), eos_(eos),
      add_bos_(add_bos) {
  if (types_.empty()) types_.assign(tokens_.size(), normal);
  if (types_.size() != tokens_.size())
    fail(Errc::format, "tokenizer", "token_type has " + std::to_string(types_.size()) + " entries for " +
                                        std::to_string(tokens_.size()) + " tokens");
  if (tokens_.size() > size_t(std::numeric_limits<int32_t>::max()))
    fail(Errc::format, "tokenizer", "vocabulary too large");
  ids_.reserve(tokens_.size());
  for (size_t k = 0; k < tokens_.size(); ++k) {
    ids_.emplace(tokens_[k], int32_t(k));  // first occurrence wins
    if (types_[k] == control || types_[k] == user_defined) specials_.emplace_back(tokens_[k], int32_t(k));
  }
  std::sort(specials_.begin(), specials_.end(),
            [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
  merge_rank_.reserve(merges.size());
  for (size_t r = 0; r < merges.size(); ++r) {
    if (merges[r].find(' ') == std::string::npos)
      fail(Errc::format, "tokenizer", "merge " + std::to_string(r) + " has no space separator");
    merge_rank_.emplace(merges[r], int32_t(r));
  }
  for (int32_t id : {bos_, eos_})
    if (id >= 0 && size_t(id) >= tokens_.size())
      fail(Errc::format, "tokenizer", "special token id " + std::to_string(id) + " is outside the vocabulary");
}

Tokenizer Tokenizer::from_gguf(const gguf::File& f) {
  const std::string model = f.require_string("tokenizer.ggml.model");
  if (model != "gpt2")
    fail(Errc::unsupported, f.source(), "tokenizer.ggml.model '" + model + "' (only byte-level BPE 'gpt2' is implemented)");
  const std::string pre = f.get_string("tokenizer.ggml.pre").value_or("default");
  PreTokenizer kind;
  if (pre == "default" || pre == "gpt2" || pre == "mpt" || pre == "olmo" || pre == "jais")
    kind = PreTokenizer::gpt2;
  else if (pre == "smollm" || pre == "starcoder" || pre == "refact" || pre == "command-r" ||
           pre == "codeshell" || pre == "exaone" || pre == "minerva")
    kind = PreTokenizer::digits_gpt2;
  else if (pre == "llama-bpe" || pre == "llama3" || pre == "llama-v3")
    kind = PreTokenizer::llama3;
  else if (pre == "qwen2" || pre == "deepseek-r1-qwen")
    kind = PreTokenizer::qwen2;
  else
    fail(Errc::unsupported, f.source(), "tokenizer.ggml.pre '" + pre + "' has no pre-tokenizer here");
  auto tokens = f.get_strings("tokenizer.ggml.tokens");
  auto merges = f.get_strings("tokenizer.ggml.merges");
  if (!tokens || !merges) fail(Errc::format, f.source(), "tokenizer.ggml.tokens or .merges is missing");
  std::vector<int32_t> types;
  if (const gguf::Value* tt = f.find("tokenizer.ggml.token_type")) {
    if (tt->type != gguf::ValueType::array) fail(Errc::format, f.source(), "tokenizer.ggml.token_type is not an array");
    for (const auto& v : tt->items) {
      if (!v.is_integer()) fail(Errc::format, f.source(), "tokenizer.ggml.token_type holds a non-integer");
      types.push_back(int32_t(v.type == gguf::ValueType::i32 ? v.i : int64_t(v.u)));
    }
  }
  const auto bos = f.get_uint("tokenizer.ggml.bos_token_id");
  const auto eos = f.get_uint("tokenizer.ggml.eos_token_id");
  const bool add_bos = f.get_bool("tokenizer.ggml.add_bos_token").value_or(false);
  return Tokenizer(std::move(*tokens), *merges, std::move(types), kind, bos ? int32_t(*bos) : -1,
                   eos ? int32_t(*eos) : -1, add_bos);
}

void Tokenizer::bpe_word(const std::string& word, std::vector<int32_t>& out) const {
  const ByteMap& bm = byte_map();
  std::vector<std::string> sym;
  for (unsigned char b : word) sym.push_back(bm.to_unicode[b]);
  std::string key;
  while (sym.size() > 1) {
    int32_t best = std::numeric_limits<int32_t>::max();
    size_t at = 0;
    for (size_t k = 0; k + 1 < sym.size(); ++k) {
      key.assign(sym[k]).append(" ").append(sym[k + 1]);
      auto it = merge_rank_.find(key);
      if (it != merge_rank_.end() && it->second < best) { best = it->second; at = k; }
    }
    if (best == std::numeric_limits<int32_t>::max()) break;
    sym[at] += sym[at + 1];
    sym.erase(sym.begin() + std::ptrdiff_t(at) + 1);
  }
  for (const auto& s : sym) {
    if (auto it = ids_.find(s); it != ids_.end()) { out.push_back(it->second); continue; }
    // Not in the vocabulary: fall back to one token per byte, as llama.cpp does.
    for (size_t p = 0; p < s.size();) {
      const size_t n = utf8_len(static_cast<unsigned char>(s[p]));
      if (auto it = ids_.find(s.substr(p, n)); it != ids_.end()) out.push_back(it->second);
      p += n;
    }
  }
}

void Tokenizer::encode_plain(std::string_view text, std::vector<int32_t>& out) const {
  for (const std::string& w : pre_tokenize(text, pre_)) bpe_word(w, out);
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_bos, bool parse_special) const {
  std::vector<int32_t> out;
  if (add_bos && bos_ >= 0) out.push_back(bos_);
  if (!parse_special || specials_.empty()) {
    encode_plain(text, out);
    return out;
  }
  size_t plain_start = 0, i = 0;
  while (i < text.size()) {
    const std::pair<std::string, int32_t>* hit = nullptr;
    for (const auto& sp : specials_)
      if (!sp.first.empty() && text.compare(i, sp.first.size(), sp.first) == 0) { hit = &sp; break; }
    if (!hit) { ++i; continue; }
    encode_plain(text.substr(plain_start, i - plain_start), out);
    out.push_back(hit->second);
    i += hit->first.size();
    plain_start = i;
  }
  encode_plain(text.substr(plain_start), out);
  return out;
}

std::string Tokenizer::token_bytes(int32_t id) const {
  if (id < 0 || size_t(id) >= tokens_.size())
    fail(Errc::invalid_argument, "tokenizer", "token id " + std::to_string(id) + " is outside the vocabulary");
  const std::string& t = tokens_[size_t(id)];
  if (types_[size_t(id)] == control || types_[size_t(id)] == user_defined) return t;
  const ByteMap& bm = byte_map();
  std::string out;
  for (size_t p = 0; p < t.size();) {
    const size_t n = utf8_len(static_cast<unsigned char>(t[p]));
    const std::string ch = t.substr(p, n);
    auto it = bm.to_byte.find(ch);
    if (it != bm.to_byte.end()) out += char(it->second);
    else out += ch;
    p += n;
  }
  return out;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool keep_special) const {
  std::string out;
  for (int32_t id : ids) {
    if (!keep_special && id >= 0 && size_t(id) < types_.size() && types_[size_t(id)] == control) continue;
    out += token_bytes(id);
  }
  return out;
}

}  // namespace skv::model
