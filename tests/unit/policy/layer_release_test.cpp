// PolicyOptions::layer_done: every planning pass reads the cache layer by layer and reports each
// layer once it is done with it, so a caller streaming from a mapped dump can drop its pages.
// The cache here lives in page-aligned memory that is inaccessible until touched: a fault makes
// the touched layer readable and counts it live (as a dropped mmap page faults back in), and the
// hook makes it inaccessible again. The test thus sees how many layers a pass holds at once.
#include <gtest/gtest.h>

#if defined(__linux__)
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <memory>
#include <numeric>
#include <vector>

#include "skv/policy.hpp"
#include "skv/synthetic.hpp"

using namespace skv;

namespace {

class GuardedCache {
 public:
  // Copies the K, V and Q tensors of `src` into guarded pages; masks stay in ordinary memory.
  explicit GuardedCache(const KvCache& src) : cache_(src), layers_(src.shape.layers) {
    const size_t page = size_t(sysconf(_SC_PAGESIZE));
    auto round = [&](size_t n) { return (n + page - 1) / page * page; };
    const KvLayer& l0 = src.layers[0];
    stride_ = round(l0.k.bytes.size()) + round(l0.v.bytes.size()) + (l0.q ? round(l0.q->bytes.size()) : 0);
    base_ = static_cast<std::byte*>(
        mmap(nullptr, stride_ * size_t(layers_), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    EXPECT_NE(base_, MAP_FAILED);
    live_ = std::make_unique<std::atomic<uint8_t>[]>(size_t(layers_));
    for (int l = 0; l < layers_; ++l) {
      std::byte* p = base_ + stride_ * size_t(l);
      KvLayer& kl = cache_.layers[size_t(l)];
      for (TensorView* t : {&kl.k, &kl.v, kl.q ? &*kl.q : nullptr}) {
        if (!t) continue;
        std::memcpy(p, t->bytes.data(), t->bytes.size());
        t->bytes = {p, t->bytes.size()};
        p += round(t->bytes.size());
      }
      live_[size_t(l)] = 0;
    }
    mprotect(base_, stride_ * size_t(layers_), PROT_NONE);
    active_ = this;
    struct sigaction sa {};
    sa.sa_sigaction = &GuardedCache::on_fault;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &old_);
  }
  ~GuardedCache() {
    sigaction(SIGSEGV, &old_, nullptr);
    active_ = nullptr;
    munmap(base_, stride_ * size_t(layers_));
  }
  GuardedCache(const GuardedCache&) = delete;
  GuardedCache& operator=(const GuardedCache&) = delete;

  const KvCache& cache() const { return cache_; }
  // The hook: the layer's pages become inaccessible; the next touch faults it back in.
  void release(int l) {
    mprotect(base_ + stride_ * size_t(l), stride_, PROT_NONE);
    if (live_[size_t(l)].exchange(0)) --live_count_;
  }
  int max_live() const { return max_live_; }
  int faults() const { return faults_; }

 private:
  static void on_fault(int, siginfo_t* si, void*) {
    GuardedCache* g = active_;
    auto* a = static_cast<std::byte*>(si->si_addr);
    if (!g || a < g->base_ || a >= g->base_ + g->stride_ * size_t(g->layers_)) {
      signal(SIGSEGV, SIG_DFL);  // a real crash: let it happen
      return;
    }
    const size_t l = size_t(a - g->base_) / g->stride_;
    ++g->faults_;
    if (!g->live_[l].exchange(1)) {
      const int n = ++g->live_count_;
      for (int m = g->max_live_; n > m && !g->max_live_.compare_exchange_weak(m, n);) {
      }
    }
    mprotect(g->base_ + g->stride_ * l, g->stride_, PROT_READ);
  }

  static inline GuardedCache* active_ = nullptr;
  KvCache cache_;
  int layers_;
  size_t stride_ = 0;
  std::byte* base_ = nullptr;
  std::unique_ptr<std::atomic<uint8_t>[]> live_;
  std::atomic<int> live_count_{0}, max_live_{0}, faults_{0};
  struct sigaction old_ {};
};

struct Case {
  PolicyKind policy;
  int window;                  // observation queries (0 = none: keynorm scoring)
  bool fixed_transform;        // key transform given: no transform measurement pass
  int passes;                  // passes over the cache that make_plan must report
};

void expect_same(const Plan& a, const PolicyReport& ra, const Plan& b, const PolicyReport& rb) {
  EXPECT_EQ(a.k_tiers, b.k_tiers);
  EXPECT_EQ(a.v_tiers, b.v_tiers);
  EXPECT_EQ(a.quant.key_transform, b.quant.key_transform);
  EXPECT_EQ(ra.key_error, rb.key_error);
  EXPECT_EQ(ra.distortion, rb.distortion);  // bit-identical, not merely close
}

}  // namespace

TEST(LayerRelease, EveryPassReleasesEachLayerAndHoldsAtMostThreadsLayers) {
  const Case cases[] = {
      {PolicyKind::spectrum, 0, false, 3},  // keynorm scores, transform errors, distortion
      {PolicyKind::spectrum, 4, false, 2},  // transform errors, then attention and distortion in one pass
      {PolicyKind::spectrum2, 4, true, 1},  // the fused pass alone (queries guarded too)
      {PolicyKind::greedy, 0, false, 2},
      {PolicyKind::snapkv, 4, false, 1},
      {PolicyKind::int8, 0, false, 1},
      {PolicyKind::int4, 0, true, 0},
      {PolicyKind::pdtrim, 0, false, 0},
  };
  for (const Case& k : cases) {
    SyntheticOptions so;
    so.spec = "7x3x64:96";
    so.window = k.window;
    so.group = 2;
    so.seed = 7;
    SyntheticCache sc = make_synthetic(so);
    std::vector<Tensor> masks;  // some tokens of odd layers absent, to reach the forced paths
    for (int l = 1; l < 7; l += 2) {
      Tensor& m = masks.emplace_back(DType::U8, Shape{96});
      for (int t = 0; t < 96; ++t) m.as<uint8_t>()[t] = uint8_t(t % 5 != 2);
      sc.cache.layers[size_t(l)].mask = m.view();
    }
    PolicyOptions po;
    po.policy = k.policy;
    po.budget = k.policy == PolicyKind::int8 || k.policy == PolicyKind::int4 ? 0 : 0.4;
    if (k.fixed_transform) po.key_transform = KeyTransform::centre;
    po.threads = 1;
    PolicyReport r0;
    const Plan p0 = make_plan(sc.cache, po, &r0);

    for (int threads : {1, 2, 5}) {
      SCOPED_TRACE(std::string(policy_name(k.policy)) + " window " + std::to_string(k.window) + " threads " +
                   std::to_string(threads));
      GuardedCache g(sc.cache);
      std::vector<int> calls;
      po.threads = threads;
      po.layer_done = [&](int l) {
        calls.push_back(l);  // the hook runs on the calling thread: no lock needed
        g.release(l);
      };
      PolicyReport r;
      const Plan p = make_plan(g.cache(), po, &r);
      expect_same(p0, r0, p, r);
      std::vector<int> want;
      for (int pass = 0; pass < k.passes; ++pass)
        for (int l = 0; l < 7; ++l) want.push_back(l);
      EXPECT_EQ(calls, want);
      if (k.passes > 0) {
        EXPECT_GE(g.max_live(), 1);
        EXPECT_LE(g.max_live(), threads);
        EXPECT_GE(g.faults(), 7 * k.passes);  // each pass faults every layer back in
      } else {
        EXPECT_EQ(g.faults(), 0);
      }
    }
  }
}

#endif  // __linux__
