// Constants and byte-level helpers of the .skv container (formats/skv.md), shared by the writer,
// the reader and the size model.
#pragma once
#include <array>
#include <bit>
#include <cstdint>
#include <cstring>
#include <string>

#include "skv/codec.hpp"

namespace skv::fmt {

inline constexpr std::array<uint8_t, 8> kMagic{0x89, 'S', 'K', 'V', '\r', '\n', 0x1a, '\n'};
inline constexpr uint16_t kMajor = 1, kMinor = 0;
inline constexpr uint16_t kMinorInt2 = 1;  // files that declare quant.int2 are format 1.1
inline constexpr uint64_t kAlign = 64;
inline constexpr size_t kHeaderSize = 64;   // file header and section header alike
inline constexpr int kStreams = 13;         // streams of a layer without INT2 (format 1.0)
inline constexpr int kStreamsInt2 = 17;     // with INT2 declared: 4 more, after stream 12
inline constexpr int kMaxStreams = kStreamsInt2;
inline constexpr size_t kDirEntry = 24;
inline constexpr size_t kDirSize = 320;     // align64(13 * 24)
inline constexpr size_t kDirSizeInt2 = 448; // align64(17 * 24)
inline constexpr size_t kTrailerSize = 96;
inline constexpr size_t kTrailerSizeInt2 = 112;  // + the K and V INT2 counts
inline constexpr size_t kFootSize = 16;
inline constexpr uint64_t kMaxManifest = 64ull << 20;
inline constexpr uint32_t kFlagRequired = 1;

// Stream ids within a layer section.
enum Stream : int { kKMap = 0, kVMap = 1, kKCentre = 2, kKBase = 3, kVBase = 8 };
// Offsets from kKBase / kVBase.
enum TierStream : int { kF16 = 0, kQ8 = 1, kS8 = 2, kQ4 = 3, kP4 = 4 };
inline constexpr int kTierStreams = 5;
// INT2 streams (only when the manifest declares quant.int2): K values, K parameters, V values,
// V parameters.
enum Int2Stream : int { kKQ2 = 13, kKP2 = 14, kVQ2 = 15, kVP2 = 16 };

constexpr int stream_count(bool int2) { return int2 ? kStreamsInt2 : kStreams; }
constexpr size_t dir_size(bool int2) { return int2 ? kDirSizeInt2 : kDirSize; }
constexpr size_t trailer_size(bool int2) { return int2 ? kTrailerSizeInt2 : kTrailerSize; }
// Whether stream s holds scales / parameters (the breakdown's "scales") rather than values.
constexpr bool is_param_stream(int s) {
  if (s >= kKQ2) return s == kKP2 || s == kVP2;
  const int ts = (s - kKBase) % kTierStreams;
  return s >= kKBase && (ts == kS8 || ts == kP4);
}

constexpr uint32_t tag(const char (&s)[5]) {
  return uint32_t(uint8_t(s[0])) | uint32_t(uint8_t(s[1])) << 8 | uint32_t(uint8_t(s[2])) << 16 |
         uint32_t(uint8_t(s[3])) << 24;
}
inline constexpr uint32_t kTagMani = tag("MANI"), kTagLayr = tag("LAYR"), kTagTrlr = tag("TRLR"),
                          kTagIndx = tag("INDX"), kTagFoot = tag("FOOT");

constexpr uint64_t align64(uint64_t n) { return (n + kAlign - 1) & ~(kAlign - 1); }

inline void put_u16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, 2); }  // little-endian hosts
inline void put_u32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, 4); }
inline void put_u64(uint8_t* p, uint64_t v) { std::memcpy(p, &v, 8); }
inline void put_f64(uint8_t* p, double v) { std::memcpy(p, &v, 8); }
inline uint16_t get_u16(const uint8_t* p) { uint16_t v; std::memcpy(&v, p, 2); return v; }
inline uint32_t get_u32(const uint8_t* p) { uint32_t v; std::memcpy(&v, p, 4); return v; }
inline uint64_t get_u64(const uint8_t* p) { uint64_t v; std::memcpy(&v, p, 8); return v; }
inline double get_f64(const uint8_t* p) { double v; std::memcpy(&v, p, 8); return v; }
static_assert(std::endian::native == std::endian::little, "skv assumes a little-endian host");

// Bytes of one head's row at each tier (indexed by tier code).
struct RowBytes {
  uint64_t values[kNumTiers]{};  // per head row: FP16 2D, INT8 D, INT4 D/2, INT2 D/4
  uint64_t params[kNumTiers]{};  // per head row: INT8 2D/g8, INT4 4D/g4, INT2 4D/g2
};
// g2 = 0: no INT2 (its sizes stay 0).
RowBytes row_bytes(int head_dim, int g8, int g4, int g2 = 0);

// Group sizes with 0 resolved to head_dim (and the INT2 default resolved); throws
// invalid_argument if they do not fit. g2 is 0 unless q.int2 is set.
void resolve_groups(int head_dim, const QuantSettings& q, int& g8, int& g4, int& g2, const std::string& ctx);

// The manifest JSON text (deterministic) for this cache and settings.
// `has_drops` is written as 0 or 1 (fixed width, so the size model does not depend on the plan).
std::string build_manifest(const KvCache& cache, const QuantSettings& quant, const std::string& policy,
                           double requested_budget, const std::string& producer, bool has_drops);
// Parses and validates a manifest into `info` (everything but the trailer's numbers) and the
// per-layer source shapes.
void parse_manifest(const std::string& text, const std::string& ctx, ContainerInfo& info,
                    std::vector<Shape>& k_shapes, std::vector<Shape>& v_shapes, KvMeta& rope);
// The writer's side of the reader's rules: parses `manifest` as a reader would and throws
// invalid_argument with the reader's reason when it would be rejected (one set of rules).
void check_readable(const std::string& manifest, const std::string& ctx);

// RoPE (formats/skv.md, "RoPE frequencies"): what the manifest's `rope` entry describes for
// this cache (empty rope_theta: null), and the minor version that entry needs (1 for the
// per-layer / scaling form, else 0).
KvMeta manifest_rope(const KvCache& cache);
uint16_t rope_minor(const KvCache& cache);

std::string default_producer();
const char* layout_name(Layout l);
const char* transform_name(KeyTransform t);

}  // namespace skv::fmt
