// One (layer, kv head) of planning, in two passes over the head's rows, shared by scoring
// (score_tokens), error measurement (measure_distortion) and the fused plan pass
// (measure_distortion_fused), so all three compute the same numbers:
//   load():    rows to f32 (keys then into the key transform's space), finiteness, the sampled
//              window queries' logits, and the value mean / key centre sums;
//   attend():  each query's softmax and most attended tokens;
//   second():  each query's output o_r = p_r V and each token's raw quantization errors;
//   weights(): each token's attention share and second-moment weights.
// Not installed; not part of the public API.
#pragma once
#include <array>
#include <cstdint>
#include <optional>
#include <vector>

#include "rope.hpp"
#include "skv/allocate.hpp"
#include "skv/kvcache.hpp"
#include "skv/score.hpp"

namespace skv::detail {

inline constexpr int kTopK = 16;  // candidates kept per query: enough for any gap a quantizer can close

// Which of the G * W window queries of a kv head (g-major: query g * W + i is head g's window
// position i) take part, and the weight each stands for: all of them (weight 1), or an evenly
// spread sample of `count` standing for N / count each, so sums over queries stay unbiased.
struct QuerySample {
  std::vector<int> rows;
  float weight = 1;
};
QuerySample sample_queries(int group_heads, int window, int count);

// Quantizer geometry and key transform of an error measurement.
struct ErrorSetup {
  int L, H, T, D, g8, g4, g2;  // g2 = 0: no INT2 tier (QuantSettings::int2 off)
  KeyTransform tf;
  std::optional<RopeTables> rope;  // prerope_centre: per layer
};
// Throws invalid_argument naming cache.source for groups that do not fit head_dim, or
// prerope_centre without RoPE metadata.
ErrorSetup make_error_setup(const KvCache& c, const QuantSettings& q, KeyTransform tf);

// Squared errors of rows x - c at INT8 / INT4 with channel weights w (null: 1), any groups
// (analytic: step^2 / 12 per element; exact: the reference quantizers), and dev = |x - m|^2
// (c may be null: 0; m null: dev = 0). operator() returns false when x - c is not finite.
class RowErrorModel {
 public:
  // g2 = 0: no INT2 error (e2 = 0).
  RowErrorModel(int n, int g8, int g4, int g2, const float* w, bool exact = false);
  bool operator()(const float* x, const float* c, const float* m, double& e8, double& e4, double& e2, float& dev);

 private:
  int n_, g8_, g4_, g2_;
  const float* w_;
  std::vector<double> ws8_, ws4_;
  bool exact_;
  std::vector<float> y_;
};

// A token's raw errors: V at INT8 / INT4, |v - vbar|^2, the query-weighted key errors
// E[dlogit^2] at INT8 / INT4 (key minus centre, in the transform's space), and both at INT2
// (0 without the INT2 tier).
struct RawErrors {
  float v8 = 0, v4 = 0, vdev = 0, k8 = 0, k4 = 0, v2 = 0, k2 = 0;
};

class HeadPass {
 public:
  // Pass one. `queries` (may be null) selects the window queries whose logits are taken; `setup`
  // (may be null: keys stay as they are) gives the key transform; `pinned` ([tokens], may be
  // empty) keeps sinks out of the value mean and key centre.
  void load(const KvCache& c, int l, int h, const QuerySample* queries, const ErrorSetup* setup,
            const std::vector<uint8_t>& pinned);
  void attend();
  // Pass two: outputs (after attend()) and/or raw errors (with `setup`, query channel power C,
  // or C empty: isotropic with `logit_spread`; `exact`: the reference quantizers' errors).
  void second(bool outputs, const ErrorSetup* setup, const std::vector<float>& C, double logit_spread, bool exact);
  void weights();

  int tokens() const { return T_; }
  const std::vector<uint8_t>& absent() const { return absent_; }
  const std::vector<uint8_t>& bad() const { return bad_; }   // a non-finite K or V row
  const std::vector<RawErrors>& errors() const { return err_; }
  const std::vector<Scores::Top>& top() const { return top_; }  // [queries, kTopK]
  int queries() const { return R_; }
  float query_weight() const { return weight_; }
  // weights(): per token, times the sample weight (see Scores::quant_weight), and the drop
  // guard's mass (Scores::drop_mass; infinite for pinned or absent tokens).
  std::vector<float> share, quant, drop, drop_mass;
  double uniform = 0;

 private:
  const KvCache* c_ = nullptr;
  static constexpr int kRows = 64;       // rows per streamed block (two blocks fit L1 / L2)
  static constexpr int kSumRows = 512;   // rows per f32 partial sum (a multiple of kRows)
  // Rows t0.. of the block (at most kRows) into kb_ / vb_: keys in the transform's space, values
  // with non-finite entries zeroed (as load() left them). Returns how many.
  int rows(int t0, bool keys, bool values);
  void load_block(int t0, int n, bool values, float* out) const;  // rows t0..t0+n of K or V as f32

  int l_ = 0, h_ = 0, T_ = 0, D_ = 0, W_ = 0, R_ = 0;
  float weight_ = 1;
  const RopeTables* prerope_ = nullptr;
  std::vector<int> qrow_;            // window position of each sampled query
  std::vector<float> kb_, vb_;       // [kRows, D]: the block being read
  std::vector<uint8_t> absent_, bad_, pinned_;
  std::vector<double> ksum_, vsum_;  // over present, finite, unpinned rows
  double nsum_ = 0, v2_ = 0;
  std::vector<float> Q_, S_, O_;  // Q [R, D] scaled; S [R, T] logits then p; O [R, D]
  std::vector<uint8_t> live_;
  std::vector<RawErrors> err_;
  std::vector<Scores::Top> top_;
};

// 1-D max or average pooling of a row over `kernel` neighbours (SnapKV keeps a hit's neighbours).
void pool_row(std::vector<float>& x, Pool pool, int kernel);

}  // namespace skv::detail
