// Per-layer RoPE and RoPE scaling (formats/skv.md, "RoPE frequencies"): the inv_freq formulas,
// prerope_centre round trips of caches whose keys carry per-layer / scaled RoPE, the manifest's
// rope entry (1.0 form kept byte for byte, 1.1 form for the rest) and its validation.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <numbers>

#include "../../../lib/src/container_format.hpp"
#include "codec_test_util.hpp"
#include "skv/error.hpp"
#include "skv/policy.hpp"

using namespace skv;
using namespace skv::test;

namespace {

// The HuggingFace formulas, written out independently of the library (modeling_rope_utils.py).
double hf_inv_freq(double theta, const RopeScaling& s, int j, int D) {
  const double base = 1.0 / std::pow(theta, double(2 * j) / double(D));
  if (s.type == RopeScalingType::linear) return base / s.factor;
  if (s.type != RopeScalingType::llama3) return base;
  const double old_ctx = s.original_max_position_embeddings;
  const double low_wavelen = old_ctx / s.low_freq_factor, high_wavelen = old_ctx / s.high_freq_factor;
  const double wavelen = 2 * std::numbers::pi / base;
  const double llama = wavelen > low_wavelen ? base / s.factor : base;
  const double smooth = (old_ctx / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
  const double smoothed = (1 - smooth) * llama / s.factor + smooth * llama;
  const bool medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
  return medium ? smoothed : llama;
}

RopeScaling llama3() {
  RopeScaling s;
  s.type = RopeScalingType::llama3;
  s.factor = 8;
  s.low_freq_factor = 1;
  s.high_freq_factor = 4;
  s.original_max_position_embeddings = 8192;
  return s;
}

// F32 keys RoPE_l(noise + offset): the offset (per channel, before RoPE) is what prerope_centre
// removes; rotated in f64 with layer l's own frequencies (thetas[l], scaling).
OwnedCache rope_cache(const std::vector<double>& thetas, const RopeScaling& sc, RopeStyle style,
                      int64_t offset, int T = 48) {
  const int L = int(thetas.size()), H = 2, D = 64;
  OwnedCache oc = make_cache(L, H, T, D, DType::F32, Layout::HTD, 31, 0.0f);
  KvCache& c = oc.cache;
  c.meta.rope_theta = thetas;
  c.meta.rope_scaling = sc;
  c.meta.rope_style = style;
  c.meta.position_offset = offset;
  Rng rng(7);
  for (int l = 0; l < L; ++l) {
    std::vector<float> off(static_cast<size_t>(D));
    for (float& o : off) o = 30.0f * (rng.uniform() * 2 - 1);
    auto* k = reinterpret_cast<float*>(oc.bufs[size_t(2 * l)]->data());
    for (int h = 0; h < H; ++h)
      for (int t = 0; t < T; ++t) {
        float* row = k + (size_t(h) * T + size_t(t)) * D;
        for (int d = 0; d < D; ++d) row[d] += off[size_t(d)];
        for (int j = 0; j < D / 2; ++j) {
          const int a = style == RopeStyle::neox ? j : 2 * j, b = style == RopeStyle::neox ? j + D / 2 : 2 * j + 1;
          const double ang = double(offset + t) * hf_inv_freq(thetas[size_t(l)], sc, j, D);
          const double x0 = row[a], x1 = row[b];
          row[a] = float(x0 * std::cos(ang) - x1 * std::sin(ang));
          row[b] = float(x0 * std::sin(ang) + x1 * std::cos(ang));
        }
      }
  }
  return oc;
}

double key_error(const KvCache& c, const std::vector<DecodedLayer>& dec) {
  double e = 0;
  size_t n = 0;
  const int H = c.shape.kv_heads, T = c.shape.tokens, D = c.shape.head_dim;
  for (int l = 0; l < c.shape.layers; ++l) {
    const auto* src = reinterpret_cast<const float*>(c.layers[size_t(l)].k.bytes.data());
    for (int h = 0; h < H; ++h)
      for (int t = 0; t < T; ++t)
        for (int d = 0; d < D; ++d, ++n)
          e += std::fabs(decoded_at(dec[size_t(l)].k, c.layout, H, T, D, h, t, d) -
                         src[(size_t(h) * T + size_t(t)) * D + size_t(d)]);
  }
  return e / double(n);
}

Plan prerope_plan(const KvCache& c, Tier tier) {
  Plan p = Plan::uniform(c.shape.layers, c.shape.tokens, tier);
  p.quant.key_transform = KeyTransform::prerope_centre;
  return p;
}

uint16_t minor_of(const std::vector<std::byte>& file) {
  uint16_t v;
  std::memcpy(&v, file.data() + 10, 2);
  return v;
}

std::string manifest_of(const std::vector<std::byte>& file) {
  uint64_t n;
  std::memcpy(&n, file.data() + 64 + 8, 8);
  return std::string(reinterpret_cast<const char*>(file.data()) + 128, size_t(n));
}

}  // namespace

TEST(RopeFreq, MatchesTheHuggingFaceFormulas) {
  for (const RopeScaling& s : {RopeScaling{}, RopeScaling{RopeScalingType::linear, 4, 1, 4, 8192}, llama3()}) {
    int changed = 0, smoothed = 0;
    for (int j = 0; j < 64; ++j) {
      const double want = hf_inv_freq(500000, s, j, 128);
      EXPECT_DOUBLE_EQ(rope_inv_freq(RopeParams{500000, s}, j, 128), want) << int(s.type) << " j=" << j;
      const double base = hf_inv_freq(500000, RopeScaling{}, j, 128);
      changed += want != base;
      smoothed += want != base && want != base / s.factor;
    }
    if (s.type == RopeScalingType::linear) {
      EXPECT_EQ(changed, 64);
    }
    if (s.type == RopeScalingType::llama3) {  // the high frequencies stay, the band between is smoothed
      EXPECT_GT(changed, 10);
      EXPECT_LT(changed, 64);
      EXPECT_GT(smoothed, 0);
    }
  }
}

// Gemma-style local / global layers: each layer's keys carry its own theta. prerope_centre with
// the right per-layer thetas reconstructs them far better than plain INT4, and better than the
// same transform with one theta for all layers (so the per-layer table is really used).
TEST(PerLayerRope, PreRopeRoundTripUsesEachLayersTheta) {
  const std::vector<double> thetas{10000, 1000000, 10000, 1000000};
  for (RopeStyle style : {RopeStyle::neox, RopeStyle::gptj}) {
    OwnedCache oc = rope_cache(thetas, {}, style, 5);
    KvCache& c = oc.cache;
    const double plain = key_error(c, decode_all(encode_bytes(c, Plan::uniform(4, 48, Tier::INT4)), DType::F32));
    ContainerInfo info;
    const auto bytes = encode_bytes(c, prerope_plan(c, Tier::INT4));
    const double right = key_error(c, decode_all(bytes, DType::F32, &info));
    EXPECT_EQ(minor_of(bytes), 1);
    EXPECT_EQ(info.rope.rope_theta, thetas);
    EXPECT_EQ(info.rope.rope_style, style);
    EXPECT_EQ(info.rope.position_offset, 5);
    c.meta.rope_theta = {10000};  // wrong for layers 1 and 3
    const double wrong = key_error(c, decode_all(encode_bytes(c, prerope_plan(c, Tier::INT4)), DType::F32));
    c.meta.rope_theta = thetas;
    EXPECT_LT(right * 3, plain) << "plain " << plain << " prerope " << right;
    EXPECT_LT(right * 2, wrong) << "right " << right << " wrong theta " << wrong;
    EXPECT_LT(key_error(c, decode_all(encode_bytes(c, prerope_plan(c, Tier::INT8)), DType::F32)), 0.05);
    // Threads and the reader's layer order do not matter: the same bytes with 3 threads.
    EXPECT_EQ(encode_bytes(c, prerope_plan(c, Tier::INT4), 3), bytes);
  }
}

// Llama-3 frequency scaling. A short original context (64) puts most pairs in the scaled and
// smoothed bands, so over 48 tokens the unscaled angles drift far from the right ones.
TEST(PerLayerRope, PreRopeRoundTripWithLlama3Scaling) {
  RopeScaling short_ctx = llama3();
  short_ctx.original_max_position_embeddings = 64;
  OwnedCache oc = rope_cache({500000, 500000}, short_ctx, RopeStyle::neox, 1000);
  KvCache& c = oc.cache;
  ContainerInfo info;
  const auto bytes = encode_bytes(c, prerope_plan(c, Tier::INT4));
  const double right = key_error(c, decode_all(bytes, DType::F32, &info));
  EXPECT_EQ(minor_of(bytes), 1);
  EXPECT_EQ(info.rope.rope_scaling, short_ctx);
  EXPECT_EQ(info.rope.rope_theta, (std::vector<double>{500000, 500000}));
  c.meta.rope_scaling = {};  // the unscaled frequencies: wrong
  const double wrong = key_error(c, decode_all(encode_bytes(c, prerope_plan(c, Tier::INT4)), DType::F32));
  c.meta.rope_scaling = short_ctx;
  EXPECT_LT(right * 2, wrong) << "right " << right << " unscaled " << wrong;
  EXPECT_LT(key_error(c, decode_all(encode_bytes(c, prerope_plan(c, Tier::INT8)), DType::F32)), 0.05);
}

TEST(PerLayerRope, ManifestRoundTripAndVersion) {
  // Uniform theta, no scaling: the 1.0 form, byte-identical to a single rope_theta.
  OwnedCache a = rope_cache({10000, 10000}, {}, RopeStyle::neox, 3, 8);
  const auto one = encode_bytes(a.cache, prerope_plan(a.cache, Tier::INT8));
  EXPECT_EQ(minor_of(one), 0);
  EXPECT_TRUE(nlohmann::json::parse(manifest_of(one))["rope"]["theta"].is_number());
  a.cache.meta.rope_theta = {10000};
  EXPECT_EQ(encode_bytes(a.cache, prerope_plan(a.cache, Tier::INT8)), one);

  // Linear scaling: the 1.1 form (theta per layer, scaling object), read back as written.
  RopeScaling lin{RopeScalingType::linear, 4, 1, 4, 8192};
  OwnedCache b = rope_cache({10000, 20000}, lin, RopeStyle::gptj, 0, 8);
  const auto bytes = encode_bytes(b.cache, Plan::uniform(2, 8, Tier::INT8));  // no prerope: still described
  const auto j = nlohmann::json::parse(manifest_of(bytes));
  EXPECT_EQ(j["rope"]["theta"], nlohmann::json::parse("[10000.0, 20000.0]"));
  EXPECT_EQ(j["rope"]["scaling"]["rope_type"], "linear");
  EXPECT_EQ(j["rope"]["scaling"]["factor"], 4.0);
  EXPECT_EQ(minor_of(bytes), 1);
  ContainerInfo info;
  decode_all(bytes, DType::F32, &info);
  EXPECT_EQ(info.rope.rope_theta, (std::vector<double>{10000, 20000}));
  EXPECT_EQ(info.rope.rope_scaling, lin);
  EXPECT_EQ(info.rope.rope_style, RopeStyle::gptj);

  // RoPE skv cannot describe: no rope entry, and prerope_centre refused naming file and cause.
  b.cache.meta.rope_unsupported = "rope_scaling type 'yarn' is not supported";
  EXPECT_TRUE(nlohmann::json::parse(manifest_of(encode_bytes(b.cache, Plan::uniform(2, 8, Tier::INT8))))["rope"].is_null());
  try {
    encode_bytes(b.cache, prerope_plan(b.cache, Tier::INT8));
    ADD_FAILURE() << "prerope accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("yarn"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(b.cache.source), std::string::npos) << e.what();
  }
}

// The reader refuses malformed rope entries (and a scaling a 1.0 reader would have ignored next
// to a numeric theta).
TEST(PerLayerRope, ReaderRefusesMalformedRopeEntries) {
  OwnedCache b = rope_cache({10000, 20000}, llama3(), RopeStyle::neox, 0, 8);
  const std::string text = manifest_of(encode_bytes(b.cache, prerope_plan(b.cache, Tier::INT8)));
  auto parse = [&](const nlohmann::json& j) {
    ContainerInfo info;
    std::vector<Shape> ks, vs;
    fmt::parse_manifest(j.dump(), "x.skv", info, ks, vs, info.rope);
    return info;
  };
  const nlohmann::json good = nlohmann::json::parse(text);
  EXPECT_EQ(parse(good).rope.rope_scaling, llama3());
  struct Bad { const char* what; nlohmann::json::json_pointer at; nlohmann::json value; Errc code; };
  using P = nlohmann::json::json_pointer;
  for (const Bad& bad : std::vector<Bad>{
           {"theta list too short", P("/rope/theta"), nlohmann::json::parse("[10000]"), Errc::format},
           {"negative theta", P("/rope/theta/1"), -3.0, Errc::format},
           {"theta a string", P("/rope/theta"), "1e4", Errc::format},
           {"scaling with numeric theta", P("/rope/theta"), 10000.0, Errc::format},
           {"scaling not an object", P("/rope/scaling"), 4, Errc::format},
           {"no factor", P("/rope/scaling"), nlohmann::json::parse(R"({"rope_type": "linear"})"), Errc::format},
           {"zero factor", P("/rope/scaling/factor"), 0.0, Errc::format},
           {"high <= low", P("/rope/scaling/high_freq_factor"), 1.0, Errc::format},
           {"unknown type", P("/rope/scaling/rope_type"), "yarn", Errc::unsupported},
       }) {
    nlohmann::json j = good;
    j[bad.at] = bad.value;
    try {
      parse(j);
      ADD_FAILURE() << bad.what << ": accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), bad.code) << bad.what << ": " << e.what();
      EXPECT_NE(std::string(e.what()).find("x.skv"), std::string::npos) << e.what();
    }
  }
}

// The policy: with RoPE it cannot describe, the automatic choice never takes prerope_centre, and
// an explicit prerope_centre fails with one line naming the file and the cause.
TEST(PerLayerRope, PolicyNeverChoosesPreRopeItCannotDescribe) {
  OwnedCache oc = rope_cache({10000, 10000}, {}, RopeStyle::neox, 0, 64);
  KvCache& c = oc.cache;
  PolicyOptions o;
  o.policy = PolicyKind::int4;
  o.threads = 1;
  PolicyReport r;
  make_plan(c, o, &r);
  EXPECT_GE(r.key_error[2], 0);  // measured while describable
  c.meta.rope_unsupported = "rope_scaling type 'dynamic' is not supported";
  const Plan p = make_plan(c, o, &r);
  EXPECT_LT(r.key_error[2], 0);
  EXPECT_NE(p.quant.key_transform, KeyTransform::prerope_centre);
  o.key_transform = KeyTransform::prerope_centre;
  try {
    make_plan(c, o, &r);
    ADD_FAILURE() << "explicit prerope accepted";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(e.code(), Errc::invalid_argument);
    EXPECT_NE(msg.find("dynamic"), std::string::npos) << msg;
    EXPECT_NE(msg.find(c.source), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}
