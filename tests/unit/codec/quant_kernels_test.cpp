// The AVX2 row kernels must match the scalar reference bit for bit, edge cases included.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "../../../lib/src/quant_rows.hpp"
#include "codec_test_util.hpp"
#include "skv/quant.hpp"

using namespace skv;
using skv::detail::RowKernels;

namespace {

// Rows that stress the quantizers: random scales, all-equal groups, signed zeros, subnormal
// and huge values, isolated outliers.
std::vector<float> make_row(test::Rng& rng, int d, int kind) {
  std::vector<float> x(static_cast<size_t>(d));
  const float mag = std::ldexp(1.0f, rng.below(60) - 40);
  for (int i = 0; i < d; ++i) {
    float v = rng.normalish() * mag;
    switch (kind % 8) {
      case 1: v = 1.25f; break;                                        // all equal
      case 2: v = (rng.below(2) ? 0.0f : -0.0f); break;                // signed zeros
      case 3: v = rng.below(3) ? (rng.below(2) ? 0.0f : -0.0f) : v; break;
      case 4: v = v * 1e-38f; break;                                   // subnormal-ish
      case 5: v = v * 1e30f; break;                                    // huge (saturates)
      case 6: v = std::numeric_limits<float>::denorm_min() * float(rng.below(5) - 2); break;
      case 7: if (rng.below(16) == 0) v = 70000.0f * (rng.below(2) ? 1.f : -1.f); break;
      default: break;
    }
    x[size_t(i)] = v;
  }
  return x;
}

class Kernels : public ::testing::Test {
 protected:
  void SetUp() override {
    simd = detail::row_kernels_avx2();
    if (!simd) GTEST_SKIP() << "CPU lacks AVX2/F16C/FMA";
  }
  const RowKernels& ref = detail::row_kernels_ref();
  const RowKernels* simd = nullptr;
};

TEST_F(Kernels, QuantizeAndDequantizeMatchReferenceBitForBit) {
  test::Rng rng(7);
  for (int d : {8, 16, 24, 64, 80, 96, 128, 256}) {
    for (int g : {8, 16, 24, 32, 64, 80, 96, 128, 256}) {
      if (g > d || d % g) continue;
      for (int it = 0; it < 64; ++it) {
        const auto x = make_row(rng, d, it);
        std::vector<float> centre(static_cast<size_t>(d));
        for (float& c : centre) c = rng.normalish();
        const int ng = d / g;
        std::vector<int8_t> qa(static_cast<size_t>(d)), qb(static_cast<size_t>(d));
        std::vector<uint16_t> sa(static_cast<size_t>(ng)), sb(static_cast<size_t>(ng));
        const bool oka = ref.q8(x.data(), d, g, qa.data(), sa.data());
        const bool okb = simd->q8(x.data(), d, g, qb.data(), sb.data());
        ASSERT_EQ(oka, okb);
        if (oka) {
          ASSERT_EQ(qa, qb) << "q8 d=" << d << " g=" << g << " kind=" << it % 8;
          ASSERT_EQ(sa, sb);
          for (const float* c : {static_cast<const float*>(nullptr), static_cast<const float*>(centre.data())}) {
            std::vector<float> ya(static_cast<size_t>(d)), yb(static_cast<size_t>(d));
            ref.dq8(qa.data(), d, g, sa.data(), c, ya.data());
            simd->dq8(qa.data(), d, g, sa.data(), c, yb.data());
            ASSERT_EQ(0, std::memcmp(ya.data(), yb.data(), ya.size() * 4));
          }
        }
        std::vector<uint8_t> pa(static_cast<size_t>(d / 2)), pb(static_cast<size_t>(d / 2));
        std::vector<uint16_t> ma(static_cast<size_t>(2 * ng)), mb(static_cast<size_t>(2 * ng));
        const bool o4a = ref.q4(x.data(), d, g, pa.data(), ma.data());
        const bool o4b = simd->q4(x.data(), d, g, pb.data(), mb.data());
        ASSERT_EQ(o4a, o4b) << "d=" << d << " g=" << g << " kind=" << it % 8;
        if (o4a) {
          ASSERT_EQ(pa, pb) << "q4 d=" << d << " g=" << g << " kind=" << it % 8;
          ASSERT_EQ(ma, mb) << "q4 params d=" << d << " g=" << g << " kind=" << it % 8;
          for (const float* c : {static_cast<const float*>(nullptr), static_cast<const float*>(centre.data())}) {
            std::vector<float> ya(static_cast<size_t>(d)), yb(static_cast<size_t>(d));
            ref.dq4(pa.data(), d, g, ma.data(), c, ya.data());
            simd->dq4(pa.data(), d, g, ma.data(), c, yb.data());
            ASSERT_EQ(0, std::memcmp(ya.data(), yb.data(), ya.size() * 4));
          }
        }
      }
    }
  }
}

// 16-bit rows for the fused kernels: converted make_row values, raw bit patterns of every
// class (subnormals, signed zeros, the largest finite values) and, now and then, an inf or NaN.
std::vector<uint16_t> make_half_row(test::Rng& rng, int d, int kind, bool bf16) {
  std::vector<uint16_t> h(static_cast<size_t>(d));
  const uint16_t inf = bf16 ? 0x7f80 : 0x7c00;
  if (kind % 3 == 0) {
    const auto x = make_row(rng, d, kind / 3);
    for (int i = 0; i < d; ++i) h[size_t(i)] = bf16 ? f32_to_bf16(x[size_t(i)]) : f32_to_f16(x[size_t(i)]);
  } else {
    for (uint16_t& v : h) {
      v = uint16_t(rng.next());
      if ((v & inf) == inf) v = uint16_t(v ^ 0x4000);  // keep it finite
      if (kind % 3 == 2) v = uint16_t((v & 0x83ff) | (rng.below(2) ? 0 : 0x0400));  // tiny / zero
    }
    if (kind % 5 == 0) h[size_t(rng.below(d))] = bf16 ? 0x7f7f : 0x7bff;  // max finite
    if (kind % 5 == 1) h[size_t(rng.below(d))] = bf16 ? 0xff7f : 0xfbff;
  }
  if (kind % 11 == 3) h[size_t(rng.below(d))] = uint16_t(inf | (rng.below(2) ? 0x8000 : 0));
  if (kind % 11 == 7) h[size_t(rng.below(d))] = uint16_t(inf | 1 | (rng.below(2) ? 0x8000 : 0));
  return h;
}

// The fused 16-bit kernels must equal "convert, then the f32 kernel" (and "f32 kernel, then
// convert") of the scalar reference, bit for bit, for F16 and BF16.
TEST_F(Kernels, FusedHalfKernelsMatchConvertThenQuantize) {
  test::Rng rng(11);
  for (bool bf16 : {false, true}) {
    for (int d : {8, 16, 24, 64, 80, 96, 128, 256}) {
      for (int g : {2, 8, 16, 24, 32, 64, 80, 96, 128, 256}) {
        if (g > d || d % g) continue;
        for (int it = 0; it < 66; ++it) {
          const auto h = make_half_row(rng, d, it, bf16);
          std::vector<float> x(static_cast<size_t>(d)), centre(static_cast<size_t>(d));
          (bf16 ? ref.bf16_to_f32 : ref.f16_to_f32)(h.data(), d, x.data());
          for (float& c : centre) c = rng.normalish();
          const int ng = d / g;
          const std::string where = std::string(bf16 ? "bf16" : "f16") + " d=" + std::to_string(d) +
                                    " g=" + std::to_string(g) + " it=" + std::to_string(it);
          const RowKernels* ks[] = {&ref, simd};
          for (const RowKernels* k : ks) {
            std::vector<int8_t> qa(static_cast<size_t>(d)), qb(static_cast<size_t>(d));
            std::vector<uint16_t> sa(static_cast<size_t>(ng)), sb(static_cast<size_t>(ng));
            const bool ok8 = ref.q8(x.data(), d, g, qa.data(), sa.data());
            ASSERT_EQ(ok8, k->q8_h(h.data(), bf16, d, g, qb.data(), sb.data())) << k->name << " q8 " << where;
            if (ok8) {
              ASSERT_EQ(qa, qb) << k->name << " q8 " << where;
              ASSERT_EQ(sa, sb) << k->name << " q8 " << where;
            }
            std::vector<uint8_t> pa(static_cast<size_t>(d / 2)), pb(static_cast<size_t>(d / 2));
            std::vector<uint16_t> ma(static_cast<size_t>(2 * ng)), mb(static_cast<size_t>(2 * ng));
            const bool ok4 = ref.q4(x.data(), d, g, pa.data(), ma.data());
            ASSERT_EQ(ok4, k->q4_h(h.data(), bf16, d, g, pb.data(), mb.data())) << k->name << " q4 " << where;
            if (ok4) {
              ASSERT_EQ(pa, pb) << k->name << " q4 " << where;
              ASSERT_EQ(ma, mb) << k->name << " q4 " << where;
            }
            if (!ok8 || !ok4) continue;
            for (const float* c : {static_cast<const float*>(nullptr), static_cast<const float*>(centre.data())}) {
              std::vector<float> y(static_cast<size_t>(d));
              std::vector<uint16_t> ya(static_cast<size_t>(d)), yb(static_cast<size_t>(d));
              ref.dq8(qa.data(), d, g, sa.data(), c, y.data());
              (bf16 ? ref.f32_to_bf16 : ref.f32_to_f16)(y.data(), d, ya.data());
              k->dq8_h(qa.data(), d, g, sa.data(), c, bf16, yb.data());
              ASSERT_EQ(ya, yb) << k->name << " dq8 " << where;
              ref.dq4(pa.data(), d, g, ma.data(), c, y.data());
              (bf16 ? ref.f32_to_bf16 : ref.f32_to_f16)(y.data(), d, ya.data());
              k->dq4_h(pa.data(), d, g, ma.data(), c, bf16, yb.data());
              ASSERT_EQ(ya, yb) << k->name << " dq4 " << where;
            }
          }
        }
      }
    }
  }
}

// The multi-row forms equal the one-row forms row by row, for strided sources, runs whose group
// count is not a multiple of 8, and report the first row that is refused.
TEST_F(Kernels, RowRunsMatchOneRowAtATime) {
  test::Rng rng(5);
  for (bool bf16 : {false, true}) {
    for (int d : {8, 24, 80, 128, 256}) {
      for (int g : {8, 16, 32, 128}) {
        if (g > d || d % g) continue;
        for (int rows : {1, 2, 3, 7, 9, 33}) {
          const size_t stride = size_t(d) * 3;  // THD-like: other heads' rows in between
          std::vector<uint16_t> src(stride * size_t(rows));
          for (int r = 0; r < rows; ++r) {
            const auto h = make_half_row(rng, d, r, bf16);
            std::copy(h.begin(), h.end(), src.begin() + std::ptrdiff_t(size_t(r) * stride));
          }
          // Make some row unstorable at both tiers, in some of the runs.
          const int poison = rows > 2 && rng.below(2) ? int(rng.below(uint32_t(rows))) : -1;
          if (poison >= 0) src[size_t(poison) * stride + size_t(d) - 1] = bf16 ? 0x7f80 : 0x7c00;
          const int ng = d / g;
          const std::string where = std::string(bf16 ? "bf16" : "f16") + " d=" + std::to_string(d) +
                                    " g=" + std::to_string(g) + " rows=" + std::to_string(rows);
          std::vector<int8_t> qa(size_t(rows) * size_t(d)), qb(qa.size());
          std::vector<uint16_t> sa(size_t(rows) * size_t(ng)), sb(sa.size());
          std::vector<uint8_t> pa(size_t(rows) * size_t(d / 2)), pb(pa.size());
          std::vector<uint16_t> ma(size_t(rows) * size_t(2 * ng)), mb(ma.size());
          int bad8 = -1, bad4 = -1;
          for (int r = rows - 1; r >= 0; --r) {
            const uint16_t* x = src.data() + size_t(r) * stride;
            if (!ref.q8_h(x, bf16, d, g, qa.data() + size_t(r) * size_t(d), sa.data() + size_t(r) * size_t(ng))) bad8 = r;
            if (!ref.q4_h(x, bf16, d, g, pa.data() + size_t(r) * size_t(d / 2), ma.data() + size_t(r) * size_t(2 * ng))) bad4 = r;
          }
          if (poison >= 0) {  // rows 3, 7, ... may hold inf/NaN of their own
            EXPECT_TRUE(bad8 >= 0 && bad8 <= poison) << where;
          }
          for (const RowKernels* k : {&ref, simd}) {
            ASSERT_EQ(bad8, k->q8_h_rows(src.data(), stride, rows, bf16, d, g, qb.data(), sb.data())) << k->name << " q8 " << where;
            ASSERT_EQ(bad4, k->q4_h_rows(src.data(), stride, rows, bf16, d, g, pb.data(), mb.data())) << k->name << " q4 " << where;
            if (bad8 < 0) {
              ASSERT_EQ(qa, qb) << k->name << " q8 " << where;
              ASSERT_EQ(sa, sb) << k->name << " q8 " << where;
            }
            if (bad4 < 0) {
              ASSERT_EQ(pa, pb) << k->name << " q4 " << where;
              ASSERT_EQ(ma, mb) << k->name << " q4 " << where;
            }
          }
        }
      }
    }
  }
}

TEST_F(Kernels, NonFiniteGroupsAreRefusedByBoth) {
  for (float bad : {INFINITY, -INFINITY, NAN}) {
    std::vector<float> x(64, 1.0f);
    x[37] = bad;
    int8_t q[64];
    uint8_t p[32];
    uint16_t s[8];
    EXPECT_FALSE(ref.q8(x.data(), 64, 32, q, s));
    EXPECT_FALSE(simd->q8(x.data(), 64, 32, q, s));
    EXPECT_FALSE(ref.q4(x.data(), 64, 32, p, s));
    EXPECT_FALSE(simd->q4(x.data(), 64, 32, p, s));
  }
  std::vector<float> x(32, -1e6f);  // the INT4 minimum overflows FP16
  uint8_t p[16];
  uint16_t s[2];
  EXPECT_FALSE(ref.q4(x.data(), 32, 32, p, s));
  EXPECT_FALSE(simd->q4(x.data(), 32, 32, p, s));
}

TEST_F(Kernels, ConversionsMatchReference) {
  test::Rng rng(3);
  const int n = 4099;
  std::vector<float> f(static_cast<size_t>(n));
  for (float& v : f) {
    uint32_t u = uint32_t(rng.next());
    std::memcpy(&v, &u, 4);  // every bit pattern class: NaN, inf, subnormal...
  }
  f[0] = -0.0f;
  f[1] = 65520.0f;
  f[2] = 65519.99f;
  std::vector<uint16_t> a(static_cast<size_t>(n)), b(static_cast<size_t>(n));
  ref.f32_to_f16(f.data(), n, a.data());
  simd->f32_to_f16(f.data(), n, b.data());
  EXPECT_EQ(a, b);
  ref.f32_to_bf16(f.data(), n, a.data());
  simd->f32_to_bf16(f.data(), n, b.data());
  EXPECT_EQ(a, b);
  std::vector<uint16_t> h(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) h[size_t(i)] = uint16_t(i * 16 + (i >> 12));
  std::vector<float> fa(static_cast<size_t>(n)), fb(static_cast<size_t>(n));
  ref.f16_to_f32(h.data(), n, fa.data());
  simd->f16_to_f32(h.data(), n, fb.data());
  EXPECT_EQ(0, std::memcmp(fa.data(), fb.data(), fa.size() * 4));
  ref.bf16_to_f32(h.data(), n, fa.data());
  simd->bf16_to_f32(h.data(), n, fb.data());
  EXPECT_EQ(0, std::memcmp(fa.data(), fb.data(), fa.size() * 4));
}

TEST(QuantRef, SignedZeroMinimumGivesPositiveZeroParameters) {
  const float a[4] = {0.0f, -0.0f, -0.0f, 0.0f}, b[4] = {-0.0f, 0.0f, 0.0f, -0.0f};
  uint8_t p[2];
  uint16_t sa, ma, sb, mb;
  ASSERT_TRUE(quant::q4_ref(a, 4, p, &sa, &ma));
  ASSERT_TRUE(quant::q4_ref(b, 4, p, &sb, &mb));
  EXPECT_EQ(ma, 0u);
  EXPECT_EQ(mb, 0u);
  EXPECT_EQ(sa, 0u);
  EXPECT_EQ(sb, 0u);
}

TEST(QuantRef, HugeValuesSaturateInsteadOfOverflowing) {
  const float x[2] = {3e38f, -3e38f};
  int8_t q[2];
  uint16_t s;
  ASSERT_TRUE(quant::q8_ref(x, 2, q, &s));
  EXPECT_EQ(q[0], 127);
  EXPECT_EQ(q[1], -127);
}

}  // namespace
