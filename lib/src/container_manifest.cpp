// The MANI section: a JSON object describing everything per cache (formats/skv.md, "MANI").
#include <nlohmann/json.hpp>

#include <cmath>
#include <map>
#include <numeric>

#include "container_format.hpp"
#include "skv/error.hpp"
#include "skv/json.hpp"
#include "skv/limits.hpp"

namespace skv::fmt {

using nlohmann::json;

std::string default_producer() { return std::string("skv ") + SKV_VERSION; }
const char* layout_name(Layout l) { return l == Layout::THD ? "THD" : "HTD"; }
const char* transform_name(KeyTransform t) {
  switch (t) {
    case KeyTransform::centre: return "centre";
    case KeyTransform::prerope_centre: return "prerope_centre";
    default: return "none";
  }
}

RowBytes row_bytes(int d, int g8, int g4, int g2) {
  RowBytes r;
  const uint64_t D = uint64_t(d);
  r.values[0] = 2 * D;
  r.values[1] = D;
  r.values[2] = D / 2;
  r.params[1] = 2 * (D / uint64_t(g8));
  r.params[2] = 4 * (D / uint64_t(g4));
  if (g2 > 0) {
    r.values[4] = D / 4;
    r.params[4] = 4 * (D / uint64_t(g2));
  }
  return r;
}

void resolve_groups(int d, const QuantSettings& q, int& g8, int& g4, int& g2, const std::string& ctx) {
  g8 = q.int8_group == 0 ? d : q.int8_group;
  g4 = q.int4_group == 0 ? d : q.int4_group;
  if (g8 <= 0 || d % g8 != 0)
    fail(Errc::invalid_argument, ctx,
         "INT8 group size " + std::to_string(g8) + " does not divide head_dim " + std::to_string(d));
  if (g4 <= 0 || d % g4 != 0 || g4 % 2 != 0)
    fail(Errc::invalid_argument, ctx,
         "INT4 group size " + std::to_string(g4) + " must be even and divide head_dim " +
             std::to_string(d));
  g2 = 0;
  if (!q.int2) return;
  g2 = q.int2_group == QuantSettings::kAutoGroup ? std::gcd(32, d) : q.int2_group == 0 ? d : q.int2_group;
  if (g2 <= 0 || d % g2 != 0 || g2 % 4 != 0)
    fail(Errc::invalid_argument, ctx,
         "INT2 group size " + std::to_string(g2) + " must be a multiple of 4 and divide head_dim " +
             std::to_string(d));
}

// The manifest's `rope` entry (formats/skv.md, "RoPE frequencies"): the 1.0 form (one theta)
// when it can hold the description, else the 1.1 form (a theta per layer, optional scaling).
KvMeta manifest_rope(const KvCache& c) {
  const KvMeta& m = c.meta;
  const bool described = !m.rope_theta.empty() && m.rope_style != RopeStyle::unknown &&
                         m.rope_unsupported.empty() &&
                         (m.rope_theta.size() == 1 || m.rope_theta.size() == size_t(c.shape.layers)) &&
                         (m.rotary_dim == 0 || m.rotary_dim == c.shape.head_dim);
  KvMeta r;
  if (!described) return r;
  r.rope_style = m.rope_style;
  r.position_offset = m.position_offset;
  r.rope_scaling = m.rope_scaling;
  if (m.rope_v1()) {
    r.rope_theta = {m.rope_theta[0]};
  } else {
    for (int l = 0; l < c.shape.layers; ++l) r.rope_theta.push_back(m.rope_for_layer(l).theta);
  }
  return r;
}

uint16_t rope_minor(const KvCache& c) {
  const KvMeta r = manifest_rope(c);
  return !r.rope_theta.empty() && !r.rope_v1() ? 1 : 0;
}

namespace {
json rope_json(const KvCache& c) {
  const KvMeta r = manifest_rope(c);
  if (r.rope_theta.empty()) return nullptr;
  json j;
  if (r.rope_v1()) {
    j["theta"] = r.rope_theta[0];
  } else {
    j["theta"] = r.rope_theta;  // one per layer (format 1.1)
    const RopeScaling& s = r.rope_scaling;
    if (s.type == RopeScalingType::linear) j["scaling"] = {{"rope_type", "linear"}, {"factor", s.factor}};
    if (s.type == RopeScalingType::llama3)
      j["scaling"] = {{"rope_type", "llama3"},
                      {"factor", s.factor},
                      {"low_freq_factor", s.low_freq_factor},
                      {"high_freq_factor", s.high_freq_factor},
                      {"original_max_position_embeddings", s.original_max_position_embeddings}};
  }
  j["style"] = r.rope_style == RopeStyle::neox ? "neox" : "gptj";
  j["position_offset"] = r.position_offset;
  return j;
}
}  // namespace

std::string build_manifest(const KvCache& c, const QuantSettings& quant, const std::string& policy,
                           double requested_budget, const std::string& producer, bool has_drops) {
  int g8, g4, g2;
  resolve_groups(c.shape.head_dim, quant, g8, g4, g2, c.source);
  json j;
  j["format"] = "skv";
  j["producer"] = producer;
  j["shape"] = {{"layers", c.shape.layers},
                {"kv_heads", c.shape.kv_heads},
                {"tokens", c.shape.tokens},
                {"head_dim", c.shape.head_dim}};
  j["layout"] = layout_name(c.layout);
  j["dtype"] = std::string(dtype_name(c.shape.dtype));
  j["fp16_tier_dtype"] = c.shape.dtype == DType::BF16 ? "BF16" : "F16";
  json tensors = json::array();
  for (size_t l = 0; l < c.layers.size(); ++l) {
    const KvLayer& L = c.layers[l];
    tensors.push_back({{"k", L.k_name},
                       {"v", L.v_name},
                       {"k_shape", L.k.shape},
                       {"v_shape", L.v.shape},
                       {"mask", L.mask_name.empty() ? "layers." + std::to_string(l) + ".mask"
                                                    : L.mask_name}});
  }
  j["tensors"] = std::move(tensors);
  j["metadata"] = c.metadata;
  j["rope"] = rope_json(c);
  j["policy"] = policy;
  j["requested_budget"] = requested_budget;
  j["drops"] = has_drops ? 1 : 0;
  j["quant"] = {{"int8", {{"bits", 8}, {"group", g8}, {"symmetric", true}, {"scale_dtype", "F16"}}},
                {"int4",
                 {{"bits", 4},
                  {"group", g4},
                  {"symmetric", false},
                  {"scale_dtype", "F16"},
                  {"zero_dtype", "F16"},
                  {"zero", "min"}}},
                {"key_transform", transform_name(quant.key_transform)},
                {"centre_dtype", "F32"},
                {"zstd_level", quant.zstd_level}};
  // Format 1.1: present exactly when the file may hold INT2 tokens (so nothing changes in 1.0).
  if (quant.int2)
    j["quant"]["int2"] = {{"bits", 2},
                          {"group", g2},
                          {"symmetric", false},
                          {"scale_dtype", "F16"},
                          {"zero_dtype", "F16"},
                          {"zero", "min"}};
  return j.dump();
}

namespace {
[[noreturn]] void bad(const std::string& ctx, const std::string& what) {
  fail(Errc::format, ctx, "manifest: " + what);
}
// A value or name for a message, which must stay one readable line: control characters
// escaped, and cut to its start (attacker-sized).
std::string shown(const std::string& s) {
  std::string out;
  for (unsigned char c : s.substr(0, 80)) {
    if (c >= 0x20 && c != 0x7f) out += char(c);
    else out += "\\x" + std::string(1, "0123456789abcdef"[c >> 4]) + "0123456789abcdef"[c & 15];
  }
  return s.size() > 80 ? out + "..." : out;
}
std::string shown(const json& v) { return shown(v.dump()); }
const json& field(const json& j, const char* key, const std::string& ctx) {
  auto it = j.find(key);
  if (it == j.end()) bad(ctx, std::string("missing '") + key + "'");
  return *it;
}
int positive(const json& j, const char* key, const std::string& ctx, int64_t max) {
  const json& v = field(j, key, ctx);
  if (!v.is_number_integer() || v.get<int64_t>() < 1 || v.get<int64_t>() > max)
    bad(ctx, std::string("'") + key + "' must be an integer in 1.." + std::to_string(max));
  return int(v.get<int64_t>());
}
std::string str(const json& j, const char* key, const std::string& ctx) {
  const json& v = field(j, key, ctx);
  if (!v.is_string()) bad(ctx, std::string("'") + key + "' must be a string");
  return v.get<std::string>();
}
void expect(const json& j, const char* key, const json& want, const std::string& ctx) {
  if (field(j, key, ctx) != want)
    fail(Errc::unsupported, ctx,
         std::string("manifest: '") + key + "' = " + shown(j.at(key)) + " (this reader knows " +
             want.dump() + ")");
}

// The `rope` entry, 1.0 or 1.1 form (formats/skv.md, "RoPE frequencies").
void parse_rope(const json& r, int layers, const std::string& ctx, KvMeta& rope) {
  rope = KvMeta{};
  if (r.is_null()) return;
  if (!r.is_object()) bad(ctx, "'rope' must be an object or null");
  const json& th = field(r, "theta", ctx);
  auto positive_num = [&](const json& v, const std::string& what) {
    if (!v.is_number() || !std::isfinite(v.get<double>()) || !(v.get<double>() > 0))
      bad(ctx, "'" + what + "' must be a number > 0");
    return v.get<double>();
  };
  auto theta = [&](const json& v) {
    if (!v.is_number() || !limits::rope_theta_ok(v.get<double>()))
      bad(ctx, "'rope.theta' must be a finite number >= " + std::to_string(int(limits::kMinRopeTheta)) +
                   ", got " + shown(v));
    return v.get<double>();
  };
  if (th.is_array()) {
    if (th.size() != size_t(layers))
      bad(ctx, "'rope.theta' lists " + std::to_string(th.size()) + " thetas for " + std::to_string(layers) + " layers");
    for (const json& t : th) rope.rope_theta.push_back(theta(t));
  } else {
    rope.rope_theta = {theta(th)};
  }
  if (auto sc = r.find("scaling"); sc != r.end()) {
    if (!th.is_array()) bad(ctx, "'rope.scaling' needs 'rope.theta' to be the per-layer list (format 1.1)");
    if (!sc->is_object()) bad(ctx, "'rope.scaling' must be an object");
    const std::string type = str(*sc, "rope_type", ctx);
    RopeScaling& s = rope.rope_scaling;
    auto get = [&](const char* key) { return positive_num(field(*sc, key, ctx), std::string("rope.scaling.") + key); };
    if (type == "linear") {
      s.type = RopeScalingType::linear;
      s.factor = get("factor");
    } else if (type == "llama3") {
      s.type = RopeScalingType::llama3;
      s.factor = get("factor");
      s.low_freq_factor = get("low_freq_factor");
      s.high_freq_factor = get("high_freq_factor");
      s.original_max_position_embeddings = get("original_max_position_embeddings");
      if (!(s.high_freq_factor > s.low_freq_factor))
        bad(ctx, "'rope.scaling.high_freq_factor' must exceed 'low_freq_factor'");
    } else {
      fail(Errc::unsupported, ctx, "manifest: rope scaling type '" + type + "' (this reader knows linear, llama3)");
    }
  }
  const std::string st = str(r, "style", ctx);
  if (st == "neox") rope.rope_style = RopeStyle::neox;
  else if (st == "gptj") rope.rope_style = RopeStyle::gptj;
  else bad(ctx, "unknown rope style '" + st + "'");
  const json& po = field(r, "position_offset", ctx);
  if (!po.is_number_integer() || po.get<int64_t>() < 0 || po.get<int64_t>() > limits::kMaxPositionOffset)
    bad(ctx, "'rope.position_offset' must be an integer in 0..2^40, got " + shown(po));
  rope.position_offset = po.get<int64_t>();
}

}  // namespace

void parse_manifest(const std::string& text, const std::string& ctx, ContainerInfo& info,
                    std::vector<Shape>& k_shapes, std::vector<Shape>& v_shapes, KvMeta& rope) {
  const json j = parse_json(text, ctx, "manifest");
  try {
    if (!j.is_object()) bad(ctx, "not a JSON object");
    if (str(j, "format", ctx) != "skv") bad(ctx, "'format' is not \"skv\"");
    info.producer = str(j, "producer", ctx);
    const json& sh = field(j, "shape", ctx);
    KvShape& s = info.shape;
    if (!sh.is_object()) bad(ctx, "'shape' must be an object");
    s.layers = positive(sh, "layers", ctx, limits::kMaxLayers);
    s.kv_heads = positive(sh, "kv_heads", ctx, limits::kMaxKvHeads);
    s.tokens = positive(sh, "tokens", ctx, limits::kMaxTokens);
    s.head_dim = positive(sh, "head_dim", ctx, limits::kMaxHeadDim);
    if (int64_t(s.kv_heads) * s.tokens * s.head_dim > limits::kMaxLayerElements)
      bad(ctx, "'shape': kv_heads*tokens*head_dim exceeds 2^40 elements a layer");
    const std::string layout = str(j, "layout", ctx);
    if (layout == "HTD") info.layout = Layout::HTD;
    else if (layout == "THD") info.layout = Layout::THD;
    else bad(ctx, "unknown layout '" + layout + "'");
    const auto dt = dtype_from_name(str(j, "dtype", ctx));
    if (!dt || !is_float(*dt)) bad(ctx, "'dtype' must be F16, BF16 or F32");
    s.dtype = *dt;
    const std::string tier_dt = str(j, "fp16_tier_dtype", ctx);
    if (tier_dt != (s.dtype == DType::BF16 ? "BF16" : "F16"))
      bad(ctx, "'fp16_tier_dtype' " + tier_dt + " does not fit dtype " + std::string(dtype_name(s.dtype)));
    const json& ts = field(j, "tensors", ctx);
    if (!ts.is_array() || ts.size() != size_t(s.layers))
      bad(ctx, "'tensors' must list " + std::to_string(s.layers) + " layers");
    info.k_names.clear(); info.v_names.clear(); info.q_names.clear(); info.mask_names.clear();
    k_shapes.clear(); v_shapes.clear();
    // Each layer's K and V are exactly the layout's 3-D shape: anything else would reinterpret
    // the data. Every output name (K, V, mask, all layers) is a valid, distinct safetensors key.
    const Shape want = info.layout == Layout::HTD ? Shape{s.kv_heads, s.tokens, s.head_dim}
                                                  : Shape{s.tokens, s.kv_heads, s.head_dim};
    std::map<std::string, std::string> owner;  // name -> "layer L k"
    for (size_t l = 0; l < ts.size(); ++l) {
      const json& t = ts[l];
      if (!t.is_object()) bad(ctx, "'tensors[" + std::to_string(l) + "]' must be an object");
      for (const char* key : {"k", "v", "mask"}) {
        std::string name = str(t, key, ctx);
        const std::string where = "layer " + std::to_string(l) + " " + key;
        if (const std::string why = limits::name_problem(name); !why.empty())
          bad(ctx, where + " name '" + shown(name) + "' " + why);
        if (auto [it, fresh] = owner.emplace(name, where); !fresh)
          bad(ctx, where + " name '" + shown(name) + "' is also the name of " + it->second);
        (key[0] == 'k' ? info.k_names : key[0] == 'v' ? info.v_names : info.mask_names).push_back(std::move(name));
      }
      info.q_names.emplace_back();
      for (int kv = 0; kv < 2; ++kv) {
        const char* key = kv ? "v_shape" : "k_shape";
        const json& js = field(t, key, ctx);
        if (js != json(want))
          bad(ctx, "layer " + std::to_string(l) + " '" + key + "' is " + shown(js) + ", layout " + layout +
                       " needs " + shape_str(want));
        (kv ? v_shapes : k_shapes).push_back(want);
      }
    }
    info.metadata.clear();
    const json& md = field(j, "metadata", ctx);
    if (!md.is_object()) bad(ctx, "'metadata' must be an object");
    for (auto it = md.begin(); it != md.end(); ++it) {
      if (!it.value().is_string()) bad(ctx, "metadata value of '" + shown(it.key()) + "' is not a string");
      info.metadata[it.key()] = it.value().get<std::string>();
    }
    parse_rope(field(j, "rope", ctx), s.layers, ctx, rope);
    info.policy = str(j, "policy", ctx);
    const json& rb = field(j, "requested_budget", ctx);
    if (!rb.is_number() || !std::isfinite(rb.get<double>()) || rb.get<double>() < 0)
      bad(ctx, "'requested_budget' must be a finite number >= 0");
    info.requested_budget = rb.get<double>();
    const json& dr = field(j, "drops", ctx);
    if (!dr.is_number_integer() || (dr.get<int64_t>() != 0 && dr.get<int64_t>() != 1))
      bad(ctx, "'drops' must be 0 or 1");
    info.has_drops = dr.get<int64_t>() == 1;
    const json& q = field(j, "quant", ctx);
    if (!q.is_object()) bad(ctx, "'quant' must be an object");
    const json& q8 = field(q, "int8", ctx);
    expect(q8, "bits", 8, ctx);
    expect(q8, "symmetric", true, ctx);
    expect(q8, "scale_dtype", "F16", ctx);
    const json& q4 = field(q, "int4", ctx);
    expect(q4, "bits", 4, ctx);
    expect(q4, "symmetric", false, ctx);
    expect(q4, "scale_dtype", "F16", ctx);
    expect(q4, "zero_dtype", "F16", ctx);
    expect(q4, "zero", "min", ctx);
    expect(q, "centre_dtype", "F32", ctx);
    QuantSettings& qs = info.quant;
    qs.int8_group = positive(q8, "group", ctx, s.head_dim);
    qs.int4_group = positive(q4, "group", ctx, s.head_dim);
    qs.int2 = q.contains("int2");
    if (qs.int2) {
      const json& q2 = field(q, "int2", ctx);
      expect(q2, "bits", 2, ctx);
      expect(q2, "symmetric", false, ctx);
      expect(q2, "scale_dtype", "F16", ctx);
      expect(q2, "zero_dtype", "F16", ctx);
      expect(q2, "zero", "min", ctx);
      qs.int2_group = positive(q2, "group", ctx, s.head_dim);
    }
    int g8, g4, g2;
    try {
      resolve_groups(s.head_dim, qs, g8, g4, g2, ctx);
    } catch (const Error& e) {
      bad(ctx, e.what());
    }
    const std::string kt = str(q, "key_transform", ctx);
    if (kt == "none") qs.key_transform = KeyTransform::none;
    else if (kt == "centre") qs.key_transform = KeyTransform::centre;
    else if (kt == "prerope_centre") qs.key_transform = KeyTransform::prerope_centre;
    else fail(Errc::unsupported, ctx, "manifest: unknown key_transform '" + kt + "'");
    if (qs.key_transform == KeyTransform::prerope_centre && (rope.rope_theta.empty() || s.head_dim % 2))
      bad(ctx, "prerope_centre needs 'rope' and an even head_dim");
    const json& zl = field(q, "zstd_level", ctx);
    if (!zl.is_number_integer() || zl.get<int64_t>() < 0 || zl.get<int64_t>() > 22)
      bad(ctx, "'quant.zstd_level' must be an integer in 0..22");
    qs.zstd_level = int(zl.get<int64_t>());
  } catch (const json::exception& e) {
    bad(ctx, e.what());
  }
}

void check_readable(const std::string& manifest, const std::string& ctx) {
  ContainerInfo info;
  std::vector<Shape> ks, vs;
  try {
    parse_manifest(manifest, ctx, info, ks, vs, info.rope);
  } catch (const Error& e) {
    std::string why = e.what();
    if (why.starts_with(ctx + ": ")) why.erase(0, ctx.size() + 2);
    fail(Errc::invalid_argument, ctx, "refusing to write a container that readers reject (" + why + ")");
  }
}

}  // namespace skv::fmt
