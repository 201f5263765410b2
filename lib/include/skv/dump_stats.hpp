// The statistics `skv inspect DUMP` prints about a KV cache, as plain data (the CLI formats them).
// Computed one layer at a time in a single front-to-back pass over each K and V tensor, releasing
// the pages already read, so inspecting a dump far larger than RAM keeps RSS small.
#pragma once
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "skv/kvcache.hpp"

namespace skv {

// One channel (kv head, dim) and its mean over tokens.
struct ChannelMean {
  int head = 0, dim = 0;
  double mean = 0;
};

struct TensorStats {
  double absmax = 0;     // max |x| (NaN if any element is NaN, inf if any is infinite)
  double mean_abs = 0;   // mean |x| over all elements
  std::vector<ChannelMean> top_channels;  // largest |mean over tokens| first
};

struct LayerStats {
  int layer = 0;
  TensorStats k, v;
  // Sink tokens: key norm (over all heads and dims) above sink_factor x the median key norm.
  double median_key_norm = 0;
  int64_t sink_count = 0;
  double sink_fraction = 0;        // sink_count / tokens
  std::vector<int> sink_tokens;    // the first max_sink_tokens sink indices, ascending
};

struct DumpStatsOptions {
  int top_channels = 5;
  double sink_factor = 3.0;
  int max_sink_tokens = 8;
};

// Called with byte ranges of the dump that have been consumed (e.g. safetensors::Reader::release).
using ReleaseFn = std::function<void(std::span<const std::byte>)>;

// Statistics of one layer. `release`, if set, is called on each consumed chunk of K and V.
LayerStats layer_stats(const KvCache& cache, int layer, const DumpStatsOptions& opts = {},
                       const ReleaseFn& release = {});

// All layers, in order, one layer at a time.
std::vector<LayerStats> dump_stats(const KvCache& cache, const DumpStatsOptions& opts = {},
                                   const ReleaseFn& release = {});

}  // namespace skv
