#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "skv/error.hpp"
#include "skv/formats/gguf.hpp"
#include "skv/model/tokenizer.hpp"

using namespace skv::model;
using V = std::vector<std::string>;

// Expected splits worked out by hand from the regex
// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
TEST(PreTokenize, Gpt2Regex) {
  auto g = [](std::string_view s) { return pre_tokenize(s, PreTokenizer::gpt2); };
  EXPECT_EQ(g("Hello world"), (V{"Hello", " world"}));
  EXPECT_EQ(g("I'm here's they'll we've you're"),
            (V{"I", "'m", " here", "'s", " they", "'ll", " we", "'ve", " you", "'re"}));
  EXPECT_EQ(g("I'M"), (V{"I", "'", "M"}));  // contractions are lower-case only
  EXPECT_EQ(g("a  b"), (V{"a", " ", " b"}));
  EXPECT_EQ(g("x\n\ny"), (V{"x", "\n", "\n", "y"}));
  EXPECT_EQ(g("end  "), (V{"end", "  "}));
  EXPECT_EQ(g("hello!!! 123 4x"), (V{"hello", "!!!", " 123", " 4", "x"}));
  EXPECT_EQ(g("café über 東京"), (V{"café", " über", " 東京"}));
  EXPECT_EQ(g("\tx"), (V{"\t", "x"}));
  EXPECT_EQ(g(" \u00a0a"), (V{" ", "\u00a0", "a"}));  // NBSP is \s but not the optional ' '

  EXPECT_EQ(g("Ⅻ½"), (V{"Ⅻ½"}));  // letter number and other number are \p{N}
  EXPECT_EQ(g(""), V{});
}

TEST(PreTokenize, DigitsSplitFirst) {
  auto d = [](std::string_view s) { return pre_tokenize(s, PreTokenizer::digits_gpt2); };
  EXPECT_EQ(d("hello!!! 123"), (V{"hello", "!!!", " ", "1", "2", "3"}));
  EXPECT_EQ(d("x = 10;"), (V{"x", " =", " ", "1", "0", ";"}));
  EXPECT_EQ(d("in 2024, it's"), (V{"in", " ", "2", "0", "2", "4", ",", " it", "'s"}));
}

// Worked out by hand from the llama3 regex (see tokenizer.hpp).
TEST(PreTokenize, Llama3AndQwen2) {
  auto l = [](std::string_view s) { return pre_tokenize(s, PreTokenizer::llama3); };
  EXPECT_EQ(l("Hello world"), (V{"Hello", " world"}));
  EXPECT_EQ(l("I'M here'S"), (V{"I", "'M", " here", "'S"}));  // case-insensitive
  EXPECT_EQ(l("12345 x"), (V{"123", "45", " x"}));
  EXPECT_EQ(l("a\n\n b"), (V{"a", "\n\n", " b"}));   // \s*[\r\n]+ ends at the last newline
  EXPECT_EQ(l("x!!\n\ny"), (V{"x", "!!\n\n", "y"}));  // punctuation keeps trailing newlines
  EXPECT_EQ(l("\tfoo (bar)"), (V{"\tfoo", " (", "bar", ")"}));
  EXPECT_EQ(l("a   b"), (V{"a", "  ", " b"}));
  EXPECT_EQ(l("end  "), (V{"end", "  "}));
  auto q = [](std::string_view s) { return pre_tokenize(s, PreTokenizer::qwen2); };
  EXPECT_EQ(q("x 2024"), (V{"x", " ", "2", "0", "2", "4"}));
}

TEST(PreTokenize, KeepsEveryByte) {
  const std::string s = "bad \xff\xfe utf8 \xe2\x82 end\n 12345 'LL x\r\n\n";
  for (auto kind : {PreTokenizer::gpt2, PreTokenizer::digits_gpt2, PreTokenizer::llama3, PreTokenizer::qwen2}) {
    std::string joined;
    for (const auto& p : pre_tokenize(s, kind)) joined += p;
    EXPECT_EQ(joined, s);
  }
}

namespace {
// Byte-level symbols: 'Ġ' (U+0120) is the space byte, 'Ċ' (U+010A) the newline byte.
Tokenizer tiny_tokenizer() {
  std::vector<std::string> tokens = {"<|end|>", "a", "b", "c", "\xc4\xa0", "ab", "\xc4\xa0" "ab", "\xc4\x8a", "<|im_start|>"};
  std::vector<int32_t> types = {3, 1, 1, 1, 1, 1, 1, 1, 3};
  return Tokenizer(tokens, {"a b", "\xc4\xa0 ab"}, types, PreTokenizer::gpt2, -1, 0, false);
}
}  // namespace

TEST(Tokenizer, MergesByRank) {
  const Tokenizer t = tiny_tokenizer();
  EXPECT_EQ(t.encode("ab ab c\n"), (std::vector<int32_t>{5, 6, 4, 3, 7}));
  EXPECT_EQ(t.encode("ba"), (std::vector<int32_t>{2, 1}));
  EXPECT_EQ(t.decode(t.encode("ab ab c\n")), "ab ab c\n");
  // An unknown byte ('z') has no token: dropped, as llama.cpp does.
  EXPECT_EQ(t.encode("azb"), (std::vector<int32_t>{1, 2}));
}

TEST(Tokenizer, SpecialTokens) {
  const Tokenizer t = tiny_tokenizer();
  EXPECT_EQ(t.encode("<|im_start|>ab", false, true), (std::vector<int32_t>{8, 5}));
  const std::vector<int32_t> ids = {8, 5, 0};
  EXPECT_EQ(t.decode(ids), "ab");
  EXPECT_EQ(t.decode(ids, true), "<|im_start|>ab<|end|>");
  EXPECT_EQ(t.eos(), 0);
  EXPECT_THROW(t.token_bytes(99), skv::Error);
}

namespace {
std::string model_path() {
  return std::string(SKV_SOURCE_DIR) + "/samples/models/SmolLM2-135M-Instruct.Q4_1.gguf";
}
}  // namespace

TEST(TokenizerModel, RoundTripsRealText) {
  if (!std::filesystem::exists(model_path())) GTEST_SKIP() << "no model: run samples/fetch-model";
  const auto f = skv::gguf::File::open(model_path());
  const Tokenizer t = Tokenizer::from_gguf(f);
  EXPECT_EQ(t.pre(), PreTokenizer::digits_gpt2);
  EXPECT_EQ(t.bos(), 1);
  EXPECT_EQ(t.eos(), 2);
  std::string text =
      "The quick brown fox — naïve café, 東京 2024! It's 3.14159.\n\n\tIndented  spaces   "
      "and emoji 🙂 end.  \n";
  if (std::ifstream in("/usr/share/common-licenses/GPL-3"); in) {
    std::stringstream ss;
    ss << in.rdbuf();
    text += ss.str().substr(0, 4000);
  }
  const auto ids = t.encode(text);
  EXPECT_LT(ids.size(), text.size() / 2);  // BPE actually merges
  EXPECT_EQ(t.decode(ids), text);
  // Digits are split one per token by the smollm pre-tokenizer.
  const auto num = t.encode("12345");
  EXPECT_EQ(num.size(), 5u);
  EXPECT_EQ(t.decode(num), "12345");
}
