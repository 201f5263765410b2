// A realistic synthetic KV cache: what tests, `skv bench --synthetic` and the sample dumps use
// when no model is at hand. Keys have per-(layer, head) low-rank structure plus noise, per-channel
// offsets, attention sinks, RoPE applied for real; values are roughly Gaussian; observation
// queries attend to sinks, a sparse set of important tokens and an optional planted needle, so
// importance scoring has something to find. Deterministic for a seed and independent of threads.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "skv/kvcache.hpp"
#include "skv/tensor.hpp"

namespace skv {

// A named model shape: "llama2-7b", "llama3-8b", "mistral-7b", "qwen2.5-7b", "smollm2-135m", "tiny".
struct SyntheticShape {
  std::string model;
  int layers = 0, kv_heads = 0, head_dim = 0;
  int group = 1;          // query heads per kv head (GQA)
  double outliers = 0;    // default key-outlier bias norm, in typical key norms (qwen2.5-7b: 27)
};

// Parses "MODEL:TOKENS" (e.g. "llama3-8b:4096"), or "LxHxD:TOKENS" for any other shape
// (layers x kv heads x even head_dim, one query head per kv head unless options say otherwise);
// throws Errc::invalid_argument naming the spec.
SyntheticShape parse_synthetic_spec(std::string_view spec, int& tokens);
std::vector<std::string> synthetic_models();  // the known names, for help texts

struct SyntheticOptions {
  std::string spec = "tiny:64";  // MODEL:TOKENS
  DType dtype = DType::F16;      // F16, BF16 or F32
  Layout layout = Layout::HTD;
  uint64_t seed = 1;
  int window = 0;          // observation queries per query head (0 = none); clamped to tokens
  int group = 0;           // query heads per kv head; 0 = the model's own
  int sinks = 4;           // leading tokens with a large key norm that queries attend to
  double important = 0.02; // share of tokens the window queries attend to (besides sinks)
  bool needle = false;     // plant a span the window queries attend to strongly
  int64_t needle_start = -1, needle_len = 0;  // -1 / 0: chosen from the seed
  // Key-outlier bias (added before RoPE to a few low-frequency channels), as its norm over a
  // typical key's norm: <0 model default, 0 none, 27 = Qwen2.5-7B layer 0 (|b_k| 605 vs ~22).
  double outliers = -1;
  int64_t position_offset = 0;  // RoPE position of token 0
  double rope_theta = 10000;
  std::vector<double> rope_layer_theta;  // one per layer (overrides rope_theta); empty: none
  RopeScaling rope_scaling;              // written to the metadata as rope_scaling when set
  int threads = 0;         // 0 = all cores
};

// Owns the tensors; `cache` views them (so a SyntheticCache must not be copied, only moved).
struct SyntheticCache {
  std::vector<Tensor> tensors;
  std::vector<std::string> names;  // layers.{L}.k / .v / .q
  KvCache cache;
  std::vector<int> important;      // token indices the queries were built to attend to
  std::vector<NamedTensor> named() const;  // for writing a dump

  SyntheticCache() = default;
  SyntheticCache(SyntheticCache&&) = default;
  SyntheticCache& operator=(SyntheticCache&&) = default;
  SyntheticCache(const SyntheticCache&) = delete;
  SyntheticCache& operator=(const SyntheticCache&) = delete;
};

SyntheticCache make_synthetic(const SyntheticOptions& opts);

}  // namespace skv
