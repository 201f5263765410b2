// The runner's KV cache: per layer K and V as float [kv_heads, tokens, head_dim], post-RoPE,
// plus a per-layer, per-token presence mask. Masked tokens are excluded from attention (their
// scores never enter the softmax); their K/V values are never read. Layers can be replaced by
// decoded ones (e.g. an skv round trip) between prefill and scoring.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

namespace skv::model {

class KvCacheObject {
 public:
  KvCacheObject(int layers, int kv_heads, int head_dim);

  int layers() const noexcept { return layers_; }
  int kv_heads() const noexcept { return kv_heads_; }
  int head_dim() const noexcept { return head_dim_; }
  int tokens() const noexcept { return tokens_; }
  int capacity() const noexcept { return capacity_; }

  // Raw storage: [kv_heads, capacity, head_dim]; head h starts at h * head_stride().
  size_t head_stride() const noexcept { return size_t(capacity_) * size_t(head_dim_); }
  float* k_data(int layer) { return k_[size_t(layer)].data(); }
  float* v_data(int layer) { return v_[size_t(layer)].data(); }
  const float* k_data(int layer) const { return k_[size_t(layer)].data(); }
  const float* v_data(int layer) const { return v_[size_t(layer)].data(); }

  // Contiguous copies [kv_heads, tokens, head_dim].
  std::vector<float> layer_k(int layer) const;
  std::vector<float> layer_v(int layer) const;
  // Replaces one layer's K and V ([kv_heads, tokens, head_dim], tokens() tokens each).
  void set_layer(int layer, std::span<const float> k, std::span<const float> v);

  // 1 = attend, 0 = masked out. Tokens appended later start present.
  std::span<uint8_t> mask(int layer) { return {masks_[size_t(layer)].data(), size_t(tokens_)}; }
  std::span<const uint8_t> mask(int layer) const { return {masks_[size_t(layer)].data(), size_t(tokens_)}; }
  void mask_token(int token);  // every layer

  // Grows storage (keeping contents) so that `tokens` fit; used by the forward pass.
  void reserve(int tokens);
  void set_tokens(int tokens);  // after the forward pass wrote rows [old, tokens)
  void truncate(int tokens);    // forget tokens at and after `tokens`

 private:
  void check_layer(int layer) const;
  int layers_, kv_heads_, head_dim_;
  int tokens_ = 0, capacity_ = 0;
  std::vector<std::vector<float>> k_, v_;
  std::vector<std::vector<uint8_t>> masks_;
};

}  // namespace skv::model
