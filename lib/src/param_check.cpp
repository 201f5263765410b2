#include "param_check.hpp"

#include "cpu_features.hpp"

namespace skv::detail {
namespace {

// Max-reductions: the largest finite non-negative f16 is 0x7bff, the largest finite f32
// magnitude 0x7f7fffff; anything above is infinite, NaN or (scales) has the sign bit set.
template <int Kind>
[[gnu::always_inline]] inline bool check(const void* p, uint64_t n) {
  if constexpr (Kind == 0) {
    const auto* q = static_cast<const uint16_t*>(p);
    uint16_t m = 0;
    for (uint64_t i = 0; i < n; ++i) m = q[i] > m ? q[i] : m;
    return m <= 0x7bff;
  } else if constexpr (Kind == 1) {
    const auto* q = static_cast<const uint32_t*>(p);
    uint32_t ms = 0, mm = 0;
    for (uint64_t i = 0; i < n; ++i) {
      const uint32_t s = q[i] & 0xffffu, m = (q[i] >> 16) & 0x7fffu;
      ms = s > ms ? s : ms;
      mm = m > mm ? m : mm;
    }
    return ms <= 0x7bffu && mm <= 0x7bffu;
  } else {
    const auto* q = static_cast<const uint32_t*>(p);
    uint32_t m = 0;
    for (uint64_t i = 0; i < n; ++i) {
      const uint32_t a = q[i] & 0x7fffffffu;
      m = a > m ? a : m;
    }
    return m <= 0x7f7fffffu;
  }
}

template <int Kind>
bool check_generic(const void* p, uint64_t n) { return check<Kind>(p, n); }

#if defined(__x86_64__)
template <int Kind>
__attribute__((target("avx2"))) bool check_avx2(const void* p, uint64_t n) { return check<Kind>(p, n); }
#endif

template <int Kind>
bool check_best(const void* p, uint64_t n) {
#if defined(__x86_64__)
  if (cpu_has_avx2_fma_f16c()) return check_avx2<Kind>(p, n);
#endif
  return check_generic<Kind>(p, n);
}

}  // namespace

bool scales_ok(const uint16_t* p, uint64_t n) { return check_best<0>(p, n); }
bool scale_min_pairs_ok(const uint32_t* p, uint64_t n) { return check_best<1>(p, n); }
bool f32_finite(const uint32_t* p, uint64_t n) { return check_best<2>(p, n); }

}  // namespace skv::detail
