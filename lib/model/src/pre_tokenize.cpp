// Pre-tokenizer splits, written by hand from the regexes llama.cpp and HF tokenizers use, with
// Unicode categories from ICU: \p{L} = L*, \p{N} = N*, \s = White_Space.
#include <unicode/uchar.h>

#include "skv/model/tokenizer.hpp"

namespace skv::model {
namespace {

enum class Cls : uint8_t { letter, number, space, other, undefined };

struct Cp {
  uint32_t cp;
  uint32_t off, len;  // byte range in the text
  Cls cls;
};

Cls classify(uint32_t c) {
  if (u_isUWhiteSpace(UChar32(c))) return Cls::space;
  switch (u_charType(UChar32(c))) {
    case U_UPPERCASE_LETTER: case U_LOWERCASE_LETTER: case U_TITLECASE_LETTER:
    case U_MODIFIER_LETTER: case U_OTHER_LETTER: return Cls::letter;
    case U_DECIMAL_DIGIT_NUMBER: case U_LETTER_NUMBER: case U_OTHER_NUMBER: return Cls::number;
    case U_UNASSIGNED: return Cls::undefined;
    default: return Cls::other;
  }
}

// Decodes UTF-8; an invalid byte becomes a one-byte "undefined" code point so no byte is lost.
std::vector<Cp> decode_utf8(std::string_view s) {
  std::vector<Cp> out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const auto b0 = uint8_t(s[i]);
    uint32_t len = b0 < 0x80 ? 1 : (b0 >> 5) == 6 ? 2 : (b0 >> 4) == 14 ? 3 : (b0 >> 3) == 30 ? 4 : 0;
    uint32_t cp = 0;
    bool ok = len > 0 && i + len <= s.size();
    if (ok) {
      cp = len == 1 ? b0 : len == 2 ? (b0 & 0x1Fu) : len == 3 ? (b0 & 0x0Fu) : (b0 & 0x07u);
      for (uint32_t k = 1; k < len && ok; ++k) {
        const auto b = uint8_t(s[i + k]);
        ok = (b & 0xC0) == 0x80;
        cp = (cp << 6) | (b & 0x3Fu);
      }
    }
    if (!ok) {
      out.push_back({0xFFFD, uint32_t(i), 1, Cls::undefined});
      i += 1;
      continue;
    }
    out.push_back({cp, uint32_t(i), len, classify(cp)});
    i += len;
  }
  return out;
}

// GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ over
// code points [s, e); the end of the range counts as end of text for the lookahead.
void split_gpt2(const std::vector<Cp>& c, size_t s, size_t e, std::string_view text,
                std::vector<std::string>& out) {
  auto emit = [&](size_t a, size_t b) {
    out.emplace_back(text.substr(c[a].off, c[b - 1].off + c[b - 1].len - c[a].off));
  };
  auto run = [&](size_t from, Cls cls) {
    while (from < e && c[from].cls == cls) ++from;
    return from;
  };
  size_t i = s;
  while (i < e) {
    const uint32_t cp = c[i].cp;
    if (cp == '\'' && i + 1 < e) {
      const uint32_t c1 = c[i + 1].cp;
      if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') { emit(i, i + 2); i += 2; continue; }
      if (i + 2 < e) {
        const uint32_t c2 = c[i + 2].cp;
        if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) {
          emit(i, i + 3); i += 3; continue;
        }
      }
    }
    // ` ?X+` for X in letters, numbers, other (neither space nor letter nor number).
    const size_t j = (cp == ' ' && i + 1 < e) ? i + 1 : i;
    const Cls cj = c[j].cls;
    if (cj == Cls::letter || cj == Cls::number || cj == Cls::other) {
      const size_t end = run(j, cj);
      emit(i, end); i = end; continue;
    }
    if (c[i].cls == Cls::space) {
      const size_t end = run(i, Cls::space);
      if (end < e && end - i > 1) { emit(i, end - 1); i = end - 1; continue; }  // \s+(?!\S)
      emit(i, end); i = end; continue;                                           // \s+
    }
    emit(i, i + 1); ++i;  // no match (unassigned code point, invalid byte)
  }
}

// llama3 / qwen2 regex (see tokenizer.hpp) over code points [s, e); max_digits is 3 or 1.
void split_llama3(const std::vector<Cp>& c, size_t s, size_t e, std::string_view text, size_t max_digits,
                  std::vector<std::string>& out) {
  auto emit = [&](size_t a, size_t b) {
    out.emplace_back(text.substr(c[a].off, c[b - 1].off + c[b - 1].len - c[a].off));
  };
  auto is = [&](size_t k, Cls cls) { return k < e && c[k].cls == cls; };
  auto newline = [&](size_t k) { return k < e && (c[k].cp == '\r' || c[k].cp == '\n'); };
  auto lower = [&](size_t k) { return uint32_t(u_tolower(UChar32(c[k].cp))); };
  size_t i = s;
  while (i < e) {
    if (c[i].cp == '\'' && i + 1 < e) {  // case-insensitive contractions
      const uint32_t c1 = lower(i + 1);
      if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') { emit(i, i + 2); i += 2; continue; }
      if (i + 2 < e) {
        const uint32_t c2 = lower(i + 2);
        if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) {
          emit(i, i + 3); i += 3; continue;
        }
      }
    }
    // [^\r\n\p{L}\p{N}]?\p{L}+
    if (!newline(i) && c[i].cls != Cls::number && (is(i, Cls::letter) || is(i + 1, Cls::letter))) {
      size_t k = i + 1;
      while (is(k, Cls::letter)) ++k;
      emit(i, k); i = k; continue;
    }
    if (c[i].cls == Cls::number) {  // \p{N}{1,max_digits}
      size_t k = i;
      while (is(k, Cls::number) && k - i < max_digits) ++k;
      emit(i, k); i = k; continue;
    }
    //  ?[^\s\p{L}\p{N}]+[\r\n]*
    const size_t j = (c[i].cp == ' ' && i + 1 < e) ? i + 1 : i;
    if (c[j].cls == Cls::other) {
      size_t k = j;
      while (is(k, Cls::other)) ++k;
      while (newline(k)) ++k;
      emit(i, k); i = k; continue;
    }
    if (c[i].cls == Cls::space) {
      size_t k = i, last_nl = 0;
      while (is(k, Cls::space)) {
        if (newline(k)) last_nl = k + 1;
        ++k;
      }
      if (last_nl) { emit(i, last_nl); i = last_nl; continue; }          // \s*[\r\n]+
      if (k < e && k - i > 1) { emit(i, k - 1); i = k - 1; continue; }   // \s+(?!\S)
      emit(i, k); i = k; continue;                                       // \s+
    }
    emit(i, i + 1); ++i;
  }
}

}  // namespace

std::vector<std::string> pre_tokenize(std::string_view text, PreTokenizer kind) {
  const std::vector<Cp> c = decode_utf8(text);
  std::vector<std::string> out;
  if (kind == PreTokenizer::llama3 || kind == PreTokenizer::qwen2) {
    split_llama3(c, 0, c.size(), text, kind == PreTokenizer::llama3 ? 3 : 1, out);
    return out;
  }
  if (kind == PreTokenizer::gpt2) {
    split_gpt2(c, 0, c.size(), text, out);
    return out;
  }
  // digits_gpt2: each \p{N} is its own piece; the text between goes through gpt2.
  size_t start = 0;
  for (size_t i = 0; i <= c.size(); ++i) {
    if (i == c.size() || c[i].cls == Cls::number) {
      if (i > start) split_gpt2(c, start, i, text, out);
      if (i < c.size()) out.emplace_back(text.substr(c[i].off, c[i].len));
      start = i + 1;
    }
  }
  return out;
}

}  // namespace skv::model
