// NOT BUILT YET (the codec's encode()/ContainerReader are not on this branch). After merging
// `codec`, move this into tests/unit_cuda as a GoogleTest case: it proves that layer_ref (what
// the GPU tests compare against) equals the CPU writer's LAYR payloads and the reader's decoded
// tensors byte for byte. Run by hand on `cuda` f72c057 + `codec` f02fd35: 576 cases, 0 mismatches.
// Build: g++ -std=c++20 -ffp-contract=off -I<codec>/lib/include -I<codec>/lib/core/include
//   -Icuda/include -Itests/unit_cuda this.cpp tests/unit_cuda/layer_ref.cpp
//   cuda/src/layer_plan.cpp <codec build>/lib/libskv.a .../libskv_formats.a .../libskv_core.a
//   -lzstd -lxxhash -lpthread
#include <cstdio>
#include <cstring>
#include "skv/codec.hpp"
#include "layer_ref.hpp"
#include "test_data.hpp"
using namespace skv;
int main() {
  int fails = 0, cases = 0;
  uint32_t seed = 1;
  for (DType dt : {DType::F16, DType::BF16, DType::F32})
  for (int D : {64, 80, 128})
  for (Layout lay : {Layout::HTD, Layout::THD})
  for (int ti = 0; ti < 4; ++ti) {
    const int H = 1 + int(seed % 3), T = (int[]){1, 2, 37, 301}[seed % 4];
    KeyTransform kt = ti == 0 ? KeyTransform::none : ti == 1 ? KeyTransform::centre : KeyTransform::prerope_centre;
    RopeStyle rs = ti == 3 ? RopeStyle::gptj : RopeStyle::neox;
    int g8s[] = {0, 16, D % 5 == 0 ? 5 : 1}, g4s[] = {0, 16, 2};
    QuantSettings q; q.int8_group = g8s[seed % 3]; q.int4_group = g4s[(seed / 3) % 3]; q.key_transform = kt;
    KvShape s; s.layers = 2; s.kv_heads = H; s.tokens = T; s.head_dim = D; s.dtype = dt;
    cuda::LayerGeometry g = cuda::make_geometry(s, lay, q, rs, "x");
    KvCache c; c.shape = s; c.layout = lay; c.meta.rope_theta = 10000.0; c.meta.rope_style = rs; c.meta.position_offset = 3; c.source = "x";
    std::vector<std::vector<uint8_t>> kb, vb, km, vm;
    std::vector<std::vector<double>> mixes{{1,1,1,1},{0,1,1,0},{6,1,1,0}};
    Plan plan; plan.layers = 2; plan.tokens = T; plan.quant = q;
    for (int l = 0; l < 2; ++l) {
      kb.push_back(cuda::test::make_tensor(g, seed * 10 + l)); vb.push_back(cuda::test::make_tensor(g, seed * 10 + 5 + l));
      km.push_back(cuda::test::make_tiers(T, seed * 10 + 2 + l, mixes[seed % 3])); vm.push_back(cuda::test::make_tiers(T, seed * 10 + 7 + l, mixes[seed % 3]));
      for (auto x : km.back()) plan.k_tiers.push_back(Tier(x));
      for (auto x : vm.back()) plan.v_tiers.push_back(Tier(x));
    }
    for (int l = 0; l < 2; ++l) {
      KvLayer L; Shape sh = lay == Layout::HTD ? Shape{H, T, D} : Shape{T, H, D};
      L.k = TensorView{dt, sh, std::span<const std::byte>(reinterpret_cast<const std::byte*>(kb[l].data()), kb[l].size())};
      L.v = TensorView{dt, sh, std::span<const std::byte>(reinterpret_cast<const std::byte*>(vb[l].data()), vb[l].size())};
      L.k_name = "layers." + std::to_string(l) + ".k"; L.v_name = "layers." + std::to_string(l) + ".v";
      c.layers.push_back(L);
    }
    VectorSink sink;
    encode(c, plan, sink);
    const uint8_t* f = reinterpret_cast<const uint8_t*>(sink.bytes.data());
    uint64_t pos = 64; uint64_t sz; std::memcpy(&sz, f + pos + 8, 8); pos += 64 + (sz + 63) / 64 * 64;
    std::vector<float> rope(cuda::rope_table_floats(g)); cuda::fill_rope_table(g, 10000.0, 3, rope.data());
    for (int l = 0; l < 2; ++l) {
      std::memcpy(&sz, f + pos + 8, 8);
      const uint8_t* payload = f + pos + 64;
      cuda::LayerPlan p = cuda::plan_layer(g, km[l].data(), vm[l].data(), "x");
      std::vector<uint8_t> ref;
      bool ok = cuda::ref::encode_layer(p, kb[l].data(), vb[l].data(), km[l].data(), vm[l].data(), rope.data(), ref);
      ++cases;
      if (!ok || sz != ref.size() || std::memcmp(payload, ref.data(), ref.size()) != 0) {
        size_t first = 0; while (first < ref.size() && payload[first] == ref[first]) ++first;
        std::printf("MISMATCH seed %u dt %d D %d lay %d kt %d layer %d ok %d size %llu vs %zu first %zu\n", seed, int(dt), D, int(lay), ti, l, ok, (unsigned long long)sz, ref.size(), first);
        ++fails;
      }
      // decode parity vs the codec reader, F32 output
      pos += 64 + (sz + 63) / 64 * 64;
    }
    // reader parity
    for (DType od : {DType::F16, DType::BF16, DType::F32}) {
    SpanSource src(std::span<const std::byte>(sink.bytes.data(), sink.bytes.size()));
    ContainerReader rd(src, "x");
    DecodedLayer out;
    for (int l = 0; rd.next_layer(out, od); ++l) {
      cuda::LayerPlan p = cuda::plan_layer(g, km[l].data(), vm[l].data(), "x");
      std::vector<uint8_t> ref; cuda::ref::encode_layer(p, kb[l].data(), vb[l].data(), km[l].data(), vm[l].data(), rope.data(), ref);
      size_t n = size_t(H) * T * D * dtype_size(od); std::vector<uint8_t> k(n), v(n), m(T);
      cuda::ref::decode_layer(p, ref.data(), rope.data(), od, k.data(), v.data(), m.data());
      ++cases;
      if (std::memcmp(out.k.data.data(), k.data(), n) || std::memcmp(out.v.data.data(), v.data(), n) || (out.mask && std::memcmp(out.mask->data.data(), m.data(), T))) {
        std::printf("DECODE MISMATCH seed %u dt %d D %d kt %d layer %d\n", seed, int(dt), D, ti, l); ++fails; }
    }
    }
    ++seed;
  }
  std::printf("%d cases, %d mismatches\n", cases, fails);
  return fails != 0;
}
