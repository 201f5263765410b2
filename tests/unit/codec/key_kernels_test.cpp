// The AVX2 key-transform kernels must match the scalar ones (the encoder's and reader's former
// per-row steps) bit for bit: every head_dim the format meets, both RoPE styles and none, all
// source dtypes, odd run lengths, position offsets, with and without a centre.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "../../../lib/src/key_rows.hpp"
#include "../../../lib/src/rope.hpp"
#include "codec_test_util.hpp"
#include "skv/half.hpp"

using namespace skv;
using skv::detail::KeyRowKernels;
using skv::detail::RowRope;
using skv::detail::RowType;

namespace {

class KeyKernels : public ::testing::Test {
 protected:
  void SetUp() override {
    simd = detail::key_row_kernels_avx2();
    if (!simd) GTEST_SKIP() << "CPU lacks AVX2/F16C/FMA";
  }
  const KeyRowKernels& ref = detail::key_row_kernels_ref();
  const KeyRowKernels* simd = nullptr;
};

size_t type_size(RowType t) { return t == RowType::f32 ? 4 : 2; }
const char* type_name(RowType t) { return t == RowType::f16 ? "f16" : t == RowType::bf16 ? "bf16" : "f32"; }

// `rows` source rows of type t, `stride` elements apart, values of varied magnitude per row.
std::vector<std::byte> make_rows(test::Rng& rng, RowType t, int d, int rows, size_t stride) {
  std::vector<std::byte> b(stride * size_t(rows) * type_size(t));
  for (int r = 0; r < rows; ++r) {
    const float mag = std::ldexp(1.0f, rng.below(16) - 8);
    for (int i = 0; i < d; ++i) {
      float v = rng.normalish() * mag;
      if (rng.below(64) == 0) v = rng.below(2) ? 0.0f : -0.0f;
      const size_t at = size_t(r) * stride + size_t(i);
      if (t == RowType::f32) std::memcpy(b.data() + at * 4, &v, 4);
      else {
        const uint16_t h = t == RowType::f16 ? f32_to_f16(v) : f32_to_bf16(v);
        std::memcpy(b.data() + at * 2, &h, 2);
      }
    }
  }
  return b;
}

struct Case {
  int d;
  RopeStyle style;  // unknown: no RoPE
  RowType type;
  int rows;
  int64_t offset;
  bool centred;
  std::string name() const {
    return "d=" + std::to_string(d) + " style=" + std::to_string(int(style)) + " " + type_name(type) +
           " rows=" + std::to_string(rows) + " offset=" + std::to_string(offset) + (centred ? " centred" : "");
  }
};

std::vector<Case> cases() {
  std::vector<Case> out;
  const int64_t offsets[] = {0, 5, 1000};
  int k = 0;
  for (int d : {64, 80, 96, 128, 256, 20})  // 20: tails in both rotations and the conversions
    for (RopeStyle s : {RopeStyle::unknown, RopeStyle::neox, RopeStyle::gptj})
      for (RowType t : {RowType::f16, RowType::bf16, RowType::f32})
        for (int rows : {1, 3, 7, 33}) {
          out.push_back({d, s, t, rows, offsets[k % 3], k % 4 != 3});
          ++k;
        }
  return out;
}

struct RopeSetup {
  std::unique_ptr<detail::RopeTable> table;
  RowRope rope;
};
RopeSetup rope_for(const Case& c) {
  RopeSetup s;
  if (c.style == RopeStyle::unknown) return s;
  s.table = std::make_unique<detail::RopeTable>(RopeParams{10000.0, {}}, c.style, c.d);
  s.table->cache_positions(c.offset, c.rows);
  s.rope = {s.table->cached_cos(c.offset), s.table->cached_sin(c.offset), size_t(c.d / 2),
            c.style == RopeStyle::gptj};
  return s;
}

TEST_F(KeyKernels, EncodeAndDecodeMatchReferenceBitForBit) {
  test::Rng rng(11);
  for (const Case& c : cases()) {
    const RopeSetup su = rope_for(c);
    const size_t stride = size_t(c.d) * 3;  // THD-like: other heads' rows in between
    const auto src = make_rows(rng, c.type, c.d, c.rows, stride);
    std::vector<float> centre(size_t(c.d));
    for (float& v : centre) v = rng.normalish() * 0.5f;
    const float* cp = c.centred ? centre.data() : nullptr;
    const std::string where = c.name();

    // Centre pass, with an integer count (the division-free form) and a fractional one.
    for (double count : {double(c.rows), 4097.0, 2147483647.0, 2.5}) {
      std::vector<double> aa(size_t(c.d), 0.0), ab(size_t(c.d), 0.0);
      ref.accumulate(src.data(), c.type, stride, c.rows, c.d, su.rope, count, aa.data());
      simd->accumulate(src.data(), c.type, stride, c.rows, c.d, su.rope, count, ab.data());
      ASSERT_EQ(0, std::memcmp(aa.data(), ab.data(), aa.size() * 8)) << where << " count=" << count;
    }

    for (int g : {c.d, 16, 32}) {
      if (c.d % g) continue;
      const int ng = c.d / g;
      const std::string wg = where + " g=" + std::to_string(g);
      std::vector<int8_t> qa(size_t(c.rows) * size_t(c.d)), qb(qa.size());
      std::vector<uint16_t> sa(size_t(c.rows) * size_t(ng)), sb(sa.size());
      ASSERT_EQ(-1, ref.q8(src.data(), c.type, stride, c.rows, c.d, su.rope, cp, g, qa.data(), sa.data())) << wg;
      ASSERT_EQ(-1, simd->q8(src.data(), c.type, stride, c.rows, c.d, su.rope, cp, g, qb.data(), sb.data())) << wg;
      ASSERT_EQ(qa, qb) << "q8 " << wg;
      ASSERT_EQ(sa, sb) << "q8 " << wg;
      std::vector<uint8_t> pa(size_t(c.rows) * size_t(c.d / 2)), pb(pa.size());
      std::vector<uint16_t> ma(size_t(c.rows) * size_t(2 * ng)), mb(ma.size());
      ASSERT_EQ(-1, ref.q4(src.data(), c.type, stride, c.rows, c.d, su.rope, cp, g, pa.data(), ma.data())) << wg;
      ASSERT_EQ(-1, simd->q4(src.data(), c.type, stride, c.rows, c.d, su.rope, cp, g, pb.data(), mb.data())) << wg;
      ASSERT_EQ(pa, pb) << "q4 " << wg;
      ASSERT_EQ(ma, mb) << "q4 " << wg;

      // Decode each row, into every output type.
      for (RowType out : {RowType::f16, RowType::bf16, RowType::f32}) {
        const size_t rb = size_t(c.d) * type_size(out);
        std::vector<std::byte> ya(rb), yb(rb);
        for (int r = 0; r < c.rows; ++r) {
          RowRope rr = su.rope;
          if (rr.cs) rr.cs += size_t(r) * rr.step, rr.sn += size_t(r) * rr.step;
          ref.dq8(qa.data() + size_t(r) * size_t(c.d), c.d, g, sa.data() + size_t(r) * size_t(ng), cp, rr, out, ya.data());
          simd->dq8(qa.data() + size_t(r) * size_t(c.d), c.d, g, sa.data() + size_t(r) * size_t(ng), cp, rr, out, yb.data());
          ASSERT_EQ(ya, yb) << "dq8 " << wg << " row " << r << " out " << type_name(out);
          ref.dq4(pa.data() + size_t(r) * size_t(c.d / 2), c.d, g, ma.data() + size_t(r) * size_t(2 * ng), cp, rr, out, ya.data());
          simd->dq4(pa.data() + size_t(r) * size_t(c.d / 2), c.d, g, ma.data() + size_t(r) * size_t(2 * ng), cp, rr, out, yb.data());
          ASSERT_EQ(ya, yb) << "dq4 " << wg << " row " << r << " out " << type_name(out);
        }
      }
    }

    // INT2 (format 1.1): groups of whole rows, 32, 16, 8 and 4 (4 takes the scalar fallback).
    for (int g : {c.d, 32, 16, 8, 4}) {
      if (c.d % g || g % 4) continue;
      const int ng = c.d / g;
      const std::string wg = where + " int2 g=" + std::to_string(g);
      std::vector<uint8_t> pa(size_t(c.rows) * size_t(c.d / 4)), pb(pa.size());
      std::vector<uint16_t> ma(size_t(c.rows) * size_t(2 * ng)), mb(ma.size());
      ASSERT_EQ(-1, ref.q2(src.data(), c.type, stride, c.rows, c.d, su.rope, cp, g, pa.data(), ma.data())) << wg;
      ASSERT_EQ(-1, simd->q2(src.data(), c.type, stride, c.rows, c.d, su.rope, cp, g, pb.data(), mb.data())) << wg;
      ASSERT_EQ(pa, pb) << "q2 " << wg;
      ASSERT_EQ(ma, mb) << "q2 " << wg;
      for (RowType out : {RowType::f16, RowType::bf16, RowType::f32}) {
        const size_t rb = size_t(c.d) * type_size(out);
        std::vector<std::byte> ya(rb), yb(rb);
        for (int r = 0; r < c.rows; ++r) {
          RowRope rr = su.rope;
          if (rr.cs) rr.cs += size_t(r) * rr.step, rr.sn += size_t(r) * rr.step;
          ref.dq2(pa.data() + size_t(r) * size_t(c.d / 4), c.d, g, ma.data() + size_t(r) * size_t(2 * ng), cp, rr, out, ya.data());
          simd->dq2(pa.data() + size_t(r) * size_t(c.d / 4), c.d, g, ma.data() + size_t(r) * size_t(2 * ng), cp, rr, out, yb.data());
          ASSERT_EQ(ya, yb) << "dq2 " << wg << " row " << r << " out " << type_name(out);
        }
      }
    }
  }
}

// The scalar kernels are the former steps: RopeTable::undo / apply on the converted row.
TEST_F(KeyKernels, ReferenceIsTheRopeTableRotation) {
  test::Rng rng(3);
  for (RopeStyle s : {RopeStyle::neox, RopeStyle::gptj}) {
    const int d = 96;
    detail::RopeTable table(RopeParams{500000.0, {}}, s, d);
    table.cache_positions(7, 4);
    std::vector<float> x(static_cast<size_t>(d)), cs(static_cast<size_t>(d / 2)), sn(static_cast<size_t>(d / 2));
    for (float& v : x) v = rng.normalish();
    table.angles(9, cs.data(), sn.data());
    std::vector<float> expect = x;
    table.undo(expect.data(), cs.data(), sn.data());
    const RowRope rr{table.cached_cos(9), table.cached_sin(9), size_t(d / 2), s == RopeStyle::gptj};
    std::vector<double> acc(static_cast<size_t>(d), 0.0);
    ref.accumulate(x.data(), RowType::f32, size_t(d), 1, d, rr, 1.0, acc.data());
    for (int i = 0; i < d; ++i) ASSERT_EQ(acc[size_t(i)], double(expect[size_t(i)])) << i;
  }
}

// The division-free centre sum: one row with count c gives exactly double(x) / c, for floats
// of every magnitude (subnormals included) and counts up to 2^31 - 1.
TEST_F(KeyKernels, CentreSumRoundsAsTheDivision) {
  test::Rng rng(17);
  const int d = 8;
  std::vector<float> x(static_cast<size_t>(d));
  std::vector<double> acc(static_cast<size_t>(d));
  for (int it = 0; it < 200000; ++it) {
    double count;
    switch (it % 4) {
      case 0: count = double(1 + rng.below(5000)); break;
      case 1: count = double(1 + (rng.next() % 2147483647u)); break;
      case 2: count = std::ldexp(1.0, rng.below(31)) + double(rng.below(3)) - 1.0; break;
      default: count = double(3 * (1 + rng.below(100000))); break;
    }
    if (count < 1) count = 1;
    for (float& v : x) {
      uint32_t bits = uint32_t(rng.next());
      if ((bits & 0x7f800000u) == 0x7f800000u) bits &= 0xbfffffffu;  // finite only
      std::memcpy(&v, &bits, 4);
    }
    std::fill(acc.begin(), acc.end(), 0.0);
    simd->accumulate(x.data(), RowType::f32, size_t(d), 1, d, RowRope{}, count, acc.data());
    for (int i = 0; i < d; ++i) {
      const double want = 0.0 + double(x[size_t(i)]) / count;
      ASSERT_EQ(0, std::memcmp(&want, &acc[size_t(i)], 8)) << "x=" << x[size_t(i)] << " count=" << count;
    }
  }
}

// A row holding inf / NaN (or one that overflows once rotated) is refused at the same row.
TEST_F(KeyKernels, UnstorableRowsAreRefusedAtTheSameRow) {
  test::Rng rng(23);
  for (RowType t : {RowType::f16, RowType::bf16, RowType::f32})
    for (RopeStyle s : {RopeStyle::unknown, RopeStyle::neox, RopeStyle::gptj}) {
      const Case c{128, s, t, 9, 2, true};
      const RopeSetup su = rope_for(c);
      const size_t stride = 128;
      auto src = make_rows(rng, t, c.d, c.rows, stride);
      const size_t at = 4 * stride + 77;  // row 4
      if (t == RowType::f32) {
        const float inf = std::numeric_limits<float>::infinity();
        std::memcpy(src.data() + at * 4, &inf, 4);
      } else {
        const uint16_t h = t == RowType::f16 ? 0x7c00 : 0x7f80;
        std::memcpy(src.data() + at * 2, &h, 2);
      }
      std::vector<float> centre(128, 0.25f);
      std::vector<int8_t> q(size_t(c.rows) * 128);
      std::vector<uint16_t> sc(size_t(c.rows) * 8);
      std::vector<uint8_t> p(size_t(c.rows) * 64);
      for (const KeyRowKernels* k : {&ref, simd}) {
        EXPECT_EQ(4, k->q8(src.data(), t, stride, c.rows, c.d, su.rope, centre.data(), 128, q.data(), sc.data()))
            << k->name << " " << c.name();
        EXPECT_EQ(4, k->q4(src.data(), t, stride, c.rows, c.d, su.rope, centre.data(), 32, p.data(), sc.data()))
            << k->name << " " << c.name();
        EXPECT_EQ(4, k->q2(src.data(), t, stride, c.rows, c.d, su.rope, centre.data(), 32, p.data(), sc.data()))
            << k->name << " " << c.name();
      }
    }
}

}  // namespace
