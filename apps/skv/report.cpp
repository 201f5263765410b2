#include "report.hpp"

#include <fmt/core.h>

namespace skv::cli {

std::string tier_summary(const TierCounts& t) {
  uint64_t total = 0;
  for (int i = 0; i < kNumTiers; ++i) total += t.k[size_t(i)] + t.v[size_t(i)];
  std::string s;
  // Most precise first: fp16, int8, int4, int2, drop.
  for (int i : {0, 1, 2, 4, 3}) {
    const uint64_t n = t.k[size_t(i)] + t.v[size_t(i)];
    if (!n) continue;
    if (!s.empty()) s += "  ";
    s += fmt::format("{} {:.1f}%", tier_name(Tier(i)), 100.0 * double(n) / double(total ? total : 1));
  }
  return s.empty() ? "empty" : s;
}

nlohmann::json container_json(const ContainerInfo& info, const ByteBreakdown& b) {
  nlohmann::json tiers = nlohmann::json::object(), k = nlohmann::json::object(),
                 v = nlohmann::json::object();
  // INT2 only for files that declare it (format 1.1), so 1.0 files report what they always did.
  const int n = info.quant.int2 ? kNumTiers : int(Tier::DROP) + 1;
  for (int i = 0; i < n; ++i) {
    tiers[tier_name(Tier(i))] = info.tiers.k[size_t(i)] + info.tiers.v[size_t(i)];
    k[tier_name(Tier(i))] = info.tiers.k[size_t(i)];
    v[tier_name(Tier(i))] = info.tiers.v[size_t(i)];
  }
  const auto& s = info.shape;
  return {
      {"format_version", info.format_version},
      {"format_minor", info.format_minor},
      {"layers", s.layers},
      {"kv_heads", s.kv_heads},
      {"head_dim", s.head_dim},
      {"tokens", s.tokens},
      {"layout", info.layout == Layout::HTD ? "htd" : "thd"},
      {"source_dtype", std::string(dtype_name(s.dtype))},
      {"policy", info.policy},
      {"producer", info.producer},
      {"requested_budget", info.requested_budget},
      {"achieved_budget", info.achieved_budget},
      {"nominal_budget", info.nominal_budget},
      {"fp16_bytes", s.fp16_bytes()},
      {"bytes", b.total ? b.total : info.total_bytes},
      {"tiers", tiers},
      {"tiers_k", k},
      {"tiers_v", v},
      {"byte_breakdown",
       {{"header", b.header}, {"manifest", b.manifest}, {"tier_maps", b.tier_maps},
        {"payload", b.payload}, {"scales", b.scales}, {"centres", b.centres}, {"index", b.index},
        {"padding", b.padding}}},
      {"metadata", info.metadata},
  };
}

}  // namespace skv::cli
