// Host-side layer planning (no CUDA calls): geometry checks, tier counts, stream offsets, the
// directory, size queries and the RoPE table.
#include "skv/cuda/layer_plan.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <cstring>
#include <vector>

#include "skv/error.hpp"
#include "workspace.hpp"

namespace skv::cuda {
namespace {

constexpr uint64_t align64(uint64_t n) { return (n + kPayloadAlign - 1) & ~uint64_t(kPayloadAlign - 1); }

// Bytes of one head's row at each tier: values, then parameters (skv.md "Streams").
uint64_t row_values(const LayerGeometry& g, int tier) {
  const uint64_t D = uint64_t(g.head_dim);
  if (tier == 4) return g.int2 ? D / 4 : 0;
  return tier == 0 ? 2 * D : tier == 1 ? D : tier == 2 ? D / 2 : 0;
}
uint64_t row_params(const LayerGeometry& g, int tier) {
  const uint64_t D = uint64_t(g.head_dim);
  if (tier == 4) return g.int2 ? 4 * (D / uint64_t(g.int2_group)) : 0;
  return tier == 1 ? 2 * (D / uint64_t(g.int8_group)) : tier == 2 ? 4 * (D / uint64_t(g.int4_group)) : 0;
}

void put_u32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, 4); }
void put_u64(uint8_t* p, uint64_t v) { std::memcpy(p, &v, 8); }

}  // namespace

LayerGeometry make_geometry(const KvShape& shape, Layout layout, const QuantSettings& quant,
                            RopeStyle rope_style, const std::string& ctx) {
  LayerGeometry g;
  g.kv_heads = shape.kv_heads;
  g.tokens = shape.tokens;
  g.head_dim = shape.head_dim;
  g.dtype = shape.dtype;
  g.layout = layout;
  g.key_transform = quant.key_transform;
  g.rope_style = rope_style;
  const int D = g.head_dim;
  g.int8_group = quant.int8_group == 0 ? D : quant.int8_group;
  g.int4_group = quant.int4_group == 0 ? D : quant.int4_group;
  if (g.kv_heads < 1 || g.tokens < 1 || D < 1) fail(Errc::invalid_argument, ctx, "empty cache shape");
  if (g.kv_heads > 65535) fail(Errc::invalid_argument, ctx, "the CUDA codec handles at most 65535 kv_heads");
  if (D > 1024) fail(Errc::invalid_argument, ctx, "the CUDA codec handles head_dim up to 1024");
  if (!is_float(g.dtype)) fail(Errc::invalid_argument, ctx, "K/V dtype must be F16, BF16 or F32");
  if (g.int8_group <= 0 || D % g.int8_group != 0)
    fail(Errc::invalid_argument, ctx,
         "INT8 group size " + std::to_string(g.int8_group) + " does not divide head_dim " + std::to_string(D));
  if (g.int4_group <= 0 || D % g.int4_group != 0 || g.int4_group % 2 != 0)
    fail(Errc::invalid_argument, ctx,
         "INT4 group size " + std::to_string(g.int4_group) + " must be even and divide head_dim " +
             std::to_string(D));
  g.int2 = quant.int2;
  if (g.int2) {
    g.int2_group = quant.int2_group == QuantSettings::kAutoGroup ? std::gcd(32, D)
                   : quant.int2_group == 0                      ? D
                                                                : quant.int2_group;
    if (g.int2_group <= 0 || D % g.int2_group != 0 || g.int2_group % 4 != 0)
      fail(Errc::invalid_argument, ctx,
           "INT2 group size " + std::to_string(g.int2_group) + " must be a multiple of 4 and divide head_dim " +
               std::to_string(D));
  }
  if (uint8_t(g.key_transform) > 2) fail(Errc::invalid_argument, ctx, "unknown key transform");
  if (g.key_transform == KeyTransform::prerope_centre &&
      (D % 2 != 0 || (rope_style != RopeStyle::neox && rope_style != RopeStyle::gptj)))
    fail(Errc::invalid_argument, ctx, "key transform prerope_centre needs an even head_dim and a RoPE style");
  return g;
}

LayerPlan plan_layer(const LayerGeometry& g, const uint8_t* k_tiers, const uint8_t* v_tiers,
                     const std::string& ctx) {
  LayerPlan p;
  p.geo = g;
  const uint8_t* maps[2] = {k_tiers, v_tiers};
  for (int kv = 0; kv < 2; ++kv)
    for (int t = 0; t < g.tokens; ++t) {
      const uint8_t code = maps[kv][t];
      if (code >= kNumTiers || (code == uint8_t(Tier::INT2) && !g.int2))
        fail(Errc::invalid_argument, ctx,
             std::string(kv ? "V" : "K") + " token " + std::to_string(t) + ": tier code " +
                 std::to_string(code) + (g.int2 ? " is not 0..4" : " is not 0..3 (INT2 is not declared)"));
      ++p.count[size_t(kv)][code];
    }
  const uint64_t H = uint64_t(g.kv_heads);
  p.size[kKMap] = p.size[kVMap] = uint64_t(g.tokens);
  p.size[kKCentre] = g.centred() ? 4 * H * uint64_t(g.head_dim) : 0;
  for (int kv = 0; kv < 2; ++kv) {
    const int base = kv ? kVTierBase : kKTierBase;
    const auto& n = p.count[size_t(kv)];
    p.size[size_t(base + kFp16Values)] = H * n[0] * row_values(g, 0);
    p.size[size_t(base + kInt8Values)] = H * n[1] * row_values(g, 1);
    p.size[size_t(base + kInt8Scales)] = H * n[1] * row_params(g, 1);
    p.size[size_t(base + kInt4Values)] = H * n[2] * row_values(g, 2);
    p.size[size_t(base + kInt4Params)] = H * n[2] * row_params(g, 2);
    p.size[size_t(kv ? kVInt2Values : kKInt2Values)] = H * n[4] * row_values(g, 4);
    p.size[size_t(kv ? kVInt2Params : kKInt2Params)] = H * n[4] * row_params(g, 4);
  }
  uint64_t pos = g.directory_bytes();
  for (int s = 0; s < g.streams(); ++s) {
    p.offset[size_t(s)] = align64(pos);
    pos = p.offset[size_t(s)] + p.size[size_t(s)];
  }
  p.payload_bytes = pos;
  return p;
}

void write_directory(const LayerPlan& plan, uint8_t* dir) {
  std::memset(dir, 0, plan.geo.directory_bytes());
  for (int s = 0; s < plan.geo.streams(); ++s) {
    uint8_t* e = dir + 24 * s;
    put_u32(e, 0);  // codec: stored raw
    put_u64(e + 8, plan.size[size_t(s)]);
    put_u64(e + 16, plan.size[size_t(s)]);
  }
}

std::array<std::span<const uint8_t>, kLayerStreams> split_streams(const LayerPlan& plan,
                                                                  std::span<const uint8_t> payload) {
  if (payload.size() < plan.payload_bytes)
    fail(Errc::invalid_argument, "cuda", "payload shorter than the layer plan");
  std::array<std::span<const uint8_t>, kLayerStreams> out;
  for (int s = 0; s < kLayerStreams; ++s)
    out[size_t(s)] = payload.subspan(size_t(plan.offset[size_t(s)]), size_t(plan.size[size_t(s)]));
  return out;
}

void join_streams(const LayerPlan& plan, const std::array<std::span<const uint8_t>, kLayerStreams>& streams,
                  uint8_t* payload) {
  write_directory(plan, payload);
  uint64_t end = plan.geo.directory_bytes();
  for (int s = 0; s < kLayerStreams; ++s) {
    const auto i = size_t(s);
    if (streams[i].size() != plan.size[i])
      fail(Errc::invalid_argument, "cuda", "stream " + std::to_string(s) + " holds " +
                                               std::to_string(streams[i].size()) + " bytes, the layer plan " +
                                               std::to_string(plan.size[i]));
    if (s >= plan.geo.streams()) continue;  // not in this payload (size 0)
    std::memset(payload + end, 0, size_t(plan.offset[i] - end));
    if (!streams[i].empty()) std::memcpy(payload + plan.offset[i], streams[i].data(), streams[i].size());
    end = plan.offset[i] + plan.size[i];
  }
}

size_t max_layer_bytes(const LayerGeometry& g) {
  uint64_t worst = 0;  // costliest tier per (head, token)
  for (int t = 0; t < kNumTiers; ++t) worst = std::max(worst, row_values(g, t) + row_params(g, t));
  const uint64_t H = uint64_t(g.kv_heads), T = uint64_t(g.tokens);
  // Directory, two maps, centres, 2 * T tokens at the worst tier, 63 bytes of padding per stream.
  return size_t(g.directory_bytes() + 2 * T + 4 * H * uint64_t(g.head_dim) + 2 * H * T * worst +
                (kPayloadAlign - 1) * uint64_t(g.streams()));
}

size_t workspace_bytes(const LayerGeometry& g) { return workspace_size_for(g.tokens); }

size_t rope_table_floats(const LayerGeometry& g) { return size_t(g.tokens) * size_t(g.head_dim / 2) * 2; }

void fill_rope_table(const LayerGeometry& g, double theta, int64_t position_offset, float* table) {
  fill_rope_table(g, RopeParams{theta, {}}, position_offset, table);
}

void fill_rope_table(const LayerGeometry& g, const RopeParams& rope, int64_t position_offset, float* table) {
  // skv.md, "RoPE frequencies": inv_freq in f64 (skv::rope_inv_freq, scaling included);
  // angle = f64(p) * inv_freq; f32(cos), f32(sin)
  const int half = g.head_dim / 2, D = g.head_dim;
  std::vector<double> inv_freq(static_cast<size_t>(half));
  for (int j = 0; j < half; ++j) inv_freq[size_t(j)] = rope_inv_freq(rope, j, D);
  float* cs = table;
  float* sn = table + size_t(g.tokens) * size_t(half);
  for (int t = 0; t < g.tokens; ++t)
    for (int j = 0; j < half; ++j) {
      const double a = double(position_offset + t) * inv_freq[size_t(j)];
      cs[size_t(t) * size_t(half) + size_t(j)] = float(std::cos(a));
      sn[size_t(t) * size_t(half) + size_t(j)] = float(std::sin(a));
    }
}

}  // namespace skv::cuda
