// The bootstrap behind skv eval ppl's confidence intervals.
#include "skv/bootstrap.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "skv/error.hpp"

using namespace skv;

namespace {

std::vector<double> normal(size_t n, double mean, double sd, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> d(mean, sd);
  std::vector<double> v(n);
  for (double& x : v) x = d(rng);
  return v;
}

double mean_of(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return s / double(v.size());
}

}  // namespace

TEST(Bootstrap, ResamplesAreDeterministicInRangeAndStreamsDiffer) {
  const Resamples a = make_resamples(100, 50, 7), b = make_resamples(100, 50, 7);
  const Resamples c = make_resamples(100, 50, 8), d = make_resamples(100, 50, 7, 1);
  ASSERT_EQ(a.index.size(), 100u * 50u);
  EXPECT_EQ(a.index, b.index);
  EXPECT_NE(a.index, c.index);
  EXPECT_NE(a.index, d.index);
  for (uint32_t i : a.index) EXPECT_LT(i, 100u);
  // With replacement: a replicate of 100 draws from 100 almost surely repeats some position.
  std::vector<int> seen(100, 0);
  for (uint32_t i : a.replicate(0)) ++seen[i];
  EXPECT_GT(std::count(seen.begin(), seen.end(), 0), 0);
}

TEST(Bootstrap, MeanIntervalContainsTheTrueMean) {
  // Synthetic data with a known mean: the 95% interval of the sample mean covers it (for this
  // seed; the interval is about +-2 sd / sqrt(n) = +-0.2 wide) and is not absurdly wide.
  const std::vector<double> x = normal(400, 3.0, 2.0, 11);
  const Resamples r = make_resamples(x.size(), 2000, 42);
  const Interval iv = percentile_interval(mean_of(x), resampled_mean(r, x));
  EXPECT_DOUBLE_EQ(iv.mean, mean_of(x));
  EXPECT_LT(iv.lo, 3.0);
  EXPECT_GT(iv.hi, 3.0);
  EXPECT_LT(iv.lo, iv.mean);
  EXPECT_GT(iv.hi, iv.mean);
  EXPECT_NEAR(iv.hi - iv.lo, 2 * 1.96 * 2.0 / std::sqrt(400.0), 0.08);
}

TEST(Bootstrap, DeltaPplIntervalContainsTheTrueShift) {
  // Per-token NLLs of a baseline, and a variant that adds 0.05 nats per token on average: the
  // true ΔPPL is 100 (e^0.05 - 1) = 5.13%; the paired interval covers it.
  const std::vector<double> base = normal(256, 3.0, 1.5, 3);
  const std::vector<double> noise = normal(256, 0.05, 0.1, 4);
  std::vector<double> var(base.size());
  for (size_t t = 0; t < base.size(); ++t) var[t] = base[t] + noise[t];
  const Resamples r = make_resamples(base.size(), 1000, 1);
  const Interval iv = percentile_interval(delta_ppl_pct(base, var), resampled_delta_ppl(r, base, var));
  const double truth = 100 * std::expm1(0.05);
  EXPECT_LT(iv.lo, truth);
  EXPECT_GT(iv.hi, truth);
  // Paired: the baseline's own spread (sd 1.5) does not enter, only the difference's (sd 0.1).
  EXPECT_LT(iv.hi - iv.lo, 3.0);
}

TEST(Bootstrap, IdenticalRunsGiveAZeroWidthInterval) {
  const std::vector<double> base = normal(128, 2.5, 1.0, 5);
  const Resamples r = make_resamples(base.size(), 500, 9);
  const std::vector<double> reps = resampled_delta_ppl(r, base, base);
  const Interval iv = percentile_interval(delta_ppl_pct(base, base), reps);
  EXPECT_EQ(iv.mean, 0.0);
  EXPECT_EQ(iv.lo, 0.0);
  EXPECT_EQ(iv.hi, 0.0);
}

TEST(Bootstrap, DeltaPplIsThePerplexityRatio) {
  const std::vector<double> base{1.0, 2.0, 3.0}, var{1.5, 2.0, 3.1};
  const double ppl0 = std::exp(2.0), ppl1 = std::exp((1.5 + 2.0 + 3.1) / 3);
  EXPECT_NEAR(delta_ppl_pct(base, var), 100 * (ppl1 - ppl0) / ppl0, 1e-12);
  EXPECT_THROW(delta_ppl_pct(base, std::vector<double>{1.0}), Error);
  EXPECT_THROW(delta_ppl_pct(std::vector<double>{}, std::vector<double>{}), Error);
}

TEST(Bootstrap, PercentilesInterpolate) {
  std::vector<double> v;
  for (int i = 0; i <= 100; ++i) v.push_back(double(100 - i));  // 0..100, unsorted
  const Interval iv = percentile_interval(50, v, 0.9);
  EXPECT_DOUBLE_EQ(iv.lo, 5.0);
  EXPECT_DOUBLE_EQ(iv.hi, 95.0);
  const Interval none = percentile_interval(1.5, std::vector<double>{});
  EXPECT_EQ(none.mean, 1.5);
  EXPECT_TRUE(std::isnan(none.lo));
  EXPECT_TRUE(std::isnan(none.hi));
}

TEST(Bootstrap, PooledMeanIsTheMeanOfPerTextMeans) {
  // Three texts of different lengths and shifts, each resampled within itself.
  const std::vector<size_t> len{64, 200, 130};
  const std::vector<double> shift{0.01, 0.03, -0.02};
  std::vector<double> points;
  std::vector<std::vector<double>> reps;
  for (size_t k = 0; k < len.size(); ++k) {
    const std::vector<double> base = normal(len[k], 3.0, 1.0, uint32_t(20 + k));
    std::vector<double> var = normal(len[k], shift[k], 0.05, uint32_t(30 + k));
    for (size_t t = 0; t < base.size(); ++t) var[t] += base[t];
    const Resamples r = make_resamples(len[k], 800, 5, k);
    points.push_back(delta_ppl_pct(base, var));
    reps.push_back(resampled_delta_ppl(r, base, var));
  }
  const Interval pooled = pooled_interval(points, reps);
  EXPECT_NEAR(pooled.mean, (points[0] + points[1] + points[2]) / 3, 1e-12);
  EXPECT_LT(pooled.lo, pooled.mean);
  EXPECT_GT(pooled.hi, pooled.mean);
  // Averaging three independent texts narrows the interval below that of the widest text.
  double widest = 0;
  for (size_t k = 0; k < reps.size(); ++k) {
    const Interval iv = percentile_interval(points[k], reps[k]);
    widest = std::max(widest, iv.hi - iv.lo);
  }
  EXPECT_LT(pooled.hi - pooled.lo, widest);
  // Identical runs on every text pool to a zero-width interval at zero.
  const std::vector<std::vector<double>> zeros(3, std::vector<double>(800, 0.0));
  const Interval z = pooled_interval(std::vector<double>{0, 0, 0}, zeros);
  EXPECT_EQ(z.mean, 0.0);
  EXPECT_EQ(z.lo, 0.0);
  EXPECT_EQ(z.hi, 0.0);
  EXPECT_THROW(pooled_interval(std::vector<double>{0, 0}, zeros), Error);
}
