// Bootstrap confidence intervals for skv eval: resample scored positions (target tokens) with
// replacement, recompute the statistic per replicate, and take percentiles. Paired: a baseline
// and a variant scored on the same tokens share one set of resamples, so the interval is that of
// their difference (ΔPPL), not of either alone. Deterministic in the seed on every platform.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

namespace skv {

// `replicates` resamples of n positions, each n indices drawn uniformly from [0, n) with
// replacement. `stream` selects an independent sequence for the same seed (one per text).
struct Resamples {
  size_t n = 0;
  int replicates = 0;
  std::vector<uint32_t> index;  // [replicates, n]
  std::span<const uint32_t> replicate(int r) const {
    return {index.data() + size_t(r) * n, n};
  }
};
Resamples make_resamples(size_t n, int replicates, uint64_t seed, uint64_t stream = 0);

// A point estimate and its percentile interval. lo and hi are NaN without replicates.
struct Interval {
  double mean = 0, lo = 0, hi = 0;
};

// 100 (exp(mean(nll - base_nll)) - 1): the change of perplexity exp(mean nll), in percent, of a
// variant against a baseline scored on the same tokens (same length, not empty).
double delta_ppl_pct(std::span<const double> base_nll, std::span<const double> nll);

// delta_ppl_pct of every replicate: the same resampled positions for baseline and variant.
std::vector<double> resampled_delta_ppl(const Resamples& r, std::span<const double> base_nll,
                                        std::span<const double> nll);

// Mean of `values` over every replicate.
std::vector<double> resampled_mean(const Resamples& r, std::span<const double> values);

// [lo, hi] = the (1 - level) / 2 and (1 + level) / 2 quantiles of `replicates` (linear
// interpolation between order statistics); mean = `point`.
Interval percentile_interval(double point, std::span<const double> replicates, double level = 0.95);

// Pooled over texts: mean = the mean of the per-text points; replicate r = the mean over texts of
// their replicate r (each text resampled within itself); the interval as percentile_interval.
// Every text must have the same number of replicates.
Interval pooled_interval(std::span<const double> points, std::span<const std::vector<double>> replicates,
                         double level = 0.95);

}  // namespace skv
