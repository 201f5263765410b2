#include "skv/model/kv_cache.hpp"

#include <algorithm>
#include <cstring>
#include <string>

#include "skv/error.hpp"

namespace skv::model {

KvCacheObject::KvCacheObject(int layers, int kv_heads, int head_dim)
    : layers_(layers), kv_heads_(kv_heads), head_dim_(head_dim) {
  if (layers <= 0 || kv_heads <= 0 || head_dim <= 0)
    fail(Errc::invalid_argument, "kv cache", "layers, kv_heads and head_dim must be positive");
  k_.resize(size_t(layers));
  v_.resize(size_t(layers));
  masks_.resize(size_t(layers));
}

void KvCacheObject::check_layer(int layer) const {
  if (layer < 0 || layer >= layers_)
    fail(Errc::invalid_argument, "kv cache", "layer " + std::to_string(layer) + " out of range");
}

void KvCacheObject::reserve(int tokens) {
  if (tokens <= capacity_) return;
  const int cap = std::max(tokens, capacity_ + capacity_ / 2);
  const size_t hd = size_t(head_dim_), old_stride = head_stride(), new_stride = size_t(cap) * hd;
  for (int l = 0; l < layers_; ++l) {
    for (auto* store : {&k_[size_t(l)], &v_[size_t(l)]}) {
      std::vector<float> grown(size_t(kv_heads_) * new_stride, 0.0f);
      for (int h = 0; h < kv_heads_; ++h)
        std::memcpy(grown.data() + size_t(h) * new_stride, store->data() + size_t(h) * old_stride,
                    size_t(tokens_) * hd * sizeof(float));
      *store = std::move(grown);
    }
    masks_[size_t(l)].resize(size_t(cap), 1);
  }
  capacity_ = cap;
}

void KvCacheObject::set_tokens(int tokens) {
  if (tokens < 0 || tokens > capacity_) fail(Errc::invalid_argument, "kv cache", "token count beyond capacity");
  for (auto& m : masks_)
    std::fill(m.begin() + tokens_, m.begin() + std::max(tokens_, tokens), uint8_t(1));
  tokens_ = tokens;
}

void KvCacheObject::truncate(int tokens) {
  if (tokens < 0 || tokens > tokens_) fail(Errc::invalid_argument, "kv cache", "truncate beyond the cached tokens");
  tokens_ = tokens;
}

std::vector<float> KvCacheObject::layer_k(int layer) const {
  check_layer(layer);
  std::vector<float> out(size_t(kv_heads_) * size_t(tokens_) * size_t(head_dim_));
  for (int h = 0; h < kv_heads_; ++h)
    std::memcpy(out.data() + size_t(h) * size_t(tokens_) * size_t(head_dim_),
                k_[size_t(layer)].data() + size_t(h) * head_stride(),
                size_t(tokens_) * size_t(head_dim_) * sizeof(float));
  return out;
}

std::vector<float> KvCacheObject::layer_v(int layer) const {
  check_layer(layer);
  std::vector<float> out(size_t(kv_heads_) * size_t(tokens_) * size_t(head_dim_));
  for (int h = 0; h < kv_heads_; ++h)
    std::memcpy(out.data() + size_t(h) * size_t(tokens_) * size_t(head_dim_),
                v_[size_t(layer)].data() + size_t(h) * head_stride(),
                size_t(tokens_) * size_t(head_dim_) * sizeof(float));
  return out;
}

void KvCacheObject::set_layer(int layer, std::span<const float> k, std::span<const float> v) {
  check_layer(layer);
  const size_t n = size_t(kv_heads_) * size_t(tokens_) * size_t(head_dim_);
  if (k.size() != n || v.size() != n)
    fail(Errc::invalid_argument, "kv cache", "layer " + std::to_string(layer) + " replacement has " +
                                                 std::to_string(k.size()) + "/" + std::to_string(v.size()) +
                                                 " elements, expected " + std::to_string(n));
  const size_t row = size_t(tokens_) * size_t(head_dim_);
  for (int h = 0; h < kv_heads_; ++h) {
    std::memcpy(k_[size_t(layer)].data() + size_t(h) * head_stride(), k.data() + size_t(h) * row, row * sizeof(float));
    std::memcpy(v_[size_t(layer)].data() + size_t(h) * head_stride(), v.data() + size_t(h) * row, row * sizeof(float));
  }
}

void KvCacheObject::mask_token(int token) {
  if (token < 0 || token >= tokens_) fail(Errc::invalid_argument, "kv cache", "mask of token " + std::to_string(token) + " out of range");
  for (auto& m : masks_) m[size_t(token)] = 0;
}

}  // namespace skv::model
