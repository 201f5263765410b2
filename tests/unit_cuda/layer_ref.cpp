#include "layer_ref.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "skv/half.hpp"

namespace skv::cuda::ref {
namespace {

constexpr float kF16Max = 65504.0f;

int rne_clamped(float v, float lo, float hi) { return int(std::nearbyint(std::min(std::max(v, lo), hi))); }

float load(const uint8_t* p, DType dt) {
  uint16_t h;
  switch (dt) {
    case DType::F32: { float f; std::memcpy(&f, p, 4); return f; }
    case DType::BF16: std::memcpy(&h, p, 2); return bf16_to_f32(h);
    default: std::memcpy(&h, p, 2); return f16_to_f32(h);
  }
}

void store(uint8_t* p, DType dt, float f) {
  if (dt == DType::F32) { std::memcpy(p, &f, 4); return; }
  const uint16_t h = dt == DType::BF16 ? f32_to_bf16(f) : f32_to_f16(f);
  std::memcpy(p, &h, 2);
}

size_t row_index(const LayerGeometry& g, int h, int t) {
  return g.layout == Layout::THD ? size_t(t) * size_t(g.kv_heads) + size_t(h)
                                 : size_t(h) * size_t(g.tokens) + size_t(t);
}

struct Pair { int a, b; };
Pair rope_pair(const LayerGeometry& g, int j) {
  const int half = g.head_dim / 2;
  return g.rope_style == RopeStyle::gptj ? Pair{2 * j, 2 * j + 1} : Pair{j, j + half};
}

// undo:  a = fmaf(a', cs, b' * sn);  b = fmaf(b', cs, -(a' * sn))
void rope_undo(const LayerGeometry& g, const float* rope, int t, std::vector<float>& x) {
  const int half = g.head_dim / 2;
  const float* cs = rope + size_t(t) * size_t(half);
  const float* sn = cs + size_t(g.tokens) * size_t(half);
  for (int j = 0; j < half; ++j) {
    const Pair p = rope_pair(g, j);
    const float a0 = x[size_t(p.a)], b0 = x[size_t(p.b)];
    x[size_t(p.a)] = std::fmaf(a0, cs[j], b0 * sn[j]);
    x[size_t(p.b)] = std::fmaf(b0, cs[j], -(a0 * sn[j]));
  }
}
// apply: a' = fmaf(a, cs, -(b * sn)); b' = fmaf(b, cs, a * sn)
void rope_apply(const LayerGeometry& g, const float* rope, int t, std::vector<float>& x) {
  const int half = g.head_dim / 2;
  const float* cs = rope + size_t(t) * size_t(half);
  const float* sn = cs + size_t(g.tokens) * size_t(half);
  for (int j = 0; j < half; ++j) {
    const Pair p = rope_pair(g, j);
    const float a0 = x[size_t(p.a)], b0 = x[size_t(p.b)];
    x[size_t(p.a)] = std::fmaf(a0, cs[j], -(b0 * sn[j]));
    x[size_t(p.b)] = std::fmaf(b0, cs[j], a0 * sn[j]);
  }
}

}  // namespace

bool q8(const float* x, int n, int8_t* q, uint16_t* scale) {
  float a = 0;
  for (int i = 0; i < n; ++i) {
    if (!std::isfinite(x[i])) return false;
    a = std::max(a, std::fabs(x[i]));
  }
  const uint16_t s16 = f32_to_f16(std::min(a / 127.0f, kF16Max));
  const float s = f16_to_f32(s16);
  const float inv = s > 0 ? 1.0f / s : 0.0f;
  for (int i = 0; i < n; ++i) q[i] = int8_t(rne_clamped(x[i] * inv, -127.0f, 127.0f));
  *scale = s16;
  return true;
}

bool q4(const float* x, int n, uint8_t* packed, uint16_t* scale, uint16_t* minv) {
  float mn = x[0], mx = x[0];
  for (int i = 0; i < n; ++i) {
    if (!std::isfinite(x[i])) return false;
    mn = std::min(mn, x[i]);
    mx = std::max(mx, x[i]);
  }
  mn = mn + 0.0f;
  mx = mx + 0.0f;
  const uint16_t s16 = f32_to_f16(std::min((mx - mn) / 15.0f, kF16Max));
  const uint16_t m16 = f32_to_f16(mn);
  if ((m16 & 0x7fffu) == 0x7c00u) return false;
  const float s = f16_to_f32(s16), m = f16_to_f32(m16);
  const float inv = s > 0 ? 1.0f / s : 0.0f;
  for (int i = 0; i < n; i += 2) {
    const int lo = rne_clamped((x[i] - m) * inv, 0.0f, 15.0f);
    const int hi = rne_clamped((x[i + 1] - m) * inv, 0.0f, 15.0f);
    packed[i / 2] = uint8_t(lo | (hi << 4));
  }
  *scale = s16;
  *minv = m16;
  return true;
}

bool q2(const float* x, int n, uint8_t* packed, uint16_t* scale, uint16_t* minv) {
  float mn = x[0], mx = x[0];
  for (int i = 0; i < n; ++i) {
    if (!std::isfinite(x[i])) return false;
    mn = std::min(mn, x[i]);
    mx = std::max(mx, x[i]);
  }
  mn = mn + 0.0f;
  mx = mx + 0.0f;
  const uint16_t s16 = f32_to_f16(std::min((mx - mn) / 3.0f, kF16Max));
  const uint16_t m16 = f32_to_f16(mn);
  if ((m16 & 0x7fffu) == 0x7c00u) return false;
  const float s = f16_to_f32(s16), m = f16_to_f32(m16);
  const float inv = s > 0 ? 1.0f / s : 0.0f;
  for (int i = 0; i < n; i += 4) {
    int b = 0;
    for (int j = 0; j < 4; ++j) b |= rne_clamped((x[i + j] - m) * inv, 0.0f, 3.0f) << (2 * j);
    packed[i / 4] = uint8_t(b);
  }
  *scale = s16;
  *minv = m16;
  return true;
}

float dq8(int8_t q, uint16_t scale, float centre) { return std::fmaf(float(q), f16_to_f32(scale), centre); }

float dq4(int q, uint16_t scale, uint16_t minv, const float* centre) {
  const float v = std::fmaf(float(q), f16_to_f32(scale), f16_to_f32(minv));
  return centre ? v + *centre : v;
}

bool encode_layer(const LayerPlan& plan, const void* k, const void* v, const uint8_t* k_tiers,
                  const uint8_t* v_tiers, const float* rope, std::vector<uint8_t>& out, BadRow* bad) {
  const LayerGeometry& g = plan.geo;
  const int H = g.kv_heads, T = g.tokens, D = g.head_dim;
  const size_t es = dtype_size(g.dtype);
  out.assign(size_t(plan.payload_bytes), 0);
  write_directory(plan, out.data());
  std::memcpy(out.data() + plan.offset[kKMap], k_tiers, size_t(T));
  std::memcpy(out.data() + plan.offset[kVMap], v_tiers, size_t(T));
  const bool prerope = g.key_transform == KeyTransform::prerope_centre;
  float* centre = reinterpret_cast<float*>(out.data() + plan.offset[kKCentre]);
  std::vector<float> x(static_cast<size_t>(D));
  auto load_row = [&](const void* src, int h, int t) {
    const uint8_t* p = static_cast<const uint8_t*>(src) + row_index(g, h, t) * size_t(D) * es;
    for (int d = 0; d < D; ++d) x[size_t(d)] = load(p + size_t(d) * es, g.dtype);
  };
  // Centres: f32(sum over K tokens at INT8/INT4/INT2, ascending, of f64(x) / f64(count)).
  if (g.centred()) {
    const double count = double(plan.count[0][1] + plan.count[0][2] + plan.count[0][4]);
    for (int h = 0; h < H; ++h) {
      std::vector<double> acc(size_t(D), 0.0);
      for (int t = 0; t < T; ++t) {
        if (k_tiers[t] != 1 && k_tiers[t] != 2 && k_tiers[t] != 4) continue;
        load_row(k, h, t);
        if (prerope) rope_undo(g, rope, t, x);
        for (int d = 0; d < D; ++d) acc[size_t(d)] += double(x[size_t(d)]) / count;
      }
      for (int d = 0; d < D; ++d) centre[size_t(h) * size_t(D) + size_t(d)] = float(acc[size_t(d)]);
    }
  }
  bool ok = true;
  for (int kv = 0; kv < 2; ++kv) {
    const uint8_t* map = kv ? v_tiers : k_tiers;
    const void* src = kv ? v : k;
    const int base = kv ? kVTierBase : kKTierBase;
    uint8_t* f16 = out.data() + plan.offset[size_t(base + kFp16Values)];
    auto* q8v = reinterpret_cast<int8_t*>(out.data() + plan.offset[size_t(base + kInt8Values)]);
    auto* s8 = reinterpret_cast<uint16_t*>(out.data() + plan.offset[size_t(base + kInt8Scales)]);
    uint8_t* q4v = out.data() + plan.offset[size_t(base + kInt4Values)];
    auto* p4 = reinterpret_cast<uint16_t*>(out.data() + plan.offset[size_t(base + kInt4Params)]);
    uint8_t* q2v = out.data() + plan.offset[size_t(kv ? kVInt2Values : kKInt2Values)];
    auto* p2 = reinterpret_cast<uint16_t*>(out.data() + plan.offset[size_t(kv ? kVInt2Params : kKInt2Params)]);
    const auto& n = plan.count[size_t(kv)];
    for (int h = 0; h < H; ++h) {
      uint64_t rank[kNumTiers] = {};
      for (int t = 0; t < T; ++t) {
        const int tier = map[t];
        const uint64_t r = rank[tier]++;
        if (tier == 3) continue;
        if (tier == 0) {  // source bits for F16/BF16, f16(x) for F32
          const uint8_t* p = static_cast<const uint8_t*>(src) + row_index(g, h, t) * size_t(D) * es;
          uint8_t* dst = f16 + (uint64_t(h) * n[0] + r) * uint64_t(D) * 2;
          for (int d = 0; d < D; ++d) {
            const uint16_t bits = g.dtype == DType::F32 ? f32_to_f16(load(p + size_t(d) * 4, g.dtype))
                                                        : uint16_t(p[2 * d] | (p[2 * d + 1] << 8));
            std::memcpy(dst + 2 * d, &bits, 2);
          }
          continue;
        }
        load_row(src, h, t);
        if (kv == 0 && g.centred()) {
          if (prerope) rope_undo(g, rope, t, x);
          for (int d = 0; d < D; ++d) x[size_t(d)] = x[size_t(d)] - centre[size_t(h) * size_t(D) + size_t(d)];
        }
        bool row_ok = true;
        if (tier == 1) {
          const int G = D / g.int8_group;
          const uint64_t row = uint64_t(h) * n[1] + r;
          for (int gi = 0; gi < G; ++gi)
            row_ok = row_ok && q8(x.data() + gi * g.int8_group, g.int8_group,
                                  q8v + row * uint64_t(D) + uint64_t(gi * g.int8_group), s8 + row * uint64_t(G) + uint64_t(gi));
        } else if (tier == 4) {
          const int G = D / g.int2_group;
          const uint64_t row = uint64_t(h) * n[4] + r;
          for (int gi = 0; gi < G; ++gi)
            row_ok = row_ok && q2(x.data() + gi * g.int2_group, g.int2_group,
                                  q2v + (row * uint64_t(D) + uint64_t(gi * g.int2_group)) / 4,
                                  p2 + 2 * (row * uint64_t(G) + uint64_t(gi)), p2 + 2 * (row * uint64_t(G) + uint64_t(gi)) + 1);
        } else {
          const int G = D / g.int4_group;
          const uint64_t row = uint64_t(h) * n[2] + r;
          for (int gi = 0; gi < G; ++gi)
            row_ok = row_ok && q4(x.data() + gi * g.int4_group, g.int4_group,
                                  q4v + (row * uint64_t(D) + uint64_t(gi * g.int4_group)) / 2,
                                  p4 + 2 * (row * uint64_t(G) + uint64_t(gi)), p4 + 2 * (row * uint64_t(G) + uint64_t(gi)) + 1);
        }
        if (!row_ok && ok) {
          ok = false;
          if (bad) *bad = {kv, h, t};
        }
      }
    }
  }
  return ok;
}

void decode_layer(const LayerPlan& plan, const uint8_t* payload, const float* rope, DType out_dtype,
                  void* k, void* v, uint8_t* mask) {
  const LayerGeometry& g = plan.geo;
  const int H = g.kv_heads, T = g.tokens, D = g.head_dim;
  const size_t oes = dtype_size(out_dtype);
  const DType tier_dt = g.tier_dtype();
  const uint8_t* maps[2] = {payload + plan.offset[kKMap], payload + plan.offset[kVMap]};
  const float* centre = g.centred() ? reinterpret_cast<const float*>(payload + plan.offset[kKCentre]) : nullptr;
  std::vector<float> y(static_cast<size_t>(D));
  for (int kv = 0; kv < 2; ++kv) {
    const int base = kv ? kVTierBase : kKTierBase;
    const uint8_t* f16 = payload + plan.offset[size_t(base + kFp16Values)];
    const auto* q8v = reinterpret_cast<const int8_t*>(payload + plan.offset[size_t(base + kInt8Values)]);
    const auto* s8 = reinterpret_cast<const uint16_t*>(payload + plan.offset[size_t(base + kInt8Scales)]);
    const uint8_t* q4v = payload + plan.offset[size_t(base + kInt4Values)];
    const auto* p4 = reinterpret_cast<const uint16_t*>(payload + plan.offset[size_t(base + kInt4Params)]);
    const uint8_t* q2v = payload + plan.offset[size_t(kv ? kVInt2Values : kKInt2Values)];
    const auto* p2 = reinterpret_cast<const uint16_t*>(payload + plan.offset[size_t(kv ? kVInt2Params : kKInt2Params)]);
    const auto& n = plan.count[size_t(kv)];
    uint8_t* dst_base = static_cast<uint8_t*>(kv ? v : k);
    for (int h = 0; h < H; ++h) {
      const float* c = kv == 0 && centre ? centre + size_t(h) * size_t(D) : nullptr;
      uint64_t rank[kNumTiers] = {};
      for (int t = 0; t < T; ++t) {
        const int tier = maps[kv][t];
        const uint64_t r = rank[tier]++;
        uint8_t* dst = dst_base + row_index(g, h, t) * size_t(D) * oes;
        if (tier == 3) {
          std::memset(dst, 0, size_t(D) * oes);
          continue;
        }
        if (tier == 0) {
          const uint8_t* src = f16 + (uint64_t(h) * n[0] + r) * uint64_t(D) * 2;
          if (out_dtype == tier_dt) {
            std::memcpy(dst, src, size_t(D) * 2);
            continue;
          }
          for (int d = 0; d < D; ++d) y[size_t(d)] = load(src + 2 * d, tier_dt);
        } else if (tier == 1) {
          const int G = D / g.int8_group;
          const uint64_t row = uint64_t(h) * n[1] + r;
          for (int d = 0; d < D; ++d)
            y[size_t(d)] = dq8(q8v[row * uint64_t(D) + uint64_t(d)], s8[row * uint64_t(G) + uint64_t(d / g.int8_group)],
                               c ? c[d] : 0.0f);
        } else if (tier == 4) {
          const int G = D / g.int2_group;
          const uint64_t row = uint64_t(h) * n[4] + r;
          for (int d = 0; d < D; ++d) {
            const int q = (q2v[(row * uint64_t(D) + uint64_t(d)) / 4] >> ((d & 3) * 2)) & 3;
            const uint64_t pi = 2 * (row * uint64_t(G) + uint64_t(d / g.int2_group));
            y[size_t(d)] = dq4(q, p2[pi], p2[pi + 1], c ? c + d : nullptr);  // same formula
          }
        } else {
          const int G = D / g.int4_group;
          const uint64_t row = uint64_t(h) * n[2] + r;
          for (int d = 0; d < D; ++d) {
            const int q = (q4v[(row * uint64_t(D) + uint64_t(d)) / 2] >> ((d & 1) * 4)) & 15;
            const uint64_t pi = 2 * (row * uint64_t(G) + uint64_t(d / g.int4_group));
            y[size_t(d)] = dq4(q, p4[pi], p4[pi + 1], c ? c + d : nullptr);
          }
        }
        if (tier != 0 && kv == 0 && g.key_transform == KeyTransform::prerope_centre) rope_apply(g, rope, t, y);
        for (int d = 0; d < D; ++d) store(dst + size_t(d) * oes, out_dtype, y[size_t(d)]);
      }
    }
  }
  if (mask)
    for (int t = 0; t < T; ++t) mask[t] = maps[0][t] != 3 && maps[1][t] != 3 ? 1 : 0;
}

}  // namespace skv::cuda::ref
