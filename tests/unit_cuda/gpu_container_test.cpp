// Whole containers on the GPU (skip without a device): encode_cuda writes the CPU writer's bytes
// exactly, and LayerDecoder decodes any container to the CPU reader's tensors exactly, over
// dtypes, layouts, tier mixes (DROP included), key transforms and zstd on/off.
#include <gtest/gtest.h>

#include <algorithm>
#include <limits>
#include <memory>

#include "gpu_util.hpp"
#include "skv/codec.hpp"
#include "skv/cuda/container.hpp"
#include "skv/error.hpp"
#include "test_cache.hpp"

namespace skv::cuda::test {
namespace {

class GpuContainer : public Gpu {};

std::vector<CacheCase> sweep() {
  std::vector<CacheCase> out;
  uint32_t seed = 1;
  const std::vector<std::vector<double>> mixes{{1, 1, 1, 1}, {0, 1, 1, 0}, {1, 0, 0, 0}, {0, 0, 1, 3}};
  for (DType dt : {DType::F16, DType::BF16, DType::F32})
    for (Layout lay : {Layout::HTD, Layout::THD})
      for (KeyTransform kt : {KeyTransform::none, KeyTransform::centre, KeyTransform::prerope_centre})
        for (int level : {0, 3}) {
          CacheCase c;
          c.dtype = dt;
          c.layout = lay;
          c.transform = kt;
          c.rope_style = seed % 2 ? RopeStyle::neox : RopeStyle::gptj;
          c.zstd_level = level;
          c.layers = 3;
          c.heads = 1 + int(seed % 3);
          c.tokens = std::vector<int>{1, 37, 130}[seed % 3];
          c.head_dim = std::vector<int>{64, 80, 128}[(seed / 3) % 3];
          c.int4_group = std::vector<int>{0, 16, 32}[(seed / 2) % 3];
          c.tier_odds = mixes[seed % mixes.size()];
          c.seed = seed++;
          out.push_back(c);
          // The same case with INT2 declared (format 1.1) and INT2 tokens mixed in.
          c.int2 = true;
          c.int2_group = std::vector<int>{QuantSettings::kAutoGroup, 16, 4}[seed % 3];
          c.tier_odds = std::vector<std::vector<double>>{{1, 1, 1, 1, 1}, {0, 0, 0, 0, 1}, {1, 0, 1, 2, 3}}[seed % 3];
          c.seed = seed++;
          out.push_back(c);
        }
  return out;
}

std::string name(const CacheCase& c) {
  return std::string(dtype_name(c.dtype)) + (c.layout == Layout::HTD ? " htd" : " thd") + " transform " +
         std::to_string(int(c.transform)) + " zstd " + std::to_string(c.zstd_level) + (c.int2 ? " int2" : "") + " seed " +
         std::to_string(c.seed);
}

TEST_F(GpuContainer, EncodeIsByteIdenticalToTheCpu) {
  for (const CacheCase& c : sweep()) {
    const TestCache tc(c);
    VectorSink cpu, gpu;
    const EncodeResult want = encode(tc.cache, tc.plan, cpu);
    int done = 0;
    EncodeOptions o;
    o.layer_done = [&done](int l) { EXPECT_EQ(l, done++); };
    const EncodeResult got = encode_cuda(tc.cache, tc.plan, gpu, o);
    EXPECT_TRUE(cpu.bytes == gpu.bytes) << name(c);
    EXPECT_EQ(done, c.layers);
    EXPECT_EQ(got.bytes.total, want.bytes.total);
    EXPECT_EQ(got.info.tiers.k, want.info.tiers.k);
  }
}

TEST_F(GpuContainer, EncodeFromDeviceResidentKv) {
  CacheCase c;
  c.transform = KeyTransform::centre;
  c.layout = Layout::THD;
  TestCache tc(c);
  std::vector<std::unique_ptr<DevBuf>> bufs;
  for (int l = 0; l < c.layers; ++l)
    for (int kv = 0; kv < 2; ++kv) {
      const std::vector<uint8_t>& host = kv ? tc.v[size_t(l)] : tc.k[size_t(l)];
      bufs.push_back(std::make_unique<DevBuf>(host.size()));
      bufs.back()->upload(host);
      TensorView& t = kv ? tc.cache.layers[size_t(l)].v : tc.cache.layers[size_t(l)].k;
      t.bytes = {static_cast<const std::byte*>(bufs.back()->get()), host.size()};
    }
  const TestCache host(c);
  VectorSink cpu, gpu;
  encode(host.cache, host.plan, cpu);
  encode_cuda(tc.cache, tc.plan, gpu);
  EXPECT_TRUE(cpu.bytes == gpu.bytes);
}

TEST_F(GpuContainer, DecodeEqualsTheCpuReader) {
  for (const CacheCase& c : sweep()) {
    const TestCache tc(c);
    VectorSink file;
    encode(tc.cache, tc.plan, file);
    for (std::optional<DType> od : {std::optional<DType>{}, std::optional<DType>{DType::F32}}) {
      SpanSource a(file.bytes), b(file.bytes);
      ContainerReader cpu_reader(a, "cpu"), gpu_reader(b, "gpu");
      LayerDecoder gpu_decoder(gpu_reader);
      DecodedLayer want, got;
      int l = 0;
      // Layer 1 is skipped on both sides, as `skv decode --layers` does.
      while (cpu_reader.next_layer(want, od, l == 1)) {
        ASSERT_TRUE(gpu_decoder.next_layer(got, od, l == 1)) << name(c);
        EXPECT_EQ(got.index, l);
        EXPECT_EQ(got.tiers.v, want.tiers.v);
        if (l != 1) {
          EXPECT_EQ(got.k.shape, want.k.shape);
          EXPECT_EQ(got.k.dtype, want.k.dtype);
          EXPECT_TRUE(std::equal(got.k.data.span().begin(), got.k.data.span().end(), want.k.data.span().begin()))
              << name(c) << " layer " << l << " K";
          EXPECT_TRUE(std::equal(got.v.data.span().begin(), got.v.data.span().end(), want.v.data.span().begin()))
              << name(c) << " layer " << l << " V";
          ASSERT_EQ(got.mask.has_value(), want.mask.has_value()) << name(c);
          if (want.mask) {
            EXPECT_TRUE(std::equal(got.mask->data.span().begin(), got.mask->data.span().end(),
                                   want.mask->data.span().begin()))
                << name(c);
          }
        }
        ++l;
      }
      EXPECT_FALSE(gpu_decoder.next_layer(got, od)) << name(c);
      EXPECT_EQ(l, c.layers);
    }
  }
}

// Per-layer thetas and llama3 scaling under prerope_centre: the GPU uses each layer's own table
// (one per distinct RoPE), so it writes the CPU's bytes and decodes to the CPU reader's tensors.
TEST_F(GpuContainer, PerLayerRopeMatchesTheCpu) {
  for (int scaled = 0; scaled < 2; ++scaled) {
    CacheCase c;
    c.layers = 3;
    c.transform = KeyTransform::prerope_centre;
    c.tier_odds = {1, 2, 2, 0};
    c.seed = 11 + uint32_t(scaled);
    TestCache tc(c);
    tc.cache.meta.rope_theta = {10000.0, 1000000.0, 10000.0};
    if (scaled) {
      tc.cache.meta.rope_scaling.type = RopeScalingType::llama3;
      tc.cache.meta.rope_scaling.factor = 8;
      tc.cache.meta.rope_scaling.original_max_position_embeddings = 64;
    }
    VectorSink cpu, gpu;
    encode(tc.cache, tc.plan, cpu);
    encode_cuda(tc.cache, tc.plan, gpu);
    EXPECT_TRUE(cpu.bytes == gpu.bytes) << "scaled " << scaled;
    SpanSource a(cpu.bytes), b(cpu.bytes);
    ContainerReader cpu_reader(a, "cpu"), gpu_reader(b, "gpu");
    LayerDecoder gpu_decoder(gpu_reader);
    DecodedLayer want, got;
    int l = 0;
    while (cpu_reader.next_layer(want, DType::F32)) {
      ASSERT_TRUE(gpu_decoder.next_layer(got, DType::F32));
      EXPECT_TRUE(std::equal(got.k.data.span().begin(), got.k.data.span().end(), want.k.data.span().begin()))
          << "scaled " << scaled << " layer " << l << " K";
      ++l;
    }
    EXPECT_EQ(l, c.layers);
  }
}

TEST_F(GpuContainer, NonFiniteQuantizedValueFailsLikeTheCpu) {
  CacheCase c;
  c.tier_odds = {0, 1, 0, 0};
  TestCache tc(c);
  put_value(tc.k[1], 5, c.dtype, std::numeric_limits<float>::infinity());
  VectorSink cpu, gpu;
  std::string want, got;
  try { encode(tc.cache, tc.plan, cpu); } catch (const Error& e) { want = e.what(); }
  try { encode_cuda(tc.cache, tc.plan, gpu); } catch (const Error& e) { got = e.what(); }
  EXPECT_FALSE(want.empty());
  EXPECT_EQ(got, want);
}

}  // namespace
}  // namespace skv::cuda::test
