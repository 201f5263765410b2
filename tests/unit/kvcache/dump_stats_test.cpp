#include "skv/dump_stats.hpp"

#include <cmath>
#include <cstring>

#include <gtest/gtest.h>

#include "skv/half.hpp"

namespace skv {
namespace {

constexpr int H = 2, T = 40, D = 64;

// Value of K (value=false) or V at (layer, head, token, dim): small smooth noise, plus a planted
// outlier channel (head 1, dim 5) in K and planted sink tokens 0 and 7 (K scaled by 10).
double planted(int layer, bool value, int h, int t, int d) {
  double x = 0.1 * std::sin(0.37 * d + 1.3 * t + 2.1 * h + layer + (value ? 0.5 : 0.0));
  if (!value && h == 1 && d == 5) x += 4.0 + 0.25 * layer;
  if (value && h == 0 && d == 63) x -= 2.0;
  if (!value && (t == 0 || t == 7)) x *= 10.0;
  return x;
}

struct Fixture {
  std::vector<std::unique_ptr<Tensor>> owned;
  std::vector<NamedTensor> named;
  KvCache cache;
  // Stored values as float, in [layer][value][h][t][d] order, for the reference computation.
  std::vector<float> ref;

  Fixture(DType dt, Layout layout, int layers = 2) {
    ref.resize(size_t(layers) * 2 * H * T * D);
    for (int l = 0; l < layers; ++l)
      for (int v = 0; v < 2; ++v) {
        const Shape s = layout == Layout::HTD ? Shape{H, T, D} : Shape{T, H, D};
        owned.push_back(std::make_unique<Tensor>(dt, s));
        Tensor& x = *owned.back();
        for (int h = 0; h < H; ++h)
          for (int t = 0; t < T; ++t)
            for (int d = 0; d < D; ++d) {
              const size_t i = size_t(layout == Layout::HTD ? (h * T + t) : (t * H + h)) * D + size_t(d);
              const float f = float(planted(l, v, h, t, d));
              float stored = f;
              if (dt == DType::F16) {
                x.as<uint16_t>()[i] = f32_to_f16(f);
                stored = f16_to_f32(x.as<uint16_t>()[i]);
              } else if (dt == DType::BF16) {
                x.as<uint16_t>()[i] = f32_to_bf16(f);
                stored = bf16_to_f32(x.as<uint16_t>()[i]);
              } else {
                x.as<float>()[i] = f;
              }
              ref[(((size_t(l) * 2 + size_t(v)) * H + size_t(h)) * T + size_t(t)) * D + size_t(d)] = stored;
            }
        named.push_back({"layers." + std::to_string(l) + (v ? ".v" : ".k"), x.view()});
      }
    cache = kv_from_tensors(named, {}, layout, "test");
  }
  float at(int l, int v, int h, int t, int d) const {
    return ref[(((size_t(l) * 2 + size_t(v)) * H + size_t(h)) * T + size_t(t)) * D + size_t(d)];
  }
};

// Brute-force reference of one tensor's statistics, straight from the definition.
void check_tensor(const Fixture& f, int l, int v, const TensorStats& s) {
  double absmax = 0, sum = 0;
  std::vector<double> mean(H * D, 0.0);
  for (int h = 0; h < H; ++h)
    for (int t = 0; t < T; ++t)
      for (int d = 0; d < D; ++d) {
        const double x = f.at(l, v, h, t, d);
        absmax = std::max(absmax, std::fabs(x));
        sum += std::fabs(x);
        mean[size_t(h * D + d)] += x / T;
      }
  EXPECT_DOUBLE_EQ(s.absmax, absmax);
  EXPECT_NEAR(s.mean_abs, sum / (H * T * D), 1e-6 * sum / (H * T * D));
  ASSERT_EQ(s.top_channels.size(), 5u);
  for (size_t i = 0; i < 5; ++i) {
    const auto& c = s.top_channels[i];
    EXPECT_NEAR(c.mean, mean[size_t(c.head * D + c.dim)], 1e-5);
    if (i) {
      EXPECT_GE(std::fabs(s.top_channels[i - 1].mean), std::fabs(c.mean));
    }
  }
  // Nothing outside the reported set may have a larger |mean| than the last one reported.
  int larger = 0;
  for (double m : mean) larger += std::fabs(m) > std::fabs(s.top_channels[4].mean) + 1e-9;
  EXPECT_LE(larger, 4);
}

void check(DType dt, Layout layout) {
  Fixture f(dt, layout);
  size_t released = 0;
  const auto stats = dump_stats(f.cache, {}, [&](std::span<const std::byte> b) { released += b.size(); });
  size_t total = 0;
  for (const auto& n : f.named) total += n.view.bytes.size();
  EXPECT_EQ(released, total) << "every byte of K and V is handed back after use";
  ASSERT_EQ(stats.size(), 2u);
  for (int l = 0; l < 2; ++l) {
    const LayerStats& s = stats[size_t(l)];
    EXPECT_EQ(s.layer, l);
    check_tensor(f, l, 0, s.k);
    check_tensor(f, l, 1, s.v);
    // The planted channels come first.
    EXPECT_EQ(s.k.top_channels[0].head, 1);
    EXPECT_EQ(s.k.top_channels[0].dim, 5);
    EXPECT_EQ(s.v.top_channels[0].head, 0);
    EXPECT_EQ(s.v.top_channels[0].dim, 63);
    EXPECT_LT(s.v.top_channels[0].mean, -1.5);
    // Sinks: the two planted tokens, and nothing else.
    EXPECT_EQ(s.sink_tokens, (std::vector<int>{0, 7}));
    EXPECT_EQ(s.sink_count, 2);
    EXPECT_DOUBLE_EQ(s.sink_fraction, 2.0 / T);
    std::vector<double> norms;
    for (int t = 0; t < T; ++t) {
      double q = 0;
      for (int h = 0; h < H; ++h)
        for (int d = 0; d < D; ++d) q += double(f.at(l, 0, h, t, d)) * f.at(l, 0, h, t, d);
      norms.push_back(std::sqrt(q));
    }
    std::sort(norms.begin(), norms.end());
    EXPECT_NEAR(s.median_key_norm, (norms[T / 2 - 1] + norms[T / 2]) / 2, 1e-4);
  }
}

TEST(DumpStats, F32Htd) { check(DType::F32, Layout::HTD); }
TEST(DumpStats, F16Htd) { check(DType::F16, Layout::HTD); }
TEST(DumpStats, BF16Thd) { check(DType::BF16, Layout::THD); }
TEST(DumpStats, F16Thd) { check(DType::F16, Layout::THD); }

TEST(DumpStats, NanAndOptions) {
  Fixture f(DType::F32, Layout::HTD, 1);
  const_cast<float*>(f.named[1].view.as<float>())[17] = std::nanf("");
  const LayerStats s = layer_stats(f.cache, 0, {.top_channels = 2, .sink_factor = 1e9, .max_sink_tokens = 1});
  EXPECT_TRUE(std::isnan(s.v.absmax));
  EXPECT_FALSE(std::isnan(s.k.absmax));
  EXPECT_EQ(s.k.top_channels.size(), 2u);
  EXPECT_EQ(s.sink_count, 0);
  const LayerStats s2 = layer_stats(f.cache, 0, {.max_sink_tokens = 1});
  EXPECT_EQ(s2.sink_count, 2);
  EXPECT_EQ(s2.sink_tokens, std::vector<int>{0});
}

TEST(DumpStats, SingleToken) {
  std::vector<std::unique_ptr<Tensor>> owned;
  std::vector<NamedTensor> named;
  for (const char* n : {"layers.0.k", "layers.0.v"}) {
    owned.push_back(std::make_unique<Tensor>(DType::F32, Shape{1, 1, 3}));
    float* p = owned.back()->as<float>();
    p[0] = 1, p[1] = -2, p[2] = 2;
    named.push_back({n, owned.back()->view()});
  }
  KvCache c = kv_from_tensors(named, {}, Layout::HTD, "t");
  const LayerStats s = layer_stats(c, 0);
  EXPECT_EQ(s.k.absmax, 2.0);
  EXPECT_DOUBLE_EQ(s.k.mean_abs, 5.0 / 3);
  EXPECT_EQ(s.k.top_channels.size(), 3u);
  EXPECT_EQ(s.k.top_channels[0].dim, 1);  // |-2| ties |2|: lower index first
  EXPECT_EQ(s.median_key_norm, 3.0);
  EXPECT_EQ(s.sink_count, 0);
}

}  // namespace
}  // namespace skv
