// Human and JSON renderings of what the codec reports (shared by encode, decode, inspect).
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "skv/codec.hpp"

namespace skv::cli {

// "fp16 12.5%  int8 50.0%  int4 37.5%" over K and V entries together.
std::string tier_summary(const TierCounts& t);
// The keys scripts rely on: format_version, layers, kv_heads, head_dim, tokens, source_dtype,
// policy, requested_budget, achieved_budget, nominal_budget, bytes, tiers (+ byte breakdown).
nlohmann::json container_json(const ContainerInfo& info, const ByteBreakdown& b);

}  // namespace skv::cli
