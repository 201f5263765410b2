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

// Near-miss KV names are errors naming the tensor, never silently left out (issue 15).
TEST(KvFromTensors, NearMissNamesAreErrors) {
  for (const char* name : {"layers.01.k", "layers.1.K", "Layers.1.v", "layers.-1.k", "layers.+1.mask",
                           "past_key_values.00.key", "past_key_values.1.Value"}) {
    Dump d = canonical(2, {2, 4, 64});
    d.add(name, DType::F16, {2, 4, 64});
    const std::string msg = error_of(d);
    EXPECT_MSG(msg, std::string("tensor '") + name + "' is named like a KV tensor but not as one");
  }
  for (const char* name : {"layers.1.k_proj", "layers.x.k", "layers.1", "model.layers.1.k"}) {
    Dump d = canonical(2, {2, 4, 64});
    d.add(name, DType::F16, {2});
    EXPECT_NO_THROW(kv_from_tensors(d.named, {}, Layout::HTD, "x")) << name;
  }
}

// A cache loads only within the containers' limits (skv/limits.hpp), so encode can write it.
TEST(KvFromTensors, ContainerLimits) {
  EXPECT_MSG(error_of(canonical(1, {65537, 1, 2})), "kv_heads 65537 is out of range (1..65536)");
  EXPECT_MSG(error_of(canonical(1, {1, 1, 65538})), "head_dim 65538 is out of range (1..65536)");
  Dump d = canonical(1, {1, 2, 4});
  EXPECT_MSG(error_of(d, {{"rope_theta", "1e-300"}}), "metadata rope_theta='1e-300' is below 1");
  EXPECT_MSG(error_of(d, {{"rope_theta", "[10000, 0.5]"}}), "metadata rope_theta[1] = 0.5 is below 1");
  EXPECT_MSG(error_of(d, {{"position_offset", "2199023255553"}}), "position_offset='2199023255553' exceeds 2^40");
  EXPECT_MSG(error_of(d, {{"rope_theta", "[" + std::string(100, '[') + "]"}}), "nested deeper than 64");
  EXPECT_MSG(error_of(d, {{"rope_scaling", R"({"rope_type":"linear","factor":2,"factor":3})"}}), "duplicate key 'factor'");
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

// Per-layer RoPE metadata (README.md, "Dump layout"): theta lists, Gemma-style local / global
// thetas, rope_scaling objects as config.json writes them.
TEST(ParseKvMeta, PerLayerThetaAndScaling) {
  using M = std::map<std::string, std::string>;
  const KvShape shape{4, 1, 8, 64};
  KvMeta m = parse_kv_meta({{"rope_theta", "[10000, 1e6, 10000, 1000000.0]"}, {"rope_style", "neox"}}, "d", 4);
  EXPECT_EQ(m.rope_theta, (std::vector<double>{1e4, 1e6, 1e4, 1e6}));
  EXPECT_EQ(m.rope_for_layer(1).theta, 1e6);
  EXPECT_EQ(m.rope_for_layer(2).theta, 1e4);
  EXPECT_FALSE(m.rope_v1());
  EXPECT_TRUE(m.prerope_ok(shape));
  EXPECT_EQ(m.rope_summary(), "theta 10000 (layers 0 2), 1000000 (layers 1 3)");

  // One number: every layer.
  m = parse_kv_meta({{"rope_theta", "500000"}, {"rope_style", "gptj"}}, "d", 4);
  EXPECT_EQ(m.rope_for_layer(3).theta, 5e5);
  EXPECT_TRUE(m.rope_v1());

  // Gemma 3: rope_theta is the global layers', rope_local_base_freq the sliding-window layers'.
  m = parse_kv_meta({{"rope_theta", "1000000"}, {"rope_local_base_freq", "10000"}, {"sliding_window_pattern", "3"}},
                    "d", 7);
  EXPECT_EQ(m.rope_theta, (std::vector<double>{1e4, 1e4, 1e6, 1e4, 1e4, 1e6, 1e4}));
  EXPECT_EQ(m.rope_summary(), "theta 10000 (layers 0-1 3-4 6), 1000000 (layers 2 5)");
  m = parse_kv_meta({{"rope_theta", "1000000"}, {"rope_local_base_freq", "10000"},
                     {"layer_types", R"(["sliding_attention", "full_attention"])"}},
                    "d");
  EXPECT_EQ(m.rope_theta, (std::vector<double>{1e4, 1e6}));

  // Scaling.
  m = parse_kv_meta({{"rope_theta", "10000"}, {"rope_style", "neox"}, {"rope_scaling", R"({"rope_type": "linear", "factor": 4})"}}, "d");
  EXPECT_EQ(m.rope_scaling.type, RopeScalingType::linear);
  EXPECT_EQ(m.rope_scaling.factor, 4);
  EXPECT_FALSE(m.rope_v1());
  EXPECT_TRUE(m.prerope_ok(shape));
  m = parse_kv_meta({{"rope_theta", "500000"},
                     {"rope_scaling", R"({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                       "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})"}},
                    "d");
  EXPECT_EQ(m.rope_scaling.type, RopeScalingType::llama3);
  EXPECT_EQ(m.rope_scaling.factor, 8);
  EXPECT_EQ(m.rope_scaling.high_freq_factor, 4);
  EXPECT_EQ(m.rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_EQ(parse_kv_meta({{"rope_scaling", rope_scaling_json(m.rope_scaling)}}, "d").rope_scaling, m.rope_scaling);
  // Legacy "type", "default" and null are no scaling.
  EXPECT_EQ(parse_kv_meta({{"rope_scaling", R"({"type": "linear", "factor": 2})"}}, "d").rope_scaling.factor, 2);
  EXPECT_EQ(parse_kv_meta({{"rope_scaling", R"({"rope_type": "default"})"}}, "d").rope_scaling.type, RopeScalingType::none);
  EXPECT_EQ(parse_kv_meta({{"rope_scaling", "null"}}, "d").rope_scaling.type, RopeScalingType::none);
  EXPECT_EQ(parse_kv_meta({{"rope_theta", rope_theta_json({1e4, 2.5e5})}}, "d").rope_theta,
            (std::vector<double>{1e4, 2.5e5}));

  // What skv cannot reproduce: recorded, prerope_centre unavailable with the reason.
  for (const M& md : std::vector<M>{
           {{"rope_scaling", R"({"rope_type": "yarn", "factor": 4, "original_max_position_embeddings": 32768})"}},
           {{"rope_scaling", R"({"rope_type": "dynamic", "factor": 2})"}},
           {{"partial_rotary_factor", "0.5"}},
           {{"rotary_dim", "32"}},
           {{"rope_local_base_freq", "10000"}, {"layer_types", R"(["chunked_attention"])"}},
       }) {
    M full = md;
    full["rope_theta"] = "10000";
    full["rope_style"] = "neox";
    const KvMeta u = parse_kv_meta(full, "d");
    EXPECT_FALSE(u.prerope_ok(shape)) << md.begin()->first;
    EXPECT_FALSE(u.prerope_unavailable(shape).empty());
  }
  EXPECT_NE(parse_kv_meta({{"rope_scaling", R"({"rope_type": "yarn", "factor": 4})"}, {"rope_theta", "1"}, {"rope_style", "neox"}}, "d")
                .prerope_unavailable(shape)
                .find("yarn"),
            std::string::npos);
  EXPECT_TRUE(parse_kv_meta({{"partial_rotary_factor", "1.0"}, {"rotary_dim", "64"}, {"rope_theta", "1"}, {"rope_style", "neox"}}, "d")
                  .prerope_ok(shape));
  // A theta list of the wrong length for the cache (built by hand, or parsed without a count).
  EXPECT_FALSE(parse_kv_meta({{"rope_theta", "[1, 2, 3]"}, {"rope_style", "neox"}}, "d").prerope_ok(shape));
}

TEST(ParseKvMeta, MalformedRopeIsAFormatErrorNamingTheFile) {
  using M = std::map<std::string, std::string>;
  for (const M& md : std::vector<M>{
           {{"rope_theta", "[10000, -1]"}},
           {{"rope_theta", "[]"}},
           {{"rope_theta", "[10000, \"x\"]"}},
           {{"rope_theta", "[10000"}},
           {{"rope_theta", "[1, 2, 3]"}},  // 4 layers
           {{"rope_scaling", "linear"}},
           {{"rope_scaling", "[4]"}},
           {{"rope_scaling", R"({"factor": 4})"}},
           {{"rope_scaling", R"({"rope_type": "linear"})"}},
           {{"rope_scaling", R"({"rope_type": "linear", "factor": 0})"}},
           {{"rope_scaling", R"({"rope_type": "llama3", "factor": 8, "low_freq_factor": 1, "high_freq_factor": 4})"}},
           {{"rope_scaling", R"({"rope_type": "llama3", "factor": 8, "low_freq_factor": 4, "high_freq_factor": 1, "original_max_position_embeddings": 8192})"}},
           {{"partial_rotary_factor", "1.5"}},
           {{"partial_rotary_factor", "half"}},
           {{"rotary_dim", "-2"}},
           {{"rope_theta", "1e6"}, {"rope_local_base_freq", "1e4"}},  // which layers are local?
           {{"rope_theta", "[1, 2, 3, 4]"}, {"rope_local_base_freq", "1e4"}, {"sliding_window_pattern", "2"}},
           {{"rope_theta", "1e6"}, {"rope_local_base_freq", "1e4"}, {"layer_types", "sliding_attention"}},
           {{"rope_theta", "1e6"}, {"rope_local_base_freq", "1e4"}, {"sliding_window_pattern", "0"}},
       }) {
    try {
      parse_kv_meta(md, "d.safetensors", 4);
      ADD_FAILURE() << md.begin()->first << "=" << md.begin()->second << " accepted";
    } catch (const Error& err) {
      EXPECT_EQ(err.code(), Errc::format);
      EXPECT_MSG(std::string(err.what()), "d.safetensors");
    }
  }
  // kv_from_tensors checks the list against the dump's layers.
  const std::string e = error_of(canonical(3, {2, 4, 8}), {{"rope_theta", "[1, 2]"}});
  EXPECT_MSG(e, "rope_theta");
}

}  // namespace
}  // namespace skv
