// Synthetic KV caches built directly from owned buffers (no dump files), and decode helpers.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "skv/codec.hpp"
#include "skv/half.hpp"

namespace skv::test {

// Deterministic, platform-independent generator (std distributions differ between libraries).
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 1) {}
  uint64_t next() {
    s ^= s << 13; s ^= s >> 7; s ^= s << 17;
    return s;
  }
  float uniform() { return float(next() >> 40) / float(1 << 24); }  // [0, 1)
  float normalish() { return (uniform() + uniform() + uniform() + uniform() - 2.0f) * 1.7f; }
  int below(int n) { return int(next() % uint64_t(n)); }
};

struct OwnedCache {
  KvCache cache;
  std::vector<std::unique_ptr<std::vector<std::byte>>> bufs;
};

inline void store(DType dt, float v, std::byte* p) {
  if (dt == DType::F32) std::memcpy(p, &v, 4);
  else {
    const uint16_t h = dt == DType::F16 ? f32_to_f16(v) : f32_to_bf16(v);
    std::memcpy(p, &h, 2);
  }
}
inline float load(DType dt, const std::byte* p) {
  if (dt == DType::F32) { float v; std::memcpy(&v, p, 4); return v; }
  uint16_t h;
  std::memcpy(&h, p, 2);
  return dt == DType::F16 ? f16_to_f32(h) : bf16_to_f32(h);
}

// Values: normal-ish noise * per-channel scale + per-channel offset (keys: offset * key_offset).
inline OwnedCache make_cache(int L, int H, int T, int D, DType dt = DType::F16,
                             Layout layout = Layout::HTD, uint64_t seed = 1, float key_offset = 0) {
  OwnedCache oc;
  KvCache& c = oc.cache;
  c.shape = KvShape{L, H, T, D, 0, 0, dt};
  c.layout = layout;
  c.source = "synthetic";
  c.metadata = {{"model", "synthetic"}, {"note", "made by codec tests"}};
  Rng rng(seed);
  const size_t es = dtype_size(dt), n = size_t(H) * size_t(T) * size_t(D);
  for (int l = 0; l < L; ++l) {
    KvLayer kl;
    kl.k_name = "layers." + std::to_string(l) + ".k";
    kl.v_name = "layers." + std::to_string(l) + ".v";
    for (int kv = 0; kv < 2; ++kv) {
      auto buf = std::make_unique<std::vector<std::byte>>(n * es);
      std::vector<float> scale(static_cast<size_t>(D)), off(static_cast<size_t>(D));
      for (int d = 0; d < D; ++d) {
        scale[size_t(d)] = 0.2f + 2.0f * rng.uniform();
        off[size_t(d)] = kv == 0 ? key_offset * (rng.uniform() * 2 - 1) : 0.0f;
      }
      for (size_t i = 0; i < n; ++i) {
        const size_t d = i % size_t(D);
        store(dt, rng.normalish() * scale[d] + off[d], buf->data() + i * es);
      }
      TensorView v{dt, layout == Layout::HTD ? Shape{H, T, D} : Shape{T, H, D},
                   std::span<const std::byte>(buf->data(), buf->size())};
      (kv ? kl.v : kl.k) = v;
      oc.bufs.push_back(std::move(buf));
    }
    c.layers.push_back(std::move(kl));
  }
  return oc;
}

inline Plan random_plan(int L, int T, uint64_t seed, bool with_drop = true) {
  Plan p = Plan::uniform(L, T, Tier::FP16);
  Rng rng(seed);
  for (auto* tiers : {&p.k_tiers, &p.v_tiers})
    for (Tier& t : *tiers) t = Tier(rng.below(with_drop ? 4 : 3));
  p.policy = "random";
  return p;
}

inline std::vector<std::byte> encode_bytes(const KvCache& c, const Plan& p, int threads = 1,
                                           EncodeResult* res = nullptr) {
  VectorSink sink;
  EncodeOptions o;
  o.threads = threads;
  EncodeResult r = encode(c, p, sink, o);
  if (res) *res = r;
  return sink.bytes;
}

inline std::vector<DecodedLayer> decode_all(const std::vector<std::byte>& bytes,
                                            std::optional<DType> dt = std::nullopt,
                                            ContainerInfo* info = nullptr, int threads = 1) {
  SpanSource src(bytes);
  ContainerReader r(src, "test.skv");
  r.set_threads(threads);
  std::vector<DecodedLayer> out;
  DecodedLayer d;
  while (r.next_layer(d, dt)) out.push_back(std::move(d));
  if (info) *info = r.info();
  return out;
}

// Element (l, kv, h, t, d) of a decoded tensor in the container's layout.
inline float decoded_at(const Tensor& t, Layout layout, int H, int T, int D, int h, int tok, int d) {
  const size_t idx = layout == Layout::HTD ? (size_t(h) * size_t(T) + size_t(tok)) * size_t(D) + size_t(d)
                                           : (size_t(tok) * size_t(H) + size_t(h)) * size_t(D) + size_t(d);
  return load(t.dtype, t.data.data() + idx * dtype_size(t.dtype));
}

}  // namespace skv::test
