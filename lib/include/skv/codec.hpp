// The CPU codec: KvCache + Plan -> .skv container (formats/skv.md) and back. This is the ground
// truth the CUDA path must reproduce byte for byte.
#pragma once
#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "skv/io.hpp"
#include "skv/kvcache.hpp"
#include "skv/plan.hpp"
#include "skv/tensor.hpp"

namespace skv {

// A LAYR section holds 13 streams (formats/skv.md "Streams"): tier maps, K centres, then five
// tier streams for K and five for V; a file that declares INT2 (format 1.1) has 17: streams
// 13..16 are the K INT2 values and parameters, then V's. Views hold the most a layer can have;
// streams past the file's count are empty.
inline constexpr int kStreamsPerLayer = 17;
using LayerStreamViews = std::array<std::span<const uint8_t>, kStreamsPerLayer>;

struct EncodeOptions {
  int threads = 0;  // 0 = all cores; output bytes never depend on it
  std::string producer;  // defaults to "skv <version>"
  // Called after layer L has been written: the caller may release that layer's source pages
  // (a mapped dump then costs about two layers of RSS, not the whole file: without zstd or
  // layer_streams, layer L is hashed and written while layer L + 1 is being quantized).
  std::function<void(int layer)> layer_done;
  // When set, the writer takes layer L's 13 (17 with INT2) raw streams from here (e.g. the GPU encoder's output)
  // instead of quantizing itself; it checks the tier maps against the plan and every size
  // against what the maps imply, then compresses, hashes and writes as usual. The views must
  // stay valid until the next call (or until encode() returns). Called for L = 0, 1, ... in order.
  std::function<void(int layer, LayerStreamViews& streams)> layer_streams;
};

// Exact byte accounting without encoding, so allocators can honour a budget: for any plan over
// this cache and these settings, the raw (zstd off) container size is exactly
// fixed_bytes + sum over (layer, K/V, token) of token_bytes[tier]  -  (alignment padding slack),
// and never more than bound(plan). The slack is in [0, max_padding_slack].
struct SizeModel {
  uint64_t fixed_bytes = 0;  // headers, manifest, tier maps, centres, index, worst-case padding
  std::array<uint64_t, kNumTiers> token_bytes{};  // one (layer, K or V, token), all heads
  uint64_t max_padding_slack = 0;  // 63 bytes per tier stream (10 per layer, 14 with INT2)
  uint64_t bound(const Plan& plan) const;
};
// `producer` as in EncodeOptions (it is part of the manifest, so of the size).
SizeModel size_model(const KvCache& cache, const QuantSettings& quant, const std::string& policy,
                     double requested_budget, const std::string& producer = {});

// Where the bytes of a container went (inspect's byte breakdown).
struct ByteBreakdown {
  uint64_t total = 0, header = 0, manifest = 0, tier_maps = 0, payload = 0, scales = 0,
           centres = 0, index = 0, padding = 0;
};

struct TierCounts {
  std::array<uint64_t, kNumTiers> k{}, v{};  // (layer, token) entries per tier
};

// Everything a reader knows from the header and manifest, before any layer is decoded.
struct ContainerInfo {
  uint32_t format_version = 0;  // the major version
  uint32_t format_minor = 0;    // 0, or 1 when the file declares INT2
  KvShape shape;
  Layout layout = Layout::HTD;
  std::map<std::string, std::string> metadata;  // the source dump's __metadata__
  std::vector<std::string> k_names, v_names, q_names, mask_names;  // per layer ("" = none)
  QuantSettings quant;  // groups resolved (never 0; int2_group only when quant.int2)
  KvMeta rope;          // rope_theta, rope_style, position_offset when the manifest has them
  std::string policy, producer;
  double requested_budget = 0, achieved_budget = 0, nominal_budget = 0;
  // Some token of some layer is dropped: every decoded layer then carries a mask.
  bool has_drops = false;
  // From the trailer: complete once next_layer() has returned false.
  TierCounts tiers;
  uint64_t total_bytes = 0;  // known when the writer recorded it, else 0
  uint64_t raw_bytes = 0;    // the size with every stream stored raw (no zstd)
};

struct EncodeResult {
  ContainerInfo info;
  ByteBreakdown bytes;
};

// Streams the container front to back (no seeking, so "-o -" works through a pipe).
// Throws Errc::invalid_argument for a plan that does not fit the cache, Errc::format for
// non-finite values in tokens of a quantized tier.
EncodeResult encode(const KvCache& cache, const Plan& plan, ByteSink& out,
                    const EncodeOptions& opts = {});

// One decoded layer, in the source's names, layout and dtype (or the dtype asked for).
// next_layer() reuses k/v buffers already of the right dtype and shape (pass the same object).
struct DecodedLayer {
  int index = 0;
  Tensor k, v;                // dropped tokens are zero
  std::optional<Tensor> q;    // when the container carries queries
  // U8 [tokens], 1 = present; on every layer when the container has any dropped token (so a
  // streaming writer knows the output's tensors before the first layer arrives).
  std::optional<Tensor> mask;
  TierCounts tiers;           // this layer's tokens per tier, K and V
};

// One layer's raw streams (13, or 17 with INT2) after checksum checks and any zstd stage were undone (the input a
// GPU decoder uploads), with what it needs to shape its output. Views stay valid until the
// reader's next call.
struct LayerStreams {
  int index = 0;
  LayerStreamViews streams;
  Shape k_shape, v_shape;  // the decoded tensors' shapes, as next_layer() would give them
  TierCounts tiers;
};

// True when `head` starts with the .skv magic (used to tell containers from dumps).
bool is_container(std::span<const std::byte> head) noexcept;

// Front-to-back streaming reader; memory bounded by about one layer. Verifies every checksum
// before using a section; any mismatch or malformation throws naming `name`.
class ContainerReader {
 public:
  ContainerReader(ByteSource& in, std::string name);
  ~ContainerReader();
  ContainerReader(const ContainerReader&) = delete;
  ContainerReader& operator=(const ContainerReader&) = delete;

  const ContainerInfo& info() const noexcept;
  // Threads used to decode one layer (0 = all cores, the default); output never depends on it.
  void set_threads(int threads) noexcept;
  // Decodes the next layer into `out` (or only verifies and skips it when `skip`); returns false
  // after the last layer, once the trailer has been verified.
  bool next_layer(DecodedLayer& out, std::optional<DType> out_dtype = std::nullopt,
                  bool skip = false);
  // Like next_layer(), but stops before dequantizing: fills `out` with the layer's raw streams
  // (verified, sizes checked against its tier maps). Calls to both may be interleaved.
  bool next_layer_streams(LayerStreams& out);
  ByteBreakdown breakdown() const;  // complete after the last layer

 private:
  struct Impl;
  Impl* impl_;
};

}  // namespace skv
