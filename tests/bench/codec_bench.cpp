// Single-thread codec throughput over a 256 MiB synthetic F16 cache (16 layers x 8 heads x 4096
// tokens x 128), in bytes of FP16 input per second. Values: normal-ish noise with per-channel
// scales and offsets (keys), so groups look like real K/V rows.
// The machine may be shared: compare the CPU column as well as real time, and run a baseline
// binary in the same session.
//   build/tests/skv_bench_codec [--benchmark_filter=encode] [--benchmark_repetitions=3]
#include <benchmark/benchmark.h>

#include <cstring>
#include <memory>
#include <vector>

#include "skv/codec.hpp"
#include "skv/half.hpp"

namespace {

using namespace skv;

struct Synthetic {
  KvCache cache;
  std::vector<std::vector<uint16_t>> bufs;
};

const Synthetic& synthetic() {
  static const Synthetic s = [] {
    Synthetic r;
    const int L = 16, H = 8, T = 4096, D = 128;
    r.cache.shape = KvShape{L, H, T, D, 0, 0, DType::F16};
    r.cache.source = "bench";
    uint64_t x = 88172645463325252ull;
    auto uni = [&x] {
      x ^= x << 13; x ^= x >> 7; x ^= x << 17;
      return float(x >> 40) / float(1 << 24);
    };
    r.bufs.reserve(size_t(2 * L));
    for (int l = 0; l < L; ++l) {
      KvLayer kl;
      for (int kv = 0; kv < 2; ++kv) {
        std::vector<float> sc(D), off(D);
        for (int d = 0; d < D; ++d) {
          sc[size_t(d)] = 0.1f + uni();
          off[size_t(d)] = kv == 0 ? 4.0f * (uni() - 0.5f) : 0.0f;
        }
        std::vector<uint16_t> b(size_t(H) * T * D);
        for (size_t i = 0; i < b.size(); ++i) {
          const size_t d = i % D;
          b[i] = f32_to_f16((uni() + uni() + uni() - 1.5f) * 2.0f * sc[d] + off[d]);
        }
        r.bufs.push_back(std::move(b));
        TensorView v{DType::F16, {H, T, D},
                     std::as_bytes(std::span(r.bufs.back().data(), r.bufs.back().size()))};
        (kv ? kl.v : kl.k) = v;
      }
      kl.k_name = "layers." + std::to_string(l) + ".k";
      kl.v_name = "layers." + std::to_string(l) + ".v";
      r.cache.layers.push_back(std::move(kl));
    }
    return r;
  }();
  return s;
}

struct NullSink final : ByteSink {
  uint64_t n = 0;
  void write(const void*, size_t k) override { n += k; }
};

void BM_encode(benchmark::State& st) {
  const Synthetic& s = synthetic();
  const Plan p = Plan::uniform(s.cache.shape.layers, s.cache.shape.tokens, Tier(st.range(0)));
  EncodeOptions o;
  o.threads = 1;
  for (auto _ : st) {
    NullSink sink;
    encode(s.cache, p, sink, o);
    benchmark::DoNotOptimize(sink.n);
  }
  st.SetBytesProcessed(int64_t(st.iterations()) * int64_t(s.cache.shape.fp16_bytes()));
  st.SetLabel(tier_name(Tier(st.range(0))));
}

// Decoding through an in-memory SpanSource (payloads used in place) or, as a pipe or file stream
// reads, through a plain ByteSource (each payload copied into the reader's buffer first).
struct StreamSource final : ByteSource {
  SpanSource inner;
  explicit StreamSource(std::span<const std::byte> b) : inner(b) {}
  size_t read(void* dst, size_t n) override { return inner.read(dst, n); }
};

template <class Source>
void decode_from(benchmark::State& st) {
  const Synthetic& s = synthetic();
  const Plan p = Plan::uniform(s.cache.shape.layers, s.cache.shape.tokens, Tier(st.range(0)));
  VectorSink sink;
  encode(s.cache, p, sink, {});
  for (auto _ : st) {
    Source src(sink.bytes);
    ContainerReader r(src, "bench");
    r.set_threads(1);
    DecodedLayer d;
    while (r.next_layer(d)) benchmark::DoNotOptimize(d.k.data.data());
  }
  st.SetBytesProcessed(int64_t(st.iterations()) * int64_t(s.cache.shape.fp16_bytes()));
  st.SetLabel(tier_name(Tier(st.range(0))));
}

void BM_decode(benchmark::State& st) { decode_from<SpanSource>(st); }
void BM_decode_stream(benchmark::State& st) { decode_from<StreamSource>(st); }

void BM_memcpy(benchmark::State& st) {
  const Synthetic& s = synthetic();
  std::vector<uint16_t> dst(s.bufs[0].size());
  for (auto _ : st)
    for (const auto& b : s.bufs) {
      std::memcpy(dst.data(), b.data(), b.size() * 2);
      benchmark::DoNotOptimize(dst.data());
    }
  st.SetBytesProcessed(int64_t(st.iterations()) * int64_t(s.cache.shape.fp16_bytes()));
}

BENCHMARK(BM_encode)->Arg(1)->Arg(2)->Arg(0)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_decode)->Arg(1)->Arg(2)->Arg(0)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_decode_stream)->Arg(1)->Arg(2)->Arg(0)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_memcpy)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
