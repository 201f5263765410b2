// A Plan says, for every layer and token, at which tier K and V are stored, and how the quantized
// tiers are parameterised. Policies (lib/policy*) produce Plans; the codec only executes them.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace skv {

// Tier codes as stored in the container's tier maps (formats/skv.md). INT2 (code 4, format 1.1)
// only in files that declare it (QuantSettings::int2); values 5..15 are reserved for future
// tiers (e.g. lossless-coded 16-bit).
enum class Tier : uint8_t { FP16 = 0, INT8 = 1, INT4 = 2, DROP = 3, INT2 = 4 };
inline constexpr int kNumTiers = 5;
const char* tier_name(Tier t) noexcept;  // "fp16", "int8", "int4", "drop", "int2"
// A quantized tier: INT8, INT4 or INT2 (the tiers whose keys the key transform applies to).
constexpr bool is_quantized(Tier t) noexcept { return t == Tier::INT8 || t == Tier::INT4 || t == Tier::INT2; }

// Per-channel transform applied to keys of the quantized tiers before quantization.
enum class KeyTransform : uint8_t {
  none = 0,
  centre = 1,          // subtract the per-(layer, head, channel) mean over quantized tokens
  prerope_centre = 2,  // undo RoPE (needs rope_theta/style), centre, quantize; re-apply on decode
};

struct QuantSettings {
  int int8_group = 0;   // elements per INT8 scale; 0 = head_dim
  int int4_group = 32;  // elements per INT4 scale/min pair; 0 = head_dim; must divide head_dim
  // Elements per INT2 scale/min pair; 0 = head_dim; kAutoGroup = 32, or gcd(32, head_dim) when
  // 32 does not divide head_dim. Must be a multiple of 4 and divide head_dim (checked only when
  // int2 is set).
  static constexpr int kAutoGroup = -1;
  int int2_group = kAutoGroup;
  // The file may hold INT2 tokens (format 1.1): declared up front, so that every layer carries
  // the INT2 streams and the size model stays exact. Off: the bytes of format 1.0, unchanged.
  bool int2 = false;
  KeyTransform key_transform = KeyTransform::none;
  int zstd_level = 0;   // 0 = no entropy stage
};

struct Plan {
  int layers = 0, tokens = 0;
  std::vector<Tier> k_tiers;  // [layers * tokens], row-major
  std::vector<Tier> v_tiers;  // same size; equals k_tiers unless keys and values were split
  QuantSettings quant;
  std::string policy = "explicit";
  double requested_budget = 0;  // 0 = no budget was requested

  Tier k(int layer, int token) const { return k_tiers[size_t(layer) * size_t(tokens) + size_t(token)]; }
  Tier v(int layer, int token) const { return v_tiers[size_t(layer) * size_t(tokens) + size_t(token)]; }

  static Plan uniform(int layers, int tokens, Tier t);
  // Literature accounting: FP16 1, INT8 1/2, INT4 1/4, INT2 1/8, DROP 0, averaged over K and V
  // entries.
  double nominal_budget() const;
};

}  // namespace skv
