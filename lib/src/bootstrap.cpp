#include "skv/bootstrap.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "skv/error.hpp"

namespace skv {
namespace {

// SplitMix64: tiny, fast and the same on every standard library (std::uniform_int_distribution
// is not).
struct SplitMix {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
};

}  // namespace

Resamples make_resamples(size_t n, int replicates, uint64_t seed, uint64_t stream) {
  if (n > std::numeric_limits<uint32_t>::max())
    fail(Errc::invalid_argument, "bootstrap", "too many positions to resample");
  Resamples r;
  r.n = n;
  r.replicates = std::max(replicates, 0);
  r.index.resize(n * size_t(r.replicates));
  SplitMix mix{seed};
  SplitMix rng{mix.next() ^ (stream * 0xD1B54A32D192ED03ull + 0x8CB92BA72F3D8DD7ull)};
  rng.next();
  // x mod n: the bias is below n / 2^64, far under anything a bootstrap can resolve.
  for (auto& i : r.index) i = uint32_t(rng.next() % n);
  return r;
}

double delta_ppl_pct(std::span<const double> base, std::span<const double> nll) {
  if (base.size() != nll.size() || base.empty())
    fail(Errc::invalid_argument, "bootstrap", "paired NLLs must have the same, non-zero length");
  double d = 0;
  for (size_t t = 0; t < base.size(); ++t) d += nll[t] - base[t];
  return 100.0 * std::expm1(d / double(base.size()));
}

std::vector<double> resampled_delta_ppl(const Resamples& r, std::span<const double> base,
                                        std::span<const double> nll) {
  if (base.size() != r.n || nll.size() != r.n)
    fail(Errc::invalid_argument, "bootstrap", "NLLs and resamples differ in length");
  std::vector<double> diff(r.n);
  for (size_t t = 0; t < r.n; ++t) diff[t] = nll[t] - base[t];
  std::vector<double> out = resampled_mean(r, diff);
  for (double& x : out) x = 100.0 * std::expm1(x);
  return out;
}

std::vector<double> resampled_mean(const Resamples& r, std::span<const double> values) {
  if (values.size() != r.n) fail(Errc::invalid_argument, "bootstrap", "values and resamples differ in length");
  std::vector<double> out(size_t(r.replicates));
  if (r.n == 0) return out;
  for (int k = 0; k < r.replicates; ++k) {
    double s = 0;
    for (uint32_t i : r.replicate(k)) s += values[i];
    out[size_t(k)] = s / double(r.n);
  }
  return out;
}

Interval percentile_interval(double point, std::span<const double> replicates, double level) {
  Interval iv{point, std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::quiet_NaN()};
  if (replicates.empty()) return iv;
  if (!(level > 0 && level < 1)) fail(Errc::invalid_argument, "bootstrap", "confidence level outside (0, 1)");
  std::vector<double> v(replicates.begin(), replicates.end());
  std::sort(v.begin(), v.end());
  const auto quantile = [&](double q) {
    const double at = q * double(v.size() - 1);
    const size_t i = size_t(std::floor(at));
    const size_t j = std::min(i + 1, v.size() - 1);
    const double f = at - double(i);
    return f == 0 ? v[i] : v[i] + f * (v[j] - v[i]);
  };
  iv.lo = quantile((1 - level) / 2);
  iv.hi = quantile((1 + level) / 2);
  return iv;
}

Interval pooled_interval(std::span<const double> points, std::span<const std::vector<double>> replicates,
                         double level) {
  if (points.empty() || points.size() != replicates.size())
    fail(Errc::invalid_argument, "bootstrap", "pooling needs one point and one replicate set per text");
  double mean = 0;
  for (double p : points) mean += p;
  mean /= double(points.size());
  const size_t B = replicates[0].size();
  for (const auto& r : replicates)
    if (r.size() != B) fail(Errc::invalid_argument, "bootstrap", "texts differ in their number of replicates");
  std::vector<double> pooled(B, 0.0);
  for (const auto& r : replicates)
    for (size_t k = 0; k < B; ++k) pooled[k] += r[k] / double(points.size());
  return percentile_interval(mean, pooled, level);
}

}  // namespace skv
