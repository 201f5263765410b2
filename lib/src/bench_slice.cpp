#include <algorithm>
#include <cstring>
#include <string>

#include "skv/bench.hpp"
#include "skv/error.hpp"

namespace skv {

KvCache slice_layers(const KvCache& cache, int first, int count) {
  const int L = cache.shape.layers;
  if (first < 0 || count < 1 || first > L - count || int(cache.layers.size()) != L)
    fail(Errc::invalid_argument, cache.source,
         "layer slice [" + std::to_string(first) + ", +" + std::to_string(count) + ") outside " +
             std::to_string(L) + " layers");
  KvCache s;
  s.shape = cache.shape;
  s.shape.layers = count;
  s.layout = cache.layout;
  s.meta = cache.meta;
  s.metadata = cache.metadata;
  s.source = cache.source;
  s.layers.assign(cache.layers.begin() + first, cache.layers.begin() + first + count);
  return s;
}

Plan slice_plan(const Plan& plan, int first, int count) {
  if (first < 0 || count < 1 || first > plan.layers - count)
    fail(Errc::invalid_argument, "plan",
         "layer slice [" + std::to_string(first) + ", +" + std::to_string(count) + ") outside " +
             std::to_string(plan.layers) + " layers");
  Plan p;
  p.layers = count;
  p.tokens = plan.tokens;
  const auto b = std::ptrdiff_t(size_t(first) * size_t(plan.tokens));
  const auto e = b + std::ptrdiff_t(size_t(count) * size_t(plan.tokens));
  p.k_tiers.assign(plan.k_tiers.begin() + b, plan.k_tiers.begin() + e);
  p.v_tiers.assign(plan.v_tiers.begin() + b, plan.v_tiers.begin() + e);
  p.quant = plan.quant;
  p.policy = plan.policy;
  p.requested_budget = plan.requested_budget;
  return p;
}

std::byte* FixedSink::claim(size_t n) {
  if (n > buf_.size() - used_)
    fail(Errc::invalid_argument, "fixed sink",
         "write of " + std::to_string(n) + " bytes past its capacity of " + std::to_string(buf_.size()));
  std::byte* p = buf_.data() + used_;
  used_ += n;
  return p;
}

void FixedSink::write(const void* src, size_t n) {
  std::byte* p = claim(n);
  if (n) std::memcpy(p, src, n);
}

}  // namespace skv
