#include "skv/synthetic.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <string>

#include "row_convert.hpp"
#include "rope.hpp"
#include "skv/error.hpp"
#include "skv/parallel.hpp"

namespace skv {
namespace {

constexpr int kRank = 8;  // key low-rank structure per (layer, head)
constexpr double kQueryNoise = 1.0;  // per-channel std of the queries' broad random part
constexpr float kSalient = 1.5f;     // per-channel std of a salient token's own key direction
constexpr double kStep = 1.0;        // logit gap between successive targets of one query head

const SyntheticShape kShapes[] = {
    {"llama2-7b", 32, 32, 128, 1, 0},   {"llama3-8b", 32, 8, 128, 4, 0},
    {"mistral-7b", 32, 8, 128, 4, 0},   {"qwen2.5-7b", 28, 4, 128, 7, 27},
    {"smollm2-135m", 30, 3, 64, 3, 0},  {"tiny", 2, 2, 64, 2, 0},
};

inline uint64_t mix(uint64_t x) noexcept {  // splitmix64 finaliser
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
inline uint64_t key(uint64_t a, uint64_t b) noexcept { return mix(a ^ mix(b)); }
inline uint64_t key(uint64_t a, uint64_t b, uint64_t c) noexcept { return key(key(a, b), c); }

// Irwin-Hall(4) from one 64-bit hash, scaled to unit variance: one hash per value instead of a
// std::normal_distribution call (the generator writes up to billions of values).
inline float gauss(uint64_t h) noexcept {
  const uint32_t s = uint32_t(h & 0xffff) + uint32_t((h >> 16) & 0xffff) +
                     uint32_t((h >> 32) & 0xffff) + uint32_t(h >> 48);
  return (float(s) * (1.0f / 65536.0f) - 2.0f) * 1.7320508f;
}
inline float unif(uint64_t h) noexcept { return float(h >> 40) * (1.0f / 16777216.0f); }

// Everything that defines the keys of one (layer, kv head).
struct HeadModel {
  uint64_t seed = 0;
  int dim = 0;
  std::vector<float> basis, mean, bias, sink_dir, vscale, vmean;
};

HeadModel head_model(uint64_t seed, int layer, int head, int dim, double outliers) {
  HeadModel m;
  m.seed = key(seed, uint64_t(layer) * 1000003u + uint64_t(head), 0x6b657973);
  m.dim = dim;
  m.basis.resize(size_t(kRank) * dim);
  for (int r = 0; r < kRank; ++r)
    for (int c = 0; c < dim; ++c)
      m.basis[size_t(r) * dim + c] = 0.8f / float(1 + r) * gauss(key(m.seed, 1, uint64_t(r) * dim + c));
  m.mean.resize(static_cast<size_t>(dim));
  m.bias.assign(size_t(dim), 0.0f);
  m.sink_dir.resize(static_cast<size_t>(dim));
  m.vscale.resize(static_cast<size_t>(dim));
  m.vmean.resize(static_cast<size_t>(dim));
  for (int c = 0; c < dim; ++c) {
    m.mean[c] = 0.5f * gauss(key(m.seed, 2, c));
    m.sink_dir[c] = 3.0f * gauss(key(m.seed, 3, c));
    m.vscale[c] = 0.5f + unif(key(m.seed, 4, c));
    m.vmean[c] = 0.2f * gauss(key(m.seed, 5, c));
  }
  if (outliers > 0) {
    // Qwen2-style k_proj bias: a few channel pairs in the low-frequency (slowly rotating) end of
    // the neox layout carry offsets whose norm is `outliers` times a typical key's norm
    // (Qwen2.5-7B layer 0: |b_k| ~ 605 against a median key norm near 22, about 27x).
    const int half = dim / 2, span = std::max(1, dim / 8), count = std::max(1, dim / 64);
    const float typical_norm = 1.2f * std::sqrt(float(dim));
    const float per = float(outliers) * typical_norm / std::sqrt(1.25f * float(count));
    for (int i = 0; i < count; ++i) {
      const int ch = half - 1 - int(key(m.seed, 6, i) % uint64_t(span));
      const float mag = per * (0.75f + 0.5f * unif(key(m.seed, 7, i)));
      m.bias[ch] += (key(m.seed, 8, i) & 1) ? mag : -mag;
      m.bias[ch + half] += (key(m.seed, 9, i) & 1) ? 0.5f * mag : -0.5f * mag;
    }
  }
  return m;
}

// A salient token's own key direction (pre-RoPE): what lets a query single it out, the way a
// needle's content does in a real prompt.
void salient_dir(const HeadModel& m, int t, float* out) {
  const uint64_t row = key(m.seed, 13, uint64_t(t));
  for (int c = 0; c < m.dim; ++c) out[c] = kSalient * gauss(mix(row + uint64_t(c)));
}

// Pre-RoPE key of token t: per-channel offsets (+ outlier bias), low-rank content, noise; sinks
// add a large shared direction, salient tokens the direction of `salient` (their own index, or
// the needle's first token: a needle is one fact spread over a few tokens); -1 = none.
void key_prerope(const HeadModel& m, int t, bool sink, int salient, float* out) {
  float a[kRank];
  for (int r = 0; r < kRank; ++r) a[r] = gauss(key(m.seed, 10, uint64_t(t) * kRank + r));
  const uint64_t row = key(m.seed, 11, uint64_t(t));
  for (int c = 0; c < m.dim; ++c) {
    float x = m.mean[c] + m.bias[c] + 0.3f * gauss(mix(row + uint64_t(c)));
    for (int r = 0; r < kRank; ++r) x += a[r] * m.basis[size_t(r) * m.dim + c];
    if (sink) x += m.sink_dir[c];
    out[c] = x;
  }
  if (salient >= 0) {
    float z[512];
    salient_dir(m, salient, z);
    for (int c = 0; c < m.dim; ++c) out[c] += z[c];
  }
}

void value_row(const HeadModel& m, int t, bool sink, float* out) {
  const uint64_t row = key(m.seed, 12, uint64_t(t));
  const float s = sink ? 0.1f : 1.0f;  // sinks carry little content
  for (int c = 0; c < m.dim; ++c) out[c] = s * (m.vmean[c] + m.vscale[c] * gauss(mix(row + uint64_t(c))));
}

void check_opts(const SyntheticOptions& o, int tokens) {
  if (!(o.dtype == DType::F16 || o.dtype == DType::BF16 || o.dtype == DType::F32))
    fail(Errc::invalid_argument, "synthetic " + o.spec, "dtype must be F16, BF16 or F32");
  if (tokens < 1) fail(Errc::invalid_argument, "synthetic " + o.spec, "need at least 1 token");
  if (o.window < 0 || o.group < 0 || o.sinks < 0 || o.important < 0 || o.important > 1)
    fail(Errc::invalid_argument, "synthetic " + o.spec, "negative window/group/sinks or bad important share");
}

}  // namespace

std::vector<std::string> synthetic_models() {
  std::vector<std::string> out;
  for (const auto& s : kShapes) out.push_back(s.model);
  return out;
}

namespace {
// "LxHxD" (layers x kv heads x head_dim) for shapes no named model has; false if not that form.
bool parse_dims(std::string_view name, SyntheticShape& out) {
  int v[3] = {0, 0, 0}, k = 0;
  for (char ch : name) {
    if (ch == 'x') {
      if (++k > 2) return false;
    } else if (ch >= '0' && ch <= '9') {
      v[k] = v[k] * 10 + (ch - '0');
      if (v[k] > 1 << 20) return false;
    } else {
      return false;
    }
  }
  if (k != 2 || v[0] < 1 || v[1] < 1 || v[2] < 2 || v[2] > 512 || v[2] % 2) return false;
  out = {std::string(name), v[0], v[1], v[2], 1, 0};
  return true;
}
}  // namespace

SyntheticShape parse_synthetic_spec(std::string_view spec, int& tokens) {
  const size_t colon = spec.find(':');
  const std::string_view name = spec.substr(0, colon);
  SyntheticShape dims;
  const bool is_dims = parse_dims(name, dims);
  for (const SyntheticShape& s : is_dims ? std::vector<SyntheticShape>{dims}
                                          : std::vector<SyntheticShape>(std::begin(kShapes), std::end(kShapes))) {
    if (s.model != name) continue;
    if (colon == std::string_view::npos) fail(Errc::invalid_argument, std::string(spec), "expected MODEL:TOKENS");
    const std::string num(spec.substr(colon + 1));
    size_t used = 0;
    long long v = -1;
    try {
      v = std::stoll(num, &used);
    } catch (...) {
      used = 0;
    }
    if (used != num.size() || v < 1 || v > (1 << 24))
      fail(Errc::invalid_argument, std::string(spec), "token count must be an integer in 1..16777216");
    tokens = int(v);
    return s;
  }
  std::string known;
  for (const auto& s : kShapes) known += (known.empty() ? "" : ", ") + s.model;
  fail(Errc::invalid_argument, std::string(spec), "unknown synthetic model (known: " + known + ", or LxHxD with an even head_dim <= 512)");
}

std::vector<NamedTensor> SyntheticCache::named() const {
  std::vector<NamedTensor> out;
  for (size_t i = 0; i < tensors.size(); ++i) out.push_back({names[i], tensors[i].view()});
  return out;
}

SyntheticCache make_synthetic(const SyntheticOptions& o) {
  int T = 0;
  const SyntheticShape shape = parse_synthetic_spec(o.spec, T);
  check_opts(o, T);
  const int L = shape.layers, H = shape.kv_heads, D = shape.head_dim;
  const int group = o.group ? o.group : shape.group;
  const int W = std::min(o.window, T);
  const int sinks = std::min(o.sinks, T);
  const double outliers = o.outliers < 0 ? shape.outliers : o.outliers;
  const uint64_t seed = mix(o.seed);

  SyntheticCache sc;
  KvCache& c = sc.cache;
  c.shape = {L, H, T, D, W ? H * group : 0, W, o.dtype};
  c.layout = o.layout;
  c.source = "synthetic " + o.spec;
  c.meta.model = shape.model;
  c.meta.architecture = "synthetic";
  if (!o.rope_layer_theta.empty() && o.rope_layer_theta.size() != size_t(L))
    fail(Errc::invalid_argument, "synthetic", "rope_layer_theta must list one theta per layer");
  c.meta.rope_theta = o.rope_layer_theta.empty() ? std::vector<double>{o.rope_theta} : o.rope_layer_theta;
  c.meta.rope_scaling = o.rope_scaling;
  c.meta.rope_style = RopeStyle::neox;
  c.meta.position_offset = o.position_offset;

  // Needle: a span in the middle of the prompt (before the window) the queries attend to.
  int64_t nstart = -1, nlen = 0;
  if (o.needle) {
    nlen = o.needle_len > 0 ? o.needle_len : std::clamp<int64_t>(T / 64, 1, 16);
    const int64_t lo = sinks, hi = std::max<int64_t>(lo, T - W - nlen);
    nstart = o.needle_start >= 0 ? o.needle_start
                                 : lo + int64_t(key(seed, 20) % uint64_t(std::max<int64_t>(1, hi - lo)));
    if (nstart + nlen > T) fail(Errc::invalid_argument, c.source, "needle span past the last token");
    c.meta.needle_start = nstart;
    c.meta.needle_len = nlen;
    c.metadata["needle_start"] = std::to_string(nstart);
    c.metadata["needle_len"] = std::to_string(nlen);
  }
  c.metadata["model"] = shape.model;
  c.metadata["architecture"] = "synthetic";
  if (o.rope_layer_theta.empty()) {
    const double th = o.rope_theta;
    c.metadata["rope_theta"] = th == std::floor(th) ? std::to_string(int64_t(th)) : std::to_string(th);
  } else {
    c.metadata["rope_theta"] = rope_theta_json(o.rope_layer_theta);
  }
  if (o.rope_scaling.type != RopeScalingType::none) c.metadata["rope_scaling"] = rope_scaling_json(o.rope_scaling);
  c.metadata["rope_style"] = "neox";
  c.metadata["position_offset"] = std::to_string(o.position_offset);
  c.metadata["skv.synthetic"] = o.spec + " seed=" + std::to_string(o.seed);

  // Important tokens: a sparse global set outside sinks, needle and window.
  const int imp_hi = T - W;
  for (int t = sinks; t < imp_hi; ++t) {
    if (nstart >= 0 && t >= nstart && t < nstart + nlen) continue;
    if (unif(key(seed, 21, uint64_t(t))) < float(o.important)) sc.important.push_back(t);
  }

  const Shape kvshape = o.layout == Layout::HTD ? Shape{H, T, D} : Shape{T, H, D};
  const int QH = H * group;
  sc.tensors.reserve(size_t(L) * (W ? 3 : 2));
  for (int l = 0; l < L; ++l) {
    sc.tensors.emplace_back(o.dtype, kvshape);
    sc.names.push_back("layers." + std::to_string(l) + ".k");
    sc.tensors.emplace_back(o.dtype, kvshape);
    sc.names.push_back("layers." + std::to_string(l) + ".v");
    if (W) {
      sc.tensors.emplace_back(o.dtype, Shape{QH, W, D});
      sc.names.push_back("layers." + std::to_string(l) + ".q");
    }
  }
  const size_t per = W ? 3 : 2;
  c.layers.resize(static_cast<size_t>(L));
  for (int l = 0; l < L; ++l) {
    KvLayer& kl = c.layers[size_t(l)];
    kl.k = sc.tensors[l * per].view();
    kl.v = sc.tensors[l * per + 1].view();
    kl.k_name = sc.names[l * per];
    kl.v_name = sc.names[l * per + 1];
    if (W) {
      kl.q = sc.tensors[l * per + 2].view();
      kl.q_name = sc.names[l * per + 2];
    }
  }

  std::vector<int> salient(size_t(T), -1);
  for (int t : sc.important) salient[size_t(t)] = t;
  for (int64_t t = nstart; nlen > 0 && t < nstart + nlen; ++t) salient[size_t(t)] = int(nstart);
  const detail::RopeTables ropes(c.meta, L, D, T);
  const size_t es = dtype_size(o.dtype);
  std::vector<uint8_t> used(size_t(T), 0);  // important tokens some head targets (race-free: bytes
  std::vector<std::vector<int>> targets_of(size_t(L) * QH);  // collected per task, merged after)

  parallel_for(L * H, o.threads, [&](int task) {
    const int l = task / H, h = task % H;
    const HeadModel m = head_model(seed, l, h, D, outliers);
    const detail::RopeTable& rope = ropes.layer(l);
    std::byte* kb = sc.tensors[l * per].data.data();
    std::byte* vb = sc.tensors[l * per + 1].data.data();
    std::vector<float> row(static_cast<size_t>(D));
    auto offset = [&](int t) {
      return (o.layout == Layout::HTD ? size_t(h) * T + t : size_t(t) * H + h) * size_t(D) * es;
    };
    for (int t = 0; t < T; ++t) {
      key_prerope(m, t, t < sinks, salient[size_t(t)], row.data());
      rope.rotate(row.data(), t, false);
      detail::store_row(row.data(), o.dtype, D, kb + offset(t));
      value_row(m, t, t < sinks, row.data());
      detail::store_row(row.data(), o.dtype, D, vb + offset(t));
    }
    if (!W) return;
    // Queries: per target j (the sinks' shared direction, a few important tokens, the needle)
    // q . rope_j(u_j) = L_j sqrt(D) exactly, where u_j is the target's own key direction, plus a
    // broad random part orthogonal to those directions (ordinary tokens' logits spread with std
    // ~1.5, as in real heads). L grows with log(tokens) so the targets keep most of the attention.
    std::byte* qb = sc.tensors[l * per + 2].data.data();
    const double lnT = std::log(double(T) + 1);
    for (int g = 0; g < group; ++g) {
      const int qh = h * group + g;
      std::vector<int>& mine = targets_of[size_t(l) * QH + qh];
      std::vector<std::pair<int, double>> tg;  // (token, logit); token -1 = the sinks
      if (sinks) tg.push_back({-1, lnT + 1.0});
      if (!sc.important.empty()) {
        const int want = std::min<int>(6, int(sc.important.size()));
        for (int k = 0; k < want; ++k) {
          const int t = sc.important[key(m.seed, 30 + uint64_t(g), uint64_t(k)) % sc.important.size()];
          if (std::find(mine.begin(), mine.end(), t) != mine.end()) continue;
          mine.push_back(t);
          tg.push_back({t, lnT + 4.0 - kStep * double(mine.size() - 1)});  // one leads, the rest trail
        }
      }
      for (int64_t t = nstart; nlen > 0 && t < nstart + nlen; ++t) tg.push_back({int(t), lnT + 5.0 - 0.25 * double(t - nstart)});
      const int n = int(tg.size());
      std::vector<double> U(static_cast<size_t>(n) * D), Gm(static_cast<size_t>(n) * n), b(static_cast<size_t>(n));
      for (int j = 0; j < n; ++j) {
        const int t = tg[size_t(j)].first;
        if (t < 0) std::copy(m.sink_dir.begin(), m.sink_dir.end(), row.begin());
        else salient_dir(m, salient[size_t(t)], row.data());
        rope.rotate(row.data(), std::max(t, 0), false);
        for (int c2 = 0; c2 < D; ++c2) U[size_t(j) * D + c2] = row[c2];
        b[size_t(j)] = tg[size_t(j)].second * std::sqrt(double(D));
      }
      for (int a = 0; a < n; ++a)
        for (int bb = 0; bb < n; ++bb) {
          double d = 0;
          for (int c2 = 0; c2 < D; ++c2) d += U[size_t(a) * D + c2] * U[size_t(bb) * D + c2];
          Gm[size_t(a) * n + bb] = d + (a == bb ? 1e-6 * D : 0.0);
        }
      // x -= U^T G^-1 (U x - rhs): afterwards U x = rhs.
      auto constrain = [&](std::vector<double>& x, const std::vector<double>& rhs) {
        std::vector<double> A = Gm, y(static_cast<size_t>(n));
        for (int a = 0; a < n; ++a) {
          double d = -rhs[size_t(a)];
          for (int c2 = 0; c2 < D; ++c2) d += U[size_t(a) * D + c2] * x[size_t(c2)];
          y[size_t(a)] = d;
        }
        for (int p = 0; p < n; ++p)  // Gaussian elimination; G is SPD and tiny
          for (int r = p + 1; r < n; ++r) {
            const double f = A[size_t(r) * n + p] / A[size_t(p) * n + p];
            for (int cc = p; cc < n; ++cc) A[size_t(r) * n + cc] -= f * A[size_t(p) * n + cc];
            y[size_t(r)] -= f * y[size_t(p)];
          }
        for (int p = n - 1; p >= 0; --p) {
          for (int cc = p + 1; cc < n; ++cc) y[size_t(p)] -= A[size_t(p) * n + cc] * y[size_t(cc)];
          y[size_t(p)] /= A[size_t(p) * n + p];
        }
        for (int a = 0; a < n; ++a)
          for (int c2 = 0; c2 < D; ++c2) x[size_t(c2)] -= U[size_t(a) * D + c2] * y[size_t(a)];
      };
      const uint64_t qseed = key(m.seed, 50, uint64_t(qh));
      std::vector<double> x(static_cast<size_t>(D));
      for (int i = 0; i < W; ++i) {
        const uint64_t r = key(m.seed, 40 + uint64_t(qh), uint64_t(i));
        for (int c2 = 0; c2 < D; ++c2)
          x[size_t(c2)] = kQueryNoise * gauss(mix(qseed + uint64_t(c2))) + 0.3 * gauss(mix(r + uint64_t(c2)));
        if (n) constrain(x, b);
        for (int c2 = 0; c2 < D; ++c2) row[c2] = float(x[size_t(c2)]);
        detail::store_row(row.data(), o.dtype, D, qb + (size_t(qh) * W + i) * size_t(D) * es);
      }
    }
  });
  for (const auto& v : targets_of)
    for (int t : v) used[size_t(t)] = 1;
  std::vector<int> imp;
  for (int t : sc.important)
    if (used[size_t(t)]) imp.push_back(t);
  sc.important = std::move(imp);
  return sc;
}

}  // namespace skv
