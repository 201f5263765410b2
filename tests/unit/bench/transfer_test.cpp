#include <gtest/gtest.h>

#include "skv/transfer.hpp"

namespace {

TEST(Transfer, RawTimeIsBytesOverLink) {
  const skv::TransferInput in{.raw_bytes = 1'250'000'000, .encoded_bytes = 625'000'000,
                              .encode_s = 0, .decode_s = 0, .layers = 1};
  const auto r = skv::transfer_time(in, 10);  // 10 Gbit/s = 1.25 GB/s
  EXPECT_NEAR(r.raw_ms, 1000, 1e-6);
  EXPECT_NEAR(r.seq_ms, 500, 1e-6);
  EXPECT_NEAR(r.saving_pct, 50, 1e-9);
}

TEST(Transfer, PipeliningHidesTheFasterStages) {
  // Encode 0.1 s, wire 0.5 s, decode 0.1 s over 10 layers: 0.07 + 9 * 0.05 = 0.52 s.
  const skv::TransferInput in{.raw_bytes = 1'250'000'000, .encoded_bytes = 625'000'000,
                              .encode_s = 0.1, .decode_s = 0.1, .layers = 10};
  const auto r = skv::transfer_time(in, 10);
  EXPECT_NEAR(r.seq_ms, 700, 1e-6);
  EXPECT_NEAR(r.pipelined_ms, 520, 1e-6);
  EXPECT_NEAR(r.saving_pct, 48, 1e-9);
  EXPECT_NEAR(r.seq_saving_pct, 30, 1e-9);
  EXPECT_LE(r.pipelined_ms, r.seq_ms);
}

TEST(Transfer, BreakEvenFollowsKvServe) {
  // Ratio 2, encode = decode = 2 GB/s -> S = 1 GB/s -> B* = 0.5 GB/s = 4 Gbit/s.
  EXPECT_NEAR(skv::break_even_gbps(2.0, 2e9, 2e9), 4.0, 1e-12);
  EXPECT_EQ(skv::break_even_gbps(1.0, 2e9, 2e9), 0.0);
  // At exactly B*, compressed and raw take equal time (sequential model, no pipelining).
  const double b = skv::break_even_gbps(2.0, 2e9, 2e9);
  const skv::TransferInput in{.raw_bytes = 1'000'000'000, .encoded_bytes = 500'000'000,
                              .encode_s = 0.5, .decode_s = 0.5, .layers = 1};
  const auto r = skv::transfer_time(in, b);
  EXPECT_NEAR(r.seq_ms, r.raw_ms, 1e-6);
}

}  // namespace
