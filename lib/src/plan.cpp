#include "skv/plan.hpp"

namespace skv {

const char* tier_name(Tier t) noexcept {
  switch (t) {
    case Tier::FP16: return "fp16";
    case Tier::INT8: return "int8";
    case Tier::INT4: return "int4";
    case Tier::DROP: return "drop";
    case Tier::INT2: return "int2";
  }
  return "?";
}

Plan Plan::uniform(int layers, int tokens, Tier t) {
  Plan p;
  p.layers = layers;
  p.tokens = tokens;
  p.k_tiers.assign(size_t(layers) * size_t(tokens), t);
  p.v_tiers = p.k_tiers;
  p.policy = tier_name(t);
  return p;
}

double Plan::nominal_budget() const {
  static constexpr double kCost[kNumTiers] = {1.0, 0.5, 0.25, 0.0, 0.125};
  // Unknown codes (which encode() refuses) count as nothing rather than reading out of bounds.
  auto cost = [](Tier t) { return size_t(t) < size_t(kNumTiers) ? kCost[size_t(t)] : 0.0; };
  if (k_tiers.empty()) return 0;
  double s = 0;
  for (Tier t : k_tiers) s += cost(t);
  for (Tier t : v_tiers) s += cost(t);
  return s / double(k_tiers.size() + v_tiers.size());
}

}  // namespace skv
