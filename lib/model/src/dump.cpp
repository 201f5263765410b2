#include "skv/model/dump.hpp"

#include <cstdio>

#include "skv/error.hpp"
#include "skv/half.hpp"

namespace skv::model {
namespace {

Tensor to_f16(const std::vector<float>& v, Shape shape) {
  Tensor t(DType::F16, std::move(shape));
  auto* p = t.as<uint16_t>();
  for (size_t k = 0; k < v.size(); ++k) p[k] = f32_to_f16(v[k]);
  return t;
}

std::string number(double x) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", x);
  return buf;
}

}  // namespace

Dump dump_cache(const Model& m, const KvCacheObject& cache, std::span<const int32_t> ids,
                const QueryCapture* queries) {
  const ModelConfig& c = m.config();
  if (size_t(cache.tokens()) != ids.size())
    fail(Errc::invalid_argument, "dump", "cache holds " + std::to_string(cache.tokens()) + " tokens, ids " +
                                             std::to_string(ids.size()));
  Dump d;
  const int64_t T = cache.tokens();
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    d.names.push_back(p + "k");
    d.tensors.push_back(to_f16(cache.layer_k(l), {c.n_kv_heads, T, c.head_dim}));
    d.names.push_back(p + "v");
    d.tensors.push_back(to_f16(cache.layer_v(l), {c.n_kv_heads, T, c.head_dim}));
    if (queries && queries->rows > 0) {
      d.names.push_back(p + "q");
      d.tensors.push_back(to_f16(queries->q[size_t(l)], {c.n_heads, queries->rows, c.head_dim}));
    }
  }
  std::string list;
  for (int32_t id : ids) {
    if (!list.empty()) list += ',';
    list += std::to_string(id);
  }
  d.metadata = {
      {"model", c.name.empty() ? m.source() : c.name},
      {"architecture", c.architecture},
      {"rope_theta", number(c.rope_theta)},
      {"rope_style", c.rope_style == RopeStyle::neox ? "neox" : "gptj"},
      {"position_offset", "0"},
      {"tokens", std::to_string(ids.size())},
      {"token_ids", list},
  };
  // Partial rotary embedding (GGUF rope.dimension_count < head_dim): recorded, so that skv does
  // not apply a full-width pre-RoPE transform to these keys (prerope_centre is unavailable).
  // The runner refuses rope scaling and applies one freq_base to every layer, so nothing else
  // about RoPE needs saying.
  if (c.n_rot != c.head_dim) d.metadata["rotary_dim"] = std::to_string(c.n_rot);
  return d;
}

Dump make_dump(const Model& m, std::span<const int32_t> ids, int window) {
  if (ids.empty()) fail(Errc::invalid_argument, "dump", "no tokens");
  if (window < 0) fail(Errc::invalid_argument, "dump", "negative query window");
  KvCacheObject cache = m.new_cache();
  QueryCapture q;
  q.window = window;
  m.forward(cache, ids, ids.size(), &q);
  return dump_cache(m, cache, ids, &q);
}

}  // namespace skv::model
