// kv_stats DUMP [thd]: computes skv's dump statistics over a safetensors KV dump and prints a
// summary plus the peak RSS, to check that inspecting a large dump stays within memory bounds.
#include <sys/resource.h>

#include <chrono>
#include <cstdio>

#include "skv/dump_stats.hpp"
#include "skv/error.hpp"
#include "skv/formats/safetensors.hpp"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: kv_stats DUMP [thd]\n");
    return 2;
  }
  try {
    const auto t0 = std::chrono::steady_clock::now();
    const auto r = skv::safetensors::Reader::open(argv[1]);
    std::vector<skv::NamedTensor> named;
    for (const auto& t : r.tensors()) named.push_back({t.name, r.view(t)});
    const auto layout = argc > 2 ? skv::Layout::THD : skv::Layout::HTD;
    const auto cache = skv::kv_from_tensors(named, r.metadata(), layout, argv[1]);
    const auto stats =
        skv::dump_stats(cache, {}, [&](std::span<const std::byte> b) { r.release(b); });
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (const auto& l : stats)
      std::printf("layer %d: K absmax %.4g mean|x| %.4g top (%d,%d)=%.4g sinks %lld; V absmax %.4g\n",
                  l.layer, l.k.absmax, l.k.mean_abs, l.k.top_channels[0].head,
                  l.k.top_channels[0].dim, l.k.top_channels[0].mean, (long long)l.sink_count,
                  l.v.absmax);
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    std::printf("bytes %.0f MiB, %.2f s, %.2f GiB/s, peak RSS %.1f MB\n",
                double(r.tensors().empty() ? 0 : r.tensors().back().end) / 1048576.0, s,
                double(r.tensors().back().end) / s / 1073741824.0, double(ru.ru_maxrss) / 1024.0);
  } catch (const skv::Error& e) {
    std::fprintf(stderr, "kv_stats: %s\n", e.what());
    return 1;
  }
  return 0;
}
