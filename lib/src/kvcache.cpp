// Recognising a KV cache among a dump's tensors (see kvcache.hpp for the naming rules).
#include "skv/kvcache.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>

#include "skv/error.hpp"
#include "skv/json.hpp"
#include "skv/limits.hpp"

namespace skv {
namespace {

enum class Slot { k, v, q, mask };

struct Found {
  const NamedTensor* k = nullptr;
  const NamedTensor* v = nullptr;
  const NamedTensor* q = nullptr;
  const NamedTensor* mask = nullptr;
};

// Quoted for a message; long values (a metadata JSON can be megabytes) cut to their start.
std::string q(const std::string& s) { return "'" + (s.size() > 80 ? s.substr(0, 77) + "..." : s) + "'"; }

// "layers.12.k" -> (12, k); "past_key_values.3.value" -> (3, v). Returns false for other names.
bool classify(const std::string& name, int& layer, Slot& slot, bool& hf) {
  std::string_view s = name, rest;
  if (s.starts_with("layers.")) {
    rest = s.substr(7);
    hf = false;
  } else if (s.starts_with("past_key_values.")) {
    rest = s.substr(16);
    hf = true;
  } else {
    return false;
  }
  const size_t dot = rest.find('.');
  if (dot == 0 || dot == std::string_view::npos) return false;
  const std::string_view num = rest.substr(0, dot), field = rest.substr(dot + 1);
  if (num.size() > 1 && num[0] == '0') return false;  // "layers.01.k" is not a layer name
  auto [p, ec] = std::from_chars(num.data(), num.data() + num.size(), layer);
  if (ec != std::errc() || p != num.data() + num.size() || layer < 0) return false;
  if (hf) {
    if (field == "key") slot = Slot::k;
    else if (field == "value") slot = Slot::v;
    else return false;
  } else {
    if (field == "k") slot = Slot::k;
    else if (field == "v") slot = Slot::v;
    else if (field == "q") slot = Slot::q;
    else if (field == "mask") slot = Slot::mask;
    else return false;
  }
  return true;
}

// A name that is a KV tensor name but for its spelling (layers.01.k, layers.1.K, Layers.1.k,
// layers.-1.k, past_key_values.+2.Key): left out silently, its layer would look missing or be
// lost, so such a name is an error.
bool near_miss(const std::string& name) {
  std::string s;
  for (char c : name) s += char(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  std::string_view rest = s;
  if (rest.starts_with("layers.")) rest.remove_prefix(7);
  else if (rest.starts_with("past_key_values.")) rest.remove_prefix(16);
  else return false;
  const size_t dot = rest.find('.');
  if (dot == std::string_view::npos) return false;
  std::string_view num = rest.substr(0, dot);
  const std::string_view field = rest.substr(dot + 1);
  if (!num.empty() && (num[0] == '-' || num[0] == '+')) num.remove_prefix(1);
  if (num.empty() || num.find_first_not_of("0123456789") != std::string_view::npos) return false;
  return field == "k" || field == "v" || field == "q" || field == "mask" || field == "key" || field == "value";
}

int to_int(int64_t v, const std::string& src, const std::string& what,
           int64_t max = std::numeric_limits<int>::max()) {
  if (v <= 0 || v > max)
    fail(Errc::format, src, what + " " + std::to_string(v) + " is out of range (1.." + std::to_string(max) + ")");
  return int(v);
}

// K/V shape without the optional HuggingFace batch dimension of 1.
Shape kv_dims(const NamedTensor& t, bool hf, const std::string& src) {
  Shape s = t.view.shape;
  if (hf && s.size() == 4) {
    if (s[0] != 1)
      fail(Errc::format, src,
           "tensor " + q(t.name) + " has batch size " + std::to_string(s[0]) +
               "; only one sequence per dump is supported (slice the batch first)");
    s.erase(s.begin());
  }
  if (s.size() != 3)
    fail(Errc::format, src,
         "tensor " + q(t.name) + " has shape " + shape_str(t.view.shape) +
             "; expected 3 dims (heads, tokens, head_dim)" + (hf ? " with an optional batch of 1" : ""));
  return s;
}

bool kv_dtype_ok(DType d) { return d == DType::F16 || d == DType::BF16 || d == DType::F32; }

int64_t parse_int(const std::string& key, const std::string& value, const std::string& src) {
  int64_t v = 0;
  auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
  if (ec != std::errc() || p != value.data() + value.size() || value.empty())
    fail(Errc::format, src, "metadata " + key + "=" + q(value) + " is not an integer");
  if (v < 0) fail(Errc::format, src, "metadata " + key + "=" + q(value) + " must not be negative");
  return v;
}

using nlohmann::json;

// A metadata value holding JSON (a list or an object); Errc::format naming the key otherwise.
json parse_meta_json(const std::string& key, const std::string& value, const std::string& src) {
  return parse_json(value, src, "metadata " + key + "=" + q(value));
}

double positive_number(const json& v, const std::string& what, const std::string& src) {
  if (!v.is_number() || !std::isfinite(v.get<double>()) || !(v.get<double>() > 0))
    fail(Errc::format, src, "metadata " + what + " = " + v.dump() + " is not a positive number");
  return v.get<double>();
}

double parse_theta(const std::string& key, const std::string& v, const std::string& src) {
  double d = 0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), d);
  if (ec != std::errc() || p != v.data() + v.size() || v.empty() || !std::isfinite(d) || d <= 0)
    fail(Errc::format, src, "metadata " + key + "=" + q(v) + " is not a positive number");
  return d;
}

// A RoPE base: the containers' limit (skv/limits.hpp), so a dump loads only if it can be written.
double parse_base(const std::string& key, const std::string& v, const std::string& src) {
  const double d = parse_theta(key, v, src);
  if (!limits::rope_theta_ok(d))
    fail(Errc::format, src, "metadata " + key + "=" + q(v) + " is below " + std::to_string(int(limits::kMinRopeTheta)));
  return d;
}

// rope_theta: one number, or a JSON list of positive numbers (one per layer).
std::vector<double> parse_thetas(const std::string& v, const std::string& src) {
  if (v.empty() || v.front() != '[') return {parse_base("rope_theta", v, src)};
  const json j = parse_meta_json("rope_theta", v, src);
  if (!j.is_array() || j.empty())
    fail(Errc::format, src, "metadata rope_theta=" + q(v) + " is not a number or a non-empty list");
  std::vector<double> out;
  for (size_t i = 0; i < j.size(); ++i) {
    const std::string what = "rope_theta[" + std::to_string(i) + "]";
    out.push_back(positive_number(j[i], what, src));
    if (!limits::rope_theta_ok(out.back()))
      fail(Errc::format, src, "metadata " + what + " = " + j[i].dump() + " is below " + std::to_string(int(limits::kMinRopeTheta)));
  }
  return out;
}

// rope_scaling as in config.json; sets m.rope_unsupported for types skv does not reproduce.
void parse_scaling(const std::string& v, const std::string& src, KvMeta& m) {
  const json j = parse_meta_json("rope_scaling", v, src);
  if (j.is_null()) return;
  if (!j.is_object()) fail(Errc::format, src, "metadata rope_scaling=" + q(v) + " is not a JSON object");
  const json* type = j.contains("rope_type") ? &j["rope_type"] : j.contains("type") ? &j["type"] : nullptr;
  if (!type || !type->is_string())
    fail(Errc::format, src, "metadata rope_scaling=" + q(v) + " has no string 'rope_type'");
  const std::string t = type->get<std::string>();
  auto num = [&](const char* key) {
    if (!j.contains(key)) fail(Errc::format, src, "metadata rope_scaling (" + t + ") has no '" + key + "'");
    return positive_number(j[key], std::string("rope_scaling.") + key, src);
  };
  RopeScaling& s = m.rope_scaling;
  if (t == "default") {
    s = RopeScaling{};
  } else if (t == "linear") {
    s.type = RopeScalingType::linear;
    s.factor = num("factor");
  } else if (t == "llama3") {
    s.type = RopeScalingType::llama3;
    s.factor = num("factor");
    s.low_freq_factor = num("low_freq_factor");
    s.high_freq_factor = num("high_freq_factor");
    s.original_max_position_embeddings = num("original_max_position_embeddings");
    if (!(s.high_freq_factor > s.low_freq_factor))
      fail(Errc::format, src, "metadata rope_scaling (llama3): high_freq_factor must exceed low_freq_factor");
  } else {
    m.rope_unsupported = "rope_scaling type '" + t + "' is not supported (skv reproduces default, linear and llama3)";
  }
}

// rope_local_base_freq with layer_types or sliding_window_pattern: the per-layer theta list.
void resolve_local_theta(const std::map<std::string, std::string>& md, const std::string& src,
                         int layers, KvMeta& m) {
  auto it = md.find("rope_local_base_freq");
  if (it == md.end()) return;
  const double local = parse_base("rope_local_base_freq", it->second, src);
  if (m.rope_theta.size() > 1)
    fail(Errc::format, src, "metadata rope_local_base_freq needs rope_theta to be one number (the global layers' theta)");
  if (m.rope_theta.empty()) return;  // the global theta is unknown: RoPE stays unknown
  const double global = m.rope_theta[0];
  std::vector<double> out;
  if (auto lt = md.find("layer_types"); lt != md.end()) {
    const json j = parse_meta_json("layer_types", lt->second, src);
    if (!j.is_array()) fail(Errc::format, src, "metadata layer_types is not a JSON list");
    for (const json& e : j) {
      if (!e.is_string()) fail(Errc::format, src, "metadata layer_types holds a non-string " + e.dump());
      const std::string t = e.get<std::string>();
      if (t == "sliding_attention") out.push_back(local);
      else if (t == "full_attention") out.push_back(global);
      else {
        m.rope_unsupported = "layer_types entry '" + t + "' (known: sliding_attention, full_attention)";
        return;
      }
    }
  } else if (auto sp = md.find("sliding_window_pattern"); sp != md.end()) {
    const int64_t n = parse_int("sliding_window_pattern", sp->second, src);
    if (n < 1) fail(Errc::format, src, "metadata sliding_window_pattern must be >= 1");
    if (layers <= 0) {
      m.rope_unsupported = "sliding_window_pattern without a known layer count";
      return;
    }
    for (int l = 0; l < layers; ++l) out.push_back((l + 1) % n != 0 ? local : global);
  } else {
    fail(Errc::format, src, "metadata rope_local_base_freq needs layer_types or sliding_window_pattern");
  }
  m.rope_theta = std::move(out);
}

}  // namespace

namespace {
json num_json(double v) {
  if (v == std::floor(v) && std::fabs(v) < 1e15) return json(int64_t(v));
  return json(v);
}
std::string num_str(double v) { return num_json(v).dump(); }
}  // namespace

std::string rope_theta_json(const std::vector<double>& thetas) {
  json j = json::array();
  for (double t : thetas) j.push_back(num_json(t));
  return j.dump();
}

std::string rope_scaling_json(const RopeScaling& s) {
  json j;
  switch (s.type) {
    case RopeScalingType::none: j = {{"rope_type", "default"}}; break;
    case RopeScalingType::linear: j = {{"rope_type", "linear"}, {"factor", num_json(s.factor)}}; break;
    case RopeScalingType::llama3:
      j = {{"rope_type", "llama3"},
           {"factor", num_json(s.factor)},
           {"low_freq_factor", num_json(s.low_freq_factor)},
           {"high_freq_factor", num_json(s.high_freq_factor)},
           {"original_max_position_embeddings", num_json(s.original_max_position_embeddings)}};
      break;
  }
  return j.dump();
}

std::string KvMeta::rope_summary() const {
  if (rope_theta.empty()) return {};
  std::string out = "theta ";
  if (std::all_of(rope_theta.begin(), rope_theta.end(), [&](double t) { return t == rope_theta[0]; })) {
    out += num_str(rope_theta[0]);
  } else {
    // Distinct thetas in first-use order, each with its layers as ranges.
    std::vector<double> seen;
    for (double t : rope_theta)
      if (std::find(seen.begin(), seen.end(), t) == seen.end()) seen.push_back(t);
    for (size_t k = 0; k < seen.size(); ++k) {
      if (k) out += ", ";
      out += num_str(seen[k]) + " (layers ";
      bool first = true;
      for (size_t l = 0; l < rope_theta.size(); ++l) {
        if (rope_theta[l] != seen[k] || (l > 0 && rope_theta[l - 1] == seen[k])) continue;
        size_t e = l;
        while (e + 1 < rope_theta.size() && rope_theta[e + 1] == seen[k]) ++e;
        if (!first) out += ' ';
        out += std::to_string(l);
        if (e > l) {
          out += '-';
          out += std::to_string(e);
        }
        first = false;
      }
      out += ")";
    }
  }
  const RopeScaling& s = rope_scaling;
  if (s.type == RopeScalingType::linear) out += " scaling linear factor " + num_str(s.factor);
  if (s.type == RopeScalingType::llama3)
    out += " scaling llama3 factor " + num_str(s.factor) + " low_freq_factor " + num_str(s.low_freq_factor) +
           " high_freq_factor " + num_str(s.high_freq_factor) + " original_max_position_embeddings " +
           num_str(s.original_max_position_embeddings);
  return out;
}

double rope_inv_freq(const RopeParams& p, int j, int head_dim) {
  const double base = 1.0 / std::pow(p.theta, double(2 * j) / double(head_dim));
  const RopeScaling& s = p.scaling;
  switch (s.type) {
    case RopeScalingType::none: return base;
    case RopeScalingType::linear: return base / s.factor;
    case RopeScalingType::llama3: {
      const double pi = 3.14159265358979323846;
      const double wavelen = 2.0 * pi / base;
      const double low_wavelen = s.original_max_position_embeddings / s.low_freq_factor;
      const double high_wavelen = s.original_max_position_embeddings / s.high_freq_factor;
      if (wavelen < high_wavelen) return base;
      if (wavelen > low_wavelen) return base / s.factor;
      const double smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) /
                            (s.high_freq_factor - s.low_freq_factor);
      return (1.0 - smooth) * base / s.factor + smooth * base;
    }
  }
  return base;
}

std::string KvMeta::prerope_unavailable(const KvShape& shape) const {
  if (!rope_unsupported.empty()) return rope_unsupported;
  if (rope_theta.empty() || rope_style == RopeStyle::unknown)
    return "needs rope_theta and rope_style (neox or gptj) in the metadata";
  if (rope_theta.size() != 1 && rope_theta.size() != size_t(shape.layers))
    return "rope_theta lists " + std::to_string(rope_theta.size()) + " layers, the cache has " +
           std::to_string(shape.layers);
  if (shape.head_dim % 2) return "needs an even head_dim";
  if (rotary_dim != 0 && rotary_dim != shape.head_dim)
    return "rotary_dim " + std::to_string(rotary_dim) + " (partial rotary embedding) is not supported; head_dim is " +
           std::to_string(shape.head_dim);
  return {};
}

RopeParams KvMeta::rope_for_layer(int l) const {
  RopeParams p;
  p.theta = rope_theta.size() == 1 ? rope_theta[0] : rope_theta.at(size_t(l));
  p.scaling = rope_scaling;
  return p;
}

bool KvMeta::rope_v1() const {
  for (double t : rope_theta)
    if (t != rope_theta[0]) return false;
  return rope_scaling.type == RopeScalingType::none;
}

KvMeta parse_kv_meta(const std::map<std::string, std::string>& metadata, const std::string& source,
                     int layers) {
  KvMeta m;
  auto get = [&](const char* key) -> const std::string* {
    auto it = metadata.find(key);
    return it == metadata.end() ? nullptr : &it->second;
  };
  if (auto* v = get("model")) m.model = *v;
  if (auto* v = get("architecture")) m.architecture = *v;
  if (auto* v = get("rope_theta")) m.rope_theta = parse_thetas(*v, source);
  resolve_local_theta(metadata, source, layers, m);
  if (layers > 0 && m.rope_theta.size() > 1 && m.rope_theta.size() != size_t(layers))
    fail(Errc::format, source,
         "metadata rope_theta lists " + std::to_string(m.rope_theta.size()) + " layers but the dump has " +
             std::to_string(layers));
  if (auto* v = get("rope_scaling")) parse_scaling(*v, source, m);
  if (auto* v = get("partial_rotary_factor")) {
    const double f = parse_theta("partial_rotary_factor", *v, source);
    if (f > 1) fail(Errc::format, source, "metadata partial_rotary_factor=" + q(*v) + " exceeds 1");
    if (f != 1 && m.rope_unsupported.empty())
      m.rope_unsupported = "partial_rotary_factor " + *v + " (partial rotary embedding) is not supported";
  }
  if (auto* v = get("rotary_dim")) {
    const int64_t d = parse_int("rotary_dim", *v, source);
    if (d < 1 || d > (1 << 16)) fail(Errc::format, source, "metadata rotary_dim=" + q(*v) + " is out of range");
    m.rotary_dim = int(d);
  }
  if (auto* v = get("rope_style")) {
    if (*v == "neox") m.rope_style = RopeStyle::neox;
    else if (*v == "gptj") m.rope_style = RopeStyle::gptj;
    else fail(Errc::format, source, "metadata rope_style=" + q(*v) + " must be 'neox' or 'gptj'");
  }
  if (auto* v = get("position_offset")) {
    m.position_offset = parse_int("position_offset", *v, source);
    if (m.position_offset > limits::kMaxPositionOffset)
      fail(Errc::format, source, "metadata position_offset=" + q(*v) + " exceeds 2^40");
  }
  if (auto* v = get("needle_start")) m.needle_start = parse_int("needle_start", *v, source);
  if (auto* v = get("needle_len")) m.needle_len = parse_int("needle_len", *v, source);
  return m;
}

KvCache kv_from_tensors(const std::vector<NamedTensor>& tensors,
                        const std::map<std::string, std::string>& metadata, Layout layout,
                        const std::string& source) {
  std::map<int, Found> found;
  int naming = -1;  // 0 canonical, 1 HuggingFace
  for (const auto& t : tensors) {
    int layer;
    Slot slot;
    bool hf;
    if (!classify(t.name, layer, slot, hf)) {
      if (near_miss(t.name))
        fail(Errc::format, source,
             "tensor " + q(t.name) + " is named like a KV tensor but not as one (layers.{L}.k/v/q/mask or "
             "past_key_values.{L}.key/value: lowercase, L a layer number without sign or leading zeros); rename it");
      continue;  // unrelated tensors are allowed
    }
    if (naming >= 0 && naming != int(hf))
      fail(Errc::format, source,
           "tensor " + q(t.name) + " mixes HuggingFace past_key_values.* and canonical layers.* names");
    naming = int(hf);
    Found& f = found[layer];
    const NamedTensor*& dst = slot == Slot::k ? f.k : slot == Slot::v ? f.v : slot == Slot::q ? f.q : f.mask;
    if (dst) fail(Errc::format, source, "tensor " + q(t.name) + " appears twice");
    dst = &t;
  }
  if (found.empty())
    fail(Errc::format, source,
         "no KV tensors found (expected layers.{L}.k / layers.{L}.v or "
         "past_key_values.{L}.key / past_key_values.{L}.value)");
  const bool hf = naming == 1;
  const char* kn = hf ? "key" : "k";
  const char* vn = hf ? "value" : "v";

  KvCache c;
  c.layout = layout;
  c.source = source;
  c.metadata = metadata;
  int expect = 0;
  Shape first;
  DType dtype = DType::F16;
  bool has_q = false;
  for (const auto& [layer, f] : found) {
    const std::string L = "layer " + std::to_string(layer);
    if (layer != expect)
      fail(Errc::format, source,
           "layer " + std::to_string(expect) + " is missing (found layer " + std::to_string(layer) +
               "; layers must be numbered 0, 1, 2, ... without gaps)");
    ++expect;
    if (layer >= limits::kMaxLayers)
      fail(Errc::format, source, "more than " + std::to_string(limits::kMaxLayers) + " layers");
    if (!f.k || !f.v) {
      const NamedTensor* have = f.k ? f.k : f.v ? f.v : f.q ? f.q : f.mask;
      fail(Errc::format, source,
           L + ": has " + q(have->name) + " but no " + (f.k ? "V" : "K") + " tensor (" +
               (hf ? "past_key_values." : "layers.") + std::to_string(layer) + "." +
               (f.k ? vn : kn) + ")");
    }
    for (const NamedTensor* t : {f.k, f.v})
      if (!kv_dtype_ok(t->view.dtype))
        fail(Errc::format, source,
             "tensor " + q(t->name) + " has dtype " + std::string(dtype_name(t->view.dtype)) +
                 "; K and V must be F16, BF16 or F32");
    if (f.k->view.dtype != f.v->view.dtype)
      fail(Errc::format, source,
           L + ": K is " + std::string(dtype_name(f.k->view.dtype)) + " but V is " +
               std::string(dtype_name(f.v->view.dtype)));
    const Shape ks = kv_dims(*f.k, hf, source), vs = kv_dims(*f.v, hf, source);
    if (ks != vs)
      fail(Errc::format, source,
           L + ": K " + q(f.k->name) + " has shape " + shape_str(ks) + " but V " + q(f.v->name) +
               " has " + shape_str(vs));
    if (layer == 0) {
      first = ks;
      dtype = f.k->view.dtype;
      has_q = f.q != nullptr;
      const int64_t heads = layout == Layout::HTD ? ks[0] : ks[1];
      const int64_t tokens = layout == Layout::HTD ? ks[1] : ks[0];
      // The containers' limits (skv/limits.hpp): a cache loads only if it can be written.
      c.shape.kv_heads = to_int(heads, source, "tensor '" + f.k->name + "': kv_heads", limits::kMaxKvHeads);
      c.shape.tokens = to_int(tokens, source, "tensor '" + f.k->name + "': tokens", limits::kMaxTokens);
      c.shape.head_dim = to_int(ks[2], source, "tensor '" + f.k->name + "': head_dim", limits::kMaxHeadDim);
      if (int64_t(c.shape.kv_heads) * c.shape.tokens * c.shape.head_dim > limits::kMaxLayerElements)
        fail(Errc::format, source, "tensor '" + f.k->name + "' has more than 2^40 elements");
      c.shape.dtype = dtype;
    } else {
      if (ks != first)
        fail(Errc::format, source,
             "tensor " + q(f.k->name) + " has shape " + shape_str(ks) + " but layer 0 has " +
                 shape_str(first));
      if (f.k->view.dtype != dtype)
        fail(Errc::format, source,
             "tensor " + q(f.k->name) + " is " + std::string(dtype_name(f.k->view.dtype)) +
                 " but layer 0 is " + std::string(dtype_name(dtype)));
      if ((f.q != nullptr) != has_q)
        fail(Errc::format, source,
             L + (has_q ? " has no q tensor but layer 0 has one" : " has a q tensor but layer 0 has none"));
    }

    KvLayer out;
    out.k = {f.k->view.dtype, ks, f.k->view.bytes};
    out.v = {f.v->view.dtype, vs, f.v->view.bytes};
    out.k_name = f.k->name;
    out.v_name = f.v->name;
    if (f.q) {
      const TensorView& qv = f.q->view;
      const std::string qn = "tensor " + q(f.q->name);
      if (!is_float(qv.dtype))
        fail(Errc::format, source, qn + " has dtype " + std::string(dtype_name(qv.dtype)) +
                                       "; queries must be F16, BF16 or F32");
      if (qv.shape.size() != 3)
        fail(Errc::format, source,
             qn + " has shape " + shape_str(qv.shape) + "; expected [q_heads, window, head_dim]");
      if (qv.shape[2] != c.shape.head_dim)
        fail(Errc::format, source,
             qn + " has head_dim " + std::to_string(qv.shape[2]) + " but K has " +
                 std::to_string(c.shape.head_dim));
      if (qv.shape[0] <= 0 || qv.shape[0] % c.shape.kv_heads != 0)
        fail(Errc::format, source,
             qn + " has " + std::to_string(qv.shape[0]) + " query heads, not a multiple of the " +
                 std::to_string(c.shape.kv_heads) + " KV heads");
      if (layer == 0) {
        c.shape.q_heads = to_int(qv.shape[0], source, qn + ": q_heads");
        c.shape.window = to_int(qv.shape[1], source, qn + ": window");
      } else if (qv.shape[0] != c.shape.q_heads || qv.shape[1] != c.shape.window) {
        fail(Errc::format, source,
             qn + " has shape " + shape_str(qv.shape) + " but layer 0's q is [" +
                 std::to_string(c.shape.q_heads) + ", " + std::to_string(c.shape.window) + ", " +
                 std::to_string(c.shape.head_dim) + "]");
      }
      out.q = qv;
      out.q_name = f.q->name;
    }
    if (f.mask) {
      const TensorView& mv = f.mask->view;
      const std::string mn = "tensor " + q(f.mask->name);
      if (mv.dtype != DType::U8 && mv.dtype != DType::BOOL)
        fail(Errc::format, source,
             mn + " has dtype " + std::string(dtype_name(mv.dtype)) + "; masks must be U8 or BOOL");
      if (mv.shape.size() != 1 || mv.shape[0] != c.shape.tokens)
        fail(Errc::format, source,
             mn + " has shape " + shape_str(mv.shape) + " but the cache has " +
                 std::to_string(c.shape.tokens) + " tokens");
      out.mask = mv;
      out.mask_name = f.mask->name;
    }
    c.layers.push_back(std::move(out));
  }
  c.shape.layers = int(c.layers.size());
  c.meta = parse_kv_meta(metadata, source, c.shape.layers);
  return c;
}

}  // namespace skv
