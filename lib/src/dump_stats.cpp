// Per-layer statistics for `skv inspect`: one streaming pass over each K and V tensor in memory
// order (so HTD and THD layouts both read sequentially), converting rows to float in chunks.
#include "skv/dump_stats.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "skv/half.hpp"

#if defined(__x86_64__)
#include "cpu_features.hpp"
#include <immintrin.h>
#endif

namespace skv {
namespace {

constexpr size_t kChunkElems = 16384;              // converted to float at a time
constexpr size_t kReleaseBytes = size_t(8) << 20;  // hand consumed bytes back this often

void f16_to_f32_scalar(const uint16_t* s, float* d, size_t n) {
  for (size_t i = 0; i < n; ++i) d[i] = f16_to_f32(s[i]);
}

#if defined(__x86_64__)
bool has_f16c() { return detail::cpu_has_avx_f16c(); }

__attribute__((target("avx,f16c"))) void f16_to_f32_f16c(const uint16_t* s, float* d, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(d + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i))));
  f16_to_f32_scalar(s + i, d + i, n - i);
}
#endif

void to_f32(const std::byte* src, DType t, float* dst, size_t n) {
  switch (t) {
    case DType::F32:
      std::memcpy(dst, src, n * 4);
      return;
    case DType::BF16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = bf16_to_f32(h);
      }
      return;
    default: {  // F16 (kv_from_tensors admits only F16, BF16, F32)
      const auto* s = reinterpret_cast<const uint16_t*>(src);
#if defined(__x86_64__)
      static const bool f16c = has_f16c();
      if (f16c) return f16_to_f32_f16c(s, dst, n);
#endif
      f16_to_f32_scalar(s, dst, n);
    }
  }
}

// One pass over a K or V tensor. `token_sq` (K only) accumulates sum x^2 per token.
TensorStats tensor_stats(const KvCache& c, const TensorView& t, std::vector<double>* token_sq,
                         const DumpStatsOptions& opts, const ReleaseFn& release) {
  const size_t H = size_t(c.shape.kv_heads), T = size_t(c.shape.tokens), D = size_t(c.shape.head_dim);
  const size_t es = dtype_size(c.shape.dtype), rows = H * T;
  const size_t chunk_rows = std::max<size_t>(1, kChunkElems / D);
  std::vector<float> buf(chunk_rows * D);
  std::vector<double> csum(H * D, 0.0);
  float absmax = 0;
  size_t nans = 0;
  double sum_abs = 0;
  size_t released = 0;

  for (size_t r0 = 0; r0 < rows; r0 += chunk_rows) {
    const size_t nr = std::min(chunk_rows, rows - r0);
    to_f32(t.bytes.data() + r0 * D * es, c.shape.dtype, buf.data(), nr * D);
    for (size_t i = 0; i < nr; ++i) {
      const size_t r = r0 + i;
      const size_t h = c.layout == Layout::HTD ? r / T : r % H;
      const size_t tok = c.layout == Layout::HTD ? r % T : r / H;
      const float* x = buf.data() + i * D;
      double* cs = csum.data() + h * D;
      float m = 0, sa = 0, sq = 0;
      unsigned rn = 0;
      for (size_t d = 0; d < D; ++d) {
        const float a = std::fabs(x[d]);
        m = a > m ? a : m;
        rn += x[d] != x[d];
        sa += a;
        sq += x[d] * x[d];
        cs[d] += double(x[d]);
      }
      absmax = std::max(absmax, m);
      nans += rn;
      sum_abs += double(sa);
      if (token_sq) (*token_sq)[tok] += double(sq);
    }
    const size_t done = (r0 + nr) * D * es;
    if (release && (done - released >= kReleaseBytes || r0 + nr == rows)) {
      release(t.bytes.subspan(released, done - released));
      released = done;
    }
  }

  TensorStats s;
  s.absmax = nans ? std::nan("") : double(absmax);
  s.mean_abs = rows * D != 0 ? sum_abs / double(rows * D) : 0.0;
  std::vector<uint32_t> idx(H * D);
  std::iota(idx.begin(), idx.end(), 0u);
  const size_t top = std::min(idx.size(), size_t(std::max(0, opts.top_channels)));
  // Largest |mean| first; ties by channel index so the order is deterministic.
  std::partial_sort(idx.begin(), idx.begin() + ptrdiff_t(top), idx.end(), [&](uint32_t a, uint32_t b) {
    const double fa = std::fabs(csum[a]), fb = std::fabs(csum[b]);
    return fa != fb ? fa > fb : a < b;
  });
  for (size_t i = 0; i < top; ++i)
    s.top_channels.push_back({int(idx[i] / D), int(idx[i] % D), csum[idx[i]] / double(T)});
  return s;
}

}  // namespace

LayerStats layer_stats(const KvCache& c, int layer, const DumpStatsOptions& opts,
                       const ReleaseFn& release) {
  const KvLayer& L = c.layers.at(size_t(layer));
  LayerStats s;
  s.layer = layer;
  std::vector<double> sq(size_t(c.shape.tokens), 0.0);
  s.k = tensor_stats(c, L.k, &sq, opts, release);
  s.v = tensor_stats(c, L.v, nullptr, opts, release);

  std::vector<double> norm(sq.size());
  for (size_t t = 0; t < sq.size(); ++t) norm[t] = std::sqrt(sq[t]);
  if (!norm.empty()) {
    std::vector<double> tmp = norm;
    const size_t mid = tmp.size() / 2;
    std::nth_element(tmp.begin(), tmp.begin() + ptrdiff_t(mid), tmp.end());
    double med = tmp[mid];
    if (tmp.size() % 2 == 0) med = (med + *std::max_element(tmp.begin(), tmp.begin() + ptrdiff_t(mid))) / 2;
    s.median_key_norm = med;
    for (size_t t = 0; t < norm.size(); ++t) {
      if (norm[t] > opts.sink_factor * med) {
        ++s.sink_count;
        if (s.sink_tokens.size() < size_t(std::max(0, opts.max_sink_tokens))) s.sink_tokens.push_back(int(t));
      }
    }
    s.sink_fraction = double(s.sink_count) / double(norm.size());
  }
  return s;
}

std::vector<LayerStats> dump_stats(const KvCache& c, const DumpStatsOptions& opts,
                                   const ReleaseFn& release) {
  std::vector<LayerStats> out;
  out.reserve(c.layers.size());
  for (int l = 0; l < c.shape.layers; ++l) out.push_back(layer_stats(c, l, opts, release));
  return out;
}

}  // namespace skv
