// The limits a container obeys (formats/skv.md, "Conformance"), in one place: the reader rejects
// a file past them, the writer refuses to write one, and the dump loaders reject a source past
// them, so nothing skv writes is something skv cannot read.
#pragma once
#include <cmath>
#include <cstdint>
#include <string>

namespace skv::limits {

inline constexpr int64_t kMaxLayers = int64_t(1) << 20;
inline constexpr int64_t kMaxKvHeads = int64_t(1) << 16;
inline constexpr int64_t kMaxTokens = int64_t(1) << 30;
inline constexpr int64_t kMaxHeadDim = int64_t(1) << 16;
inline constexpr int64_t kMaxLayerElements = int64_t(1) << 40;  // kv_heads * tokens * head_dim
// Positions are exact in f64 far past this; a larger offset is no real cache.
inline constexpr int64_t kMaxPositionOffset = int64_t(1) << 40;
// RoPE base: below 1 the higher pairs would turn faster than the first, which no model does
// (and a denormal theta makes every frequency infinite).
inline constexpr double kMinRopeTheta = 1.0;
// Tensor names (K, V, mask): at most this many bytes, no control characters.
inline constexpr size_t kMaxNameBytes = 1024;

inline bool rope_theta_ok(double t) { return std::isfinite(t) && t >= kMinRopeTheta; }

// Why `name` cannot name an output tensor (empty, "__metadata__", too long, a control
// character), or "" when it can.
inline std::string name_problem(const std::string& name) {
  if (name.empty()) return "is empty";
  if (name == "__metadata__") return "is the reserved safetensors key '__metadata__'";
  if (name.size() > kMaxNameBytes) return "is longer than " + std::to_string(kMaxNameBytes) + " bytes";
  for (unsigned char c : name)
    if (c < 0x20 || c == 0x7f) return "holds a control character";
  return {};
}

}  // namespace skv::limits
