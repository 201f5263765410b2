// RoPE as the container defines it (formats/skv.md, "Key transforms"): f32 cos/sin tables computed
// in f64, rotations spelled out with explicit fmaf so a GPU reproduces them bit for bit.
#pragma once
#include <cstdint>
#include <vector>

#include "skv/kvcache.hpp"

namespace skv::detail {

// The one RoPE table type of the CPU code (codec, error tables, synthetic caches): inv_freq per
// pair from skv::rope_inv_freq (f64), cos / sin rounded to f32, rotations with explicit fmaf.
class RopeTable {
 public:
  RopeTable(const RopeParams& params, RopeStyle style, int head_dim);
  // With positions [first, first + count) cached (see cache_positions).
  RopeTable(const RopeParams& params, RopeStyle style, int head_dim, int64_t first, int count)
      : RopeTable(params, style, head_dim) {
    cache_positions(first, count);
  }
  // Precomputes the tables of positions [first, first + count): the angles depend on the position
  // only, so one table serves every layer and head (computing cos/sin in f64 per row was the
  // whole cost of the transform). Call before sharing the table between threads.
  void cache_positions(int64_t first, int count);
  // Fills cos/sin for position p (head_dim / 2 entries each); from the cache when p is in it.
  void angles(int64_t p, float* cs, float* sn) const;
  void apply(float* x, const float* cs, const float* sn) const;  // rotate by +angle
  void undo(float* x, const float* cs, const float* sn) const;   // rotate by -angle
  // The cached cos / sin of position p in place (null when p is not cached): no copy per row.
  const float* cached_cos(int64_t p) const {
    return p >= cached_first_ && p - cached_first_ < cached_count_
               ? cached_cs_.data() + size_t(p - cached_first_) * size_t(half_)
               : nullptr;
  }
  const float* cached_sin(int64_t p) const {
    return p >= cached_first_ && p - cached_first_ < cached_count_
               ? cached_sn_.data() + size_t(p - cached_first_) * size_t(half_)
               : nullptr;
  }
  // Rotates x (head_dim values) by the angles of cached position first + i: to that position,
  // or back to position 0 when inverse. i must be in the cached range.
  void rotate(float* x, int i, bool inverse) const {
    const size_t at = size_t(i) * size_t(half_);
    if (inverse) undo(x, cached_cs_.data() + at, cached_sn_.data() + at);
    else apply(x, cached_cs_.data() + at, cached_sn_.data() + at);
  }
  RopeStyle style() const { return style_; }
  const RopeParams& params() const { return params_; }

 private:
  RopeParams params_;
  std::vector<double> inv_freq_;
  std::vector<float> cached_cs_, cached_sn_;  // [count][head_dim / 2]
  int64_t cached_first_ = 0, cached_count_ = 0;
  RopeStyle style_;
  int half_;
};

// The RoPE tables of a cache's layers (KvMeta::rope_for_layer): one RopeTable per distinct
// parameter set, not per layer (local/global models have two), each caching positions
// [position_offset, position_offset + tokens). Needs meta.rope_theta non-empty.
class RopeTables {
 public:
  RopeTables(const KvMeta& meta, int layers, int head_dim, int tokens);
  const RopeTable& layer(int l) const { return tables_[size_t(index_[size_t(l)])]; }
  size_t distinct() const { return tables_.size(); }

 private:
  std::vector<RopeTable> tables_;
  std::vector<int> index_;  // per layer, into tables_
};

// The rotation itself, the scalar ground truth (formats/skv.md): pairs (j, j + half) for NeoX,
// (2j, 2j + 1) for GPT-J, each a*c -/+ b*s with one fmaf. undo rotates by -angle.
void rope_rotate(float* x, const float* cs, const float* sn, int half, bool gptj, bool undo);

}  // namespace skv::detail
