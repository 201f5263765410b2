// Host-side description of one LAYR section (formats/skv.md): the layer's geometry, its tier
// counts and where each of the 13 raw streams (17 when the file declares INT2) sits in the payload. Computed on the host from the
// (tiny) tier maps once per layer; the kernels take it by value, so nothing inside a layer's data
// path waits for the host. Needs no GPU: the CPU writer and the tests use it too.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "skv/dtype.hpp"
#include "skv/kvcache.hpp"
#include "skv/plan.hpp"

namespace skv::cuda {

// Stream arrays hold the most a layer has: 17 streams when the file declares INT2 (format 1.1),
// else 13 (streams 13..16 then have size 0 and are not part of the payload).
inline constexpr int kLayerStreams = 17;          // stream ids 0..16 as in skv.md
inline constexpr int kLayerStreamsNoInt2 = 13;    // stream ids 0..12 (format 1.0)
inline constexpr size_t kDirectoryBytes = 448;    // 17 entries of 24 bytes, padded to 64 (INT2)
inline constexpr size_t kDirectoryBytesNoInt2 = 320;  // 13 entries, padded to 64
inline constexpr size_t kPayloadAlign = 64;       // every stream starts 64-byte aligned

// Stream ids (skv.md, "Streams"): maps, K centres, then 5 tier streams for K and for V, then
// (INT2 declared) K INT2 values and parameters, V INT2 values and parameters.
enum StreamId : int { kKMap = 0, kVMap = 1, kKCentre = 2, kKTierBase = 3, kVTierBase = 8,
                      kKInt2Values = 13, kKInt2Params = 14, kVInt2Values = 15, kVInt2Params = 16 };
enum TierStreamOffset : int { kFp16Values = 0, kInt8Values = 1, kInt8Scales = 2, kInt4Values = 3,
                              kInt4Params = 4 };

struct LayerGeometry {
  int kv_heads = 0, tokens = 0, head_dim = 0;  // H, T, D
  int int8_group = 0, int4_group = 0;          // resolved: never 0, divide D, int4 even
  int int2_group = 0;                          // resolved when int2: a multiple of 4 dividing D
  bool int2 = false;                           // the file declares INT2 (17 streams)
  DType dtype = DType::F16;                    // source K/V dtype: F16, BF16 or F32
  Layout layout = Layout::HTD;                 // source (and decoded) element order
  KeyTransform key_transform = KeyTransform::none;
  RopeStyle rope_style = RopeStyle::unknown;   // neox or gptj when key_transform is prerope_centre

  bool centred() const { return key_transform != KeyTransform::none; }
  int streams() const { return int2 ? kLayerStreams : kLayerStreamsNoInt2; }
  size_t directory_bytes() const { return int2 ? kDirectoryBytes : kDirectoryBytesNoInt2; }
  // FP16-tier element type: BF16 for BF16 sources, else F16 (skv.md "fp16_tier_dtype").
  DType tier_dtype() const { return dtype == DType::BF16 ? DType::BF16 : DType::F16; }
};

// Resolves 0 group sizes to head_dim and checks everything skv.md and the kernels require.
// Throws Errc::invalid_argument naming `ctx`.
LayerGeometry make_geometry(const KvShape& shape, Layout layout, const QuantSettings& quant,
                            RopeStyle rope_style, const std::string& ctx);

struct LayerPlan {
  LayerGeometry geo;
  std::array<std::array<uint32_t, kNumTiers>, 2> count{};  // [0 = K, 1 = V][tier code]
  std::array<uint64_t, kLayerStreams> offset{};  // raw stream offsets within the payload
  std::array<uint64_t, kLayerStreams> size{};    // raw stream sizes in bytes
  uint64_t payload_bytes = 0;                    // end of the last stream (no trailing padding)
};

// Counts tiers in the host tier maps (T bytes each) and lays out the raw payload exactly as the
// CPU writer does with zstd off. Throws Errc::invalid_argument on a tier code > 4, or 4 (INT2)
// when the geometry does not declare INT2.
LayerPlan plan_layer(const LayerGeometry& geo, const uint8_t* k_tiers, const uint8_t* v_tiers,
                     const std::string& ctx);

// The stream directory (geo.directory_bytes(): 320 bytes, 448 with INT2) for an all-raw
// payload (codec 0, stored = raw = size).
void write_directory(const LayerPlan& plan, uint8_t* dir);

// Views of the raw streams (empty past geo.streams()) inside a payload laid out by `plan`.
std::array<std::span<const uint8_t>, kLayerStreams> split_streams(const LayerPlan& plan,
                                                                  std::span<const uint8_t> payload);

// The inverse: lays the raw streams (e.g. ContainerReader::next_layer_streams) out as the raw
// payload `plan` describes (directory, streams, zero padding) in `payload` (plan.payload_bytes
// bytes). Throws Errc::invalid_argument when a stream's size differs from the plan's.
void join_streams(const LayerPlan& plan, const std::array<std::span<const uint8_t>, kLayerStreams>& streams,
                  uint8_t* payload);

// Size queries. max_layer_bytes: the payload of the largest plan (every token at the costliest
// tier), so one output buffer serves every layer.
size_t max_layer_bytes(const LayerGeometry& geo);
size_t workspace_bytes(const LayerGeometry& geo);

// RoPE table for prerope_centre, computed on the host exactly as skv.md says (f64, rounded to
// f32) and uploaded once per cache: [T][D/2] cosines, then [T][D/2] sines, position
// position_offset + t. The GPU never calls sin/cos itself.
size_t rope_table_floats(const LayerGeometry& geo);
void fill_rope_table(const LayerGeometry& geo, double theta, int64_t position_offset, float* table);
// The same for one layer's RoPE frequencies (KvMeta::rope_for_layer: theta and scaling).
void fill_rope_table(const LayerGeometry& geo, const RopeParams& rope, int64_t position_offset, float* table);

}  // namespace skv::cuda
