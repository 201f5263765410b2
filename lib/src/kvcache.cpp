// Recognising a KV cache among a dump's tensors (see kvcache.hpp for the naming rules).
#include "skv/kvcache.hpp"

#include <charconv>
#include <cmath>
#include <limits>

#include "skv/error.hpp"

namespace skv {
namespace {

enum class Slot { k, v, q, mask };

struct Found {
  const NamedTensor* k = nullptr;
  const NamedTensor* v = nullptr;
  const NamedTensor* q = nullptr;
  const NamedTensor* mask = nullptr;
};

std::string q(const std::string& s) { return "'" + s + "'"; }

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

int to_int(int64_t v, const std::string& src, const std::string& what) {
  if (v <= 0 || v > std::numeric_limits<int>::max())
    fail(Errc::format, src, what + " " + std::to_string(v) + " is out of range");
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

}  // namespace

KvMeta parse_kv_meta(const std::map<std::string, std::string>& metadata, const std::string& source) {
  KvMeta m;
  auto get = [&](const char* key) -> const std::string* {
    auto it = metadata.find(key);
    return it == metadata.end() ? nullptr : &it->second;
  };
  if (auto* v = get("model")) m.model = *v;
  if (auto* v = get("architecture")) m.architecture = *v;
  if (auto* v = get("rope_theta")) {
    double d = 0;
    auto [p, ec] = std::from_chars(v->data(), v->data() + v->size(), d);
    if (ec != std::errc() || p != v->data() + v->size() || v->empty() || !std::isfinite(d) || d <= 0)
      fail(Errc::format, source, "metadata rope_theta=" + q(*v) + " is not a positive number");
    m.rope_theta = d;
  }
  if (auto* v = get("rope_style")) {
    if (*v == "neox") m.rope_style = RopeStyle::neox;
    else if (*v == "gptj") m.rope_style = RopeStyle::gptj;
    else fail(Errc::format, source, "metadata rope_style=" + q(*v) + " must be 'neox' or 'gptj'");
  }
  if (auto* v = get("position_offset")) m.position_offset = parse_int("position_offset", *v, source);
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
    if (!classify(t.name, layer, slot, hf)) continue;  // unrelated tensors are allowed
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
  c.meta = parse_kv_meta(metadata, source);
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
      c.shape.kv_heads = to_int(heads, source, "tensor '" + f.k->name + "': kv_heads");
      c.shape.tokens = to_int(tokens, source, "tensor '" + f.k->name + "': tokens");
      c.shape.head_dim = to_int(ks[2], source, "tensor '" + f.k->name + "': head_dim");
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
  return c;
}

}  // namespace skv
