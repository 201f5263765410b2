#include "skv/kvcache.hpp"

#include <gtest/gtest.h>

#include "skv/error.hpp"

namespace skv {
namespace {

// Owns the tensors a test hands to kv_from_tensors.
struct Dump {
  std::vector<std::unique_ptr<Tensor>> owned;
  std::vector<NamedTensor> named;
  void add(const std::string& name, DType t, Shape s) {
    owned.push_back(std::make_unique<Tensor>(t, std::move(s)));
    named.push_back({name, owned.back()->view()});
  }
};

Dump canonical(int layers, Shape kv, DType t = DType::F16) {
  Dump d;
  for (int l = 0; l < layers; ++l) {
    d.add("layers." + std::to_string(l) + ".k", t, kv);
    d.add("layers." + std::to_string(l) + ".v", t, kv);
  }
  return d;
}

std::string error_of(const Dump& d, const std::map<std::string, std::string>& meta = {},
                     Layout layout = Layout::HTD) {
  try {
    kv_from_tensors(d.named, meta, layout, "dump.safetensors");
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::format) << e.what();
    EXPECT_NE(std::string(e.what()).find("dump.safetensors"), std::string::npos) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no error";
  return "";
}

#define EXPECT_MSG(msg, needle) EXPECT_NE((msg).find(needle), std::string::npos) << (msg)

TEST(KvFromTensors, Canonical) {
  Dump d = canonical(3, {4, 10, 80}, DType::BF16);
  d.add("other.weight", DType::I64, {2});  // unknown tensors are ignored
  KvCache c = kv_from_tensors(d.named, {{"model", "m"}}, Layout::HTD, "x");
  EXPECT_EQ(c.shape.layers, 3);
  EXPECT_EQ(c.shape.kv_heads, 4);
  EXPECT_EQ(c.shape.tokens, 10);
  EXPECT_EQ(c.shape.head_dim, 80);
  EXPECT_EQ(c.shape.q_heads, 0);
  EXPECT_EQ(c.shape.dtype, DType::BF16);
  EXPECT_EQ(c.meta.model, "m");
  EXPECT_EQ(c.metadata.at("model"), "m");
  ASSERT_EQ(c.layers.size(), 3u);
  EXPECT_EQ(c.layers[2].v_name, "layers.2.v");
  EXPECT_EQ(c.layers[2].v.bytes.data(), d.named[5].view.bytes.data());  // a view, not a copy
  // row() addresses (head 1, token 3) in HTD order.
  EXPECT_EQ(c.row(1, false, 1, 3), d.named[2].view.bytes.data() + (1 * 10 + 3) * 80 * 2);
}

TEST(KvFromTensors, ThdLayout) {
  Dump d = canonical(2, {7, 2, 64}, DType::F32);  // [tokens, kv_heads, head_dim]
  KvCache c = kv_from_tensors(d.named, {}, Layout::THD, "x");
  EXPECT_EQ(c.shape.tokens, 7);
  EXPECT_EQ(c.shape.kv_heads, 2);
  EXPECT_EQ(c.layout, Layout::THD);
  EXPECT_EQ(c.row(0, true, 1, 5), d.named[1].view.bytes.data() + (5 * 2 + 1) * 64 * 4);
}

TEST(KvFromTensors, HuggingFaceWithAndWithoutBatch) {
  for (Shape s : {Shape{1, 2, 5, 128}, Shape{2, 5, 128}}) {
    Dump d;
    for (int l = 0; l < 2; ++l) {
      d.add("past_key_values." + std::to_string(l) + ".key", DType::F16, s);
      d.add("past_key_values." + std::to_string(l) + ".value", DType::F16, s);
    }
    KvCache c = kv_from_tensors(d.named, {}, Layout::HTD, "x");
    EXPECT_EQ(c.shape.layers, 2);
    EXPECT_EQ(c.shape.kv_heads, 2);
    EXPECT_EQ(c.shape.tokens, 5);
    EXPECT_EQ(c.shape.head_dim, 128);
    EXPECT_EQ(c.layers[0].k.shape, (Shape{2, 5, 128}));
    EXPECT_EQ(c.layers[1].k_name, "past_key_values.1.key");
  }
  Dump b;
  b.add("past_key_values.0.key", DType::F16, {3, 2, 5, 64});
  b.add("past_key_values.0.value", DType::F16, {3, 2, 5, 64});
  EXPECT_MSG(error_of(b), "batch size 3");
}

TEST(KvFromTensors, QueriesAndMasks) {
  Dump d = canonical(2, {2, 6, 96});
  for (int l = 0; l < 2; ++l) {
    d.add("layers." + std::to_string(l) + ".q", DType::F32, {8, 3, 96});
    d.add("layers." + std::to_string(l) + ".mask", l ? DType::BOOL : DType::U8, {6});
  }
  KvCache c = kv_from_tensors(d.named, {}, Layout::HTD, "x");
  EXPECT_EQ(c.shape.q_heads, 8);
  EXPECT_EQ(c.shape.window, 3);
  ASSERT_TRUE(c.layers[1].q && c.layers[1].mask);
  EXPECT_EQ(c.layers[1].q_name, "layers.1.q");
  EXPECT_EQ(c.layers[0].mask->dtype, DType::U8);
}

TEST(KvFromTensors, Inconsistencies) {
  EXPECT_MSG(error_of(Dump{}), "no KV tensors");
  {
    Dump d = canonical(1, {2, 4, 64});
    d.add("layers.2.k", DType::F16, {2, 4, 64});
    d.add("layers.2.v", DType::F16, {2, 4, 64});
    EXPECT_MSG(error_of(d), "layer 1 is missing");
  }
  {
    Dump d = canonical(1, {2, 4, 64});
    d.add("layers.1.k", DType::F16, {2, 4, 64});
    EXPECT_MSG(error_of(d), "layer 1: has 'layers.1.k' but no V");
  }
  {
    Dump d = canonical(2, {2, 4, 64});
    d.owned[3] = std::make_unique<Tensor>(DType::F16, Shape{2, 5, 64});
    d.named[2].view = d.owned[2]->view();
    d.owned[2] = std::make_unique<Tensor>(DType::F16, Shape{2, 5, 64});
    d.named[2].view = d.owned[2]->view();
    d.named[3].view = d.owned[3]->view();
    EXPECT_MSG(error_of(d), "'layers.1.k' has shape [2, 5, 64] but layer 0 has [2, 4, 64]");
  }
  {
    Dump d = canonical(1, {2, 4, 64});
    d.owned[1] = std::make_unique<Tensor>(DType::F16, Shape{2, 3, 64});
    d.named[1].view = d.owned[1]->view();
    EXPECT_MSG(error_of(d), "but V 'layers.0.v' has [2, 3, 64]");
  }
  {
    Dump d = canonical(2, {2, 4, 64});
    for (int i : {2, 3}) {
      d.owned[size_t(i)] = std::make_unique<Tensor>(DType::F32, Shape{2, 4, 64});
      d.named[size_t(i)].view = d.owned[size_t(i)]->view();
    }
    EXPECT_MSG(error_of(d), "is F32 but layer 0 is F16");
  }
  {
    Dump d = canonical(1, {2, 4, 64});
    d.owned[1] = std::make_unique<Tensor>(DType::F32, Shape{2, 4, 64});
    d.named[1].view = d.owned[1]->view();
    EXPECT_MSG(error_of(d), "K is F16 but V is F32");
  }
  EXPECT_MSG(error_of(canonical(1, {2, 4, 64}, DType::I8)), "must be F16, BF16 or F32");
  EXPECT_MSG(error_of(canonical(1, {2, 4})), "expected 3 dims");
  {
    Dump d = canonical(1, {2, 4, 64});
    d.add("layers.0.q", DType::F16, {4, 2, 32});
    EXPECT_MSG(error_of(d), "head_dim 32 but K has 64");
  }
  {
    Dump d = canonical(1, {2, 4, 64});
    d.add("layers.0.q", DType::F16, {3, 2, 64});
    EXPECT_MSG(error_of(d), "not a multiple of the 2 KV heads");
  }
  {
    Dump d = canonical(2, {2, 4, 64});
    d.add("layers.0.q", DType::F16, {4, 2, 64});
    EXPECT_MSG(error_of(d), "layer 1 has no q tensor");
  }
  {
    Dump d = canonical(1, {2, 4, 64});
    d.add("layers.0.mask", DType::U8, {5});
    EXPECT_MSG(error_of(d), "has shape [5] but the cache has 4 tokens");
  }
  {
    Dump d = canonical(1, {2, 4, 64});
    d.add("layers.0.mask", DType::F32, {4});
    EXPECT_MSG(error_of(d), "masks must be U8 or BOOL");
  }
  {
    Dump d = canonical(1, {2, 4, 64});
    d.add("past_key_values.0.key", DType::F16, {2, 4, 64});
    EXPECT_MSG(error_of(d), "mixes");
  }
}

TEST(ParseKvMeta, ParsesAndRejects) {
  KvMeta m = parse_kv_meta({{"model", "llama"}, {"architecture", "LlamaForCausalLM"},
                            {"rope_theta", "500000.0"}, {"rope_style", "gptj"},
                            {"position_offset", "12"}, {"needle_start", "100"}, {"needle_len", "7"},
                            {"unrelated", "x"}},
                           "d");
  EXPECT_EQ(m.model, "llama");
  EXPECT_EQ(m.architecture, "LlamaForCausalLM");
  EXPECT_EQ(m.rope_theta, std::vector<double>{500000.0});
  EXPECT_EQ(m.rope_style, RopeStyle::gptj);
  EXPECT_EQ(m.position_offset, 12);
  EXPECT_EQ(m.needle_start, 100);
  EXPECT_EQ(m.needle_len, 7);
  KvMeta e = parse_kv_meta({}, "d");
  EXPECT_FALSE(!e.rope_theta.empty() || e.needle_start || e.needle_len);
  EXPECT_EQ(e.rope_style, RopeStyle::unknown);
  for (auto [k, v] : std::vector<std::pair<std::string, std::string>>{
           {"rope_theta", "1e4x"}, {"rope_theta", ""}, {"rope_theta", "-5"}, {"rope_style", "llama"},
           {"position_offset", "3.5"}, {"needle_start", "abc"}, {"needle_len", "-1"}}) {
    try {
      parse_kv_meta({{k, v}}, "d.safetensors");
      ADD_FAILURE() << k << "=" << v << " accepted";
    } catch (const Error& err) {
      EXPECT_EQ(err.code(), Errc::format);
      EXPECT_MSG(std::string(err.what()), k);
      EXPECT_MSG(std::string(err.what()), "d.safetensors");
    }
  }
}

}  // namespace
}  // namespace skv
