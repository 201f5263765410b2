// GPU encode/decode against the CPU restatement of skv.md (layer_ref), byte for byte, over sweeps
// of dtype, head_dim, group sizes, layout, key transform, token count and tier mixes. Every test
// skips (with the reason) when no CUDA device is present.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <sstream>

#include "gpu_util.hpp"
#include "layer_ref.hpp"
#include "skv/cuda/pipeline.hpp"
#include "skv/error.hpp"
#include "test_data.hpp"

namespace skv::cuda::test {
namespace {

struct Case {
  DType dtype = DType::F16;
  int H = 2, T = 37, D = 64, g8 = 0, g4 = 32;
  int g2 = -1;  // >= 0 (or QuantSettings::kAutoGroup with int2): INT2 declared
  bool int2 = false;
  Layout layout = Layout::HTD;
  KeyTransform kt = KeyTransform::none;
  RopeStyle rope = RopeStyle::neox;
  std::vector<double> weights{1, 1, 1, 1};
  uint32_t seed = 1;
};

std::string describe(const Case& c) {
  std::ostringstream o;
  o << dtype_name(c.dtype) << " H=" << c.H << " T=" << c.T << " D=" << c.D << " g8=" << c.g8
    << " g4=" << c.g4 << (c.layout == Layout::THD ? " THD" : " HTD") << " kt=" << int(c.kt)
    << (c.rope == RopeStyle::gptj ? " gptj" : " neox") << " weights=" << c.weights[0] << ","
    << c.weights[1] << "," << c.weights[2] << "," << c.weights[3]
    << (c.int2 ? "," + std::to_string(c.weights.size() > 4 ? c.weights[4] : 0.0) + " int2 g2=" + std::to_string(c.g2) : "")
    << " seed=" << c.seed;
  return o.str();
}

LayerGeometry geometry(const Case& c) {
  KvShape s;
  s.layers = 1;
  s.kv_heads = c.H;
  s.tokens = c.T;
  s.head_dim = c.D;
  s.dtype = c.dtype;
  QuantSettings q;
  q.int8_group = c.g8;
  q.int4_group = c.g4;
  q.key_transform = c.kt;
  q.int2 = c.int2;
  q.int2_group = c.g2;
  return make_geometry(s, c.layout, q, c.rope, "test");
}

// Counts differing bytes per stream and names the first one.
::testing::AssertionResult same_payload(const LayerPlan& p, const std::vector<uint8_t>& gpu,
                                        const std::vector<uint8_t>& ref) {
  if (gpu.size() != ref.size())
    return ::testing::AssertionFailure() << "size " << gpu.size() << " vs " << ref.size();
  size_t bad = 0, first = SIZE_MAX;
  for (size_t i = 0; i < gpu.size(); ++i)
    if (gpu[i] != ref[i]) {
      ++bad;
      first = std::min(first, i);
    }
  if (!bad) return ::testing::AssertionSuccess();
  int stream = -1;
  for (int s = 0; s < kLayerStreams; ++s)
    if (first >= p.offset[size_t(s)]) stream = s;
  return ::testing::AssertionFailure()
         << bad << " of " << gpu.size() << " bytes differ; first at " << first << " (stream " << stream
         << ", byte " << (stream >= 0 ? first - p.offset[size_t(stream)] : first) << "): gpu "
         << int(gpu[first]) << " ref " << int(ref[first]);
}

struct Encoded {
  LayerPlan plan;
  std::vector<uint8_t> gpu, ref;
  LayerStatus status;
  bool ref_ok = false;
  ref::BadRow ref_bad;
  std::vector<float> rope;
};

Encoded run_encode(const LayerGeometry& g, const std::vector<uint8_t>& k, const std::vector<uint8_t>& v,
                   const std::vector<uint8_t>& km, const std::vector<uint8_t>& vm,
                   const std::vector<uint8_t>* device_km = nullptr) {
  Encoded e;
  e.plan = plan_layer(g, km.data(), vm.data(), "test");
  e.rope.resize(rope_table_floats(g));
  if (g.key_transform == KeyTransform::prerope_centre) fill_rope_table(g, 10000.0, 3, e.rope.data());
  e.ref_ok = ref::encode_layer(e.plan, k.data(), v.data(), km.data(), vm.data(), e.rope.data(), e.ref, &e.ref_bad);

  DevBuf dk(k.size()), dv(v.size()), dkm(km.size()), dvm(vm.size()), drope(e.rope.size() * 4 + 4);
  dk.upload(k);
  dv.upload(v);
  dkm.upload(device_km ? *device_km : km);
  dvm.upload(vm);
  drope.upload(e.rope);
  const size_t cap = max_layer_bytes(g), wsz = workspace_bytes(g);
  DevBuf out(cap), ws(wsz);
  out.poison();
  LayerInputs in;
  in.k = dk.get();
  in.v = dv.get();
  in.k_tiers = dkm.get<uint8_t>();
  in.v_tiers = dvm.get<uint8_t>();
  in.rope = g.key_transform == KeyTransform::prerope_centre ? drope.get<float>() : nullptr;
  encode_layer_async(e.plan, in, out.get<uint8_t>(), cap, ws.get(), wsz, nullptr);
  e.status = read_status(ws.get(), e.plan, nullptr);
  e.gpu = out.download(size_t(e.plan.payload_bytes));
  return e;
}

// Decodes `payload` on the GPU into every output dtype and compares with the reference decoder.
void check_decode(const LayerPlan& p, const std::vector<uint8_t>& payload, const std::vector<float>& rope,
                  const std::string& what) {
  const LayerGeometry& g = p.geo;
  const size_t n = size_t(g.kv_heads) * size_t(g.tokens) * size_t(g.head_dim);
  DevBuf dp(payload.size()), drope(rope.size() * 4 + 4), ws(workspace_bytes(g));
  dp.upload(payload);
  drope.upload(rope);
  for (DType dt : {DType::F16, DType::BF16, DType::F32}) {
    const size_t bytes = n * dtype_size(dt);
    std::vector<uint8_t> rk(bytes), rv(bytes), rmask(size_t(g.tokens));
    ref::decode_layer(p, payload.data(), rope.data(), dt, rk.data(), rv.data(), rmask.data());
    DevBuf ok(bytes), ov(bytes), om(size_t(g.tokens));
    ok.poison();
    ov.poison();
    om.poison();
    LayerOutputs out;
    out.k = ok.get();
    out.v = ov.get();
    out.dtype = dt;
    out.mask = om.get<uint8_t>();
    decode_layer_async(p, dp.get<uint8_t>(), g.key_transform == KeyTransform::prerope_centre ? drope.get<float>() : nullptr,
                       out, ws.get(), workspace_bytes(g), nullptr);
    const LayerStatus st = read_status(ws.get(), p, nullptr);
    EXPECT_TRUE(st.ok()) << what;
    for (int kv = 0; kv < 2; ++kv) {
      const std::vector<uint8_t> got = (kv ? ov : ok).download(bytes);
      const std::vector<uint8_t>& want = kv ? rv : rk;
      size_t bad = 0, first = SIZE_MAX;
      for (size_t i = 0; i < bytes; ++i)
        if (got[i] != want[i]) {
          ++bad;
          first = std::min(first, i);
        }
      EXPECT_EQ(bad, 0u) << what << " decode to " << dtype_name(dt) << (kv ? " V" : " K")
                         << ": first differing element " << (bad ? first / dtype_size(dt) : 0);
    }
    EXPECT_EQ(om.download(size_t(g.tokens)), rmask) << what << " mask";
  }
}

void run_case(const Case& c) {
  const std::string what = describe(c);
  SCOPED_TRACE(what);
  const LayerGeometry g = geometry(c);
  const auto k = make_tensor(g, c.seed * 4 + 0), v = make_tensor(g, c.seed * 4 + 1);
  const auto km = make_tiers(c.T, c.seed * 4 + 2, c.weights), vm = make_tiers(c.T, c.seed * 4 + 3, c.weights);
  const Encoded e = run_encode(g, k, v, km, vm);
  ASSERT_TRUE(e.ref_ok) << "test data must be quantizable";
  EXPECT_TRUE(e.status.ok()) << "bad row kv " << e.status.bad_kv << " head " << e.status.bad_head
                             << " token " << e.status.bad_token << " map " << e.status.map_mismatch;
  EXPECT_TRUE(same_payload(e.plan, e.gpu, e.ref));
  check_decode(e.plan, e.ref, e.rope, what);
}

// Group sizes that exercise every chunk width: whole row, 16/32, odd INT8 groups (one element per
// thread) and INT4 pairs.
std::vector<std::pair<int, int>> groups_for(int D) {
  std::vector<std::pair<int, int>> out{{0, 0}, {16, D % 32 == 0 ? 32 : 16}, {D % 5 == 0 ? 5 : 1, 2}};
  if (D % 64 == 0) out.push_back({64, 64});
  return out;
}

TEST_F(Gpu, EncodeDecodeSweepMatchesReference) {
  const std::vector<std::vector<double>> mixes{{1, 1, 1, 1}, {0, 1, 1, 0}, {6, 1, 1, 0}, {1, 0, 0, 1}, {0, 0, 1, 0}};
  const int tokens[] = {1, 2, 37, 301};
  uint32_t seed = 1;
  for (DType dt : {DType::F16, DType::BF16, DType::F32})
    for (int D : {64, 80, 96, 128, 256})
      for (Layout layout : {Layout::HTD, Layout::THD})
        for (int ti = 0; ti < 4; ++ti) {
          const KeyTransform kt = ti == 0 ? KeyTransform::none : ti == 1 ? KeyTransform::centre : KeyTransform::prerope_centre;
          const auto gs = groups_for(D);
          Case c;
          c.dtype = dt;
          c.D = D;
          c.layout = layout;
          c.kt = kt;
          c.rope = ti == 3 ? RopeStyle::gptj : RopeStyle::neox;
          c.g8 = gs[seed % gs.size()].first;
          c.g4 = gs[(seed / 2) % gs.size()].second;
          c.T = tokens[seed % 4];
          c.H = 1 + int(seed % 3);
          c.weights = mixes[seed % mixes.size()];
          c.seed = seed++;
          run_case(c);
          if (HasFatalFailure()) return;
        }
}

// INT2 (format 1.1, 17 streams): the same sweep with INT2 declared and INT2 tokens mixed in,
// INT2 groups from 4 (one byte per thread) to the whole row.
TEST_F(Gpu, Int2EncodeDecodeSweepMatchesReference) {
  const std::vector<std::vector<double>> mixes{{1, 1, 1, 1, 1}, {0, 0, 0, 0, 1}, {2, 1, 1, 1, 3}, {0, 0, 1, 0, 1}};
  const int tokens[] = {1, 2, 37, 301};
  uint32_t seed = 1000;
  for (DType dt : {DType::F16, DType::BF16, DType::F32})
    for (int D : {64, 80, 96, 128})
      for (Layout layout : {Layout::HTD, Layout::THD})
        for (int ti = 0; ti < 4; ++ti) {
          const auto gs = groups_for(D);
          Case c;
          c.dtype = dt;
          c.D = D;
          c.layout = layout;
          c.kt = ti == 0 ? KeyTransform::none : ti == 1 ? KeyTransform::centre : KeyTransform::prerope_centre;
          c.rope = ti == 3 ? RopeStyle::gptj : RopeStyle::neox;
          c.g8 = gs[seed % gs.size()].first;
          c.g4 = gs[(seed / 2) % gs.size()].second;
          c.int2 = true;
          c.g2 = std::vector<int>{QuantSettings::kAutoGroup, 4, 16, 0}[(seed / 3) % 4];
          c.T = tokens[seed % 4];
          c.H = 1 + int(seed % 3);
          c.weights = mixes[seed % mixes.size()];
          c.seed = seed++;
          run_case(c);
          if (HasFatalFailure()) return;
        }
}

TEST_F(Gpu, UniformTiersAndTinyLayers) {
  for (int tier = 0; tier < 4; ++tier)
    for (int T : {1, 3, 64}) {
      Case c;
      c.T = T;
      c.D = 128;
      c.H = 8;
      c.kt = KeyTransform::centre;
      c.weights = {0, 0, 0, 0};
      c.weights[size_t(tier)] = 1;
      c.seed = uint32_t(100 + tier * 10 + T);
      run_case(c);
    }
}

TEST_F(Gpu, LargerLayerManyBlocks) {
  Case c;
  c.H = 8;
  c.T = 2053;
  c.D = 128;
  c.dtype = DType::BF16;
  c.kt = KeyTransform::prerope_centre;
  c.layout = Layout::THD;
  c.seed = 999;
  run_case(c);
}

TEST_F(Gpu, NonFiniteInQuantizedTokenIsReportedLikeTheCpu) {
  Case c;
  c.dtype = DType::F32;
  c.H = 3;
  c.T = 20;
  const LayerGeometry g = geometry(c);
  auto k = make_tensor(g, 5), v = make_tensor(g, 6);
  std::vector<uint8_t> km(20, 1), vm(20, 2);
  km[7] = 0;  // FP16 tier: NaN/Inf are stored as they are
  const float nan = NAN, inf = INFINITY, huge = -70000.0f;
  auto at = [&](int h, int t, int d) { return (size_t(h) * 20 + size_t(t)) * size_t(c.D) + size_t(d); };
  std::memcpy(k.data() + 4 * at(1, 7, 3), &nan, 4);   // FP16 tier: fine
  std::memcpy(k.data() + 4 * at(2, 9, 5), &inf, 4);   // INT8 tier: refused
  std::memcpy(v.data() + 4 * at(0, 4, 0), &huge, 4);  // INT4: minimum beyond FP16 range
  Encoded e = run_encode(g, k, v, km, vm);
  ASSERT_FALSE(e.ref_ok);
  EXPECT_EQ(e.status.bad_kv, e.ref_bad.kv);
  EXPECT_EQ(e.status.bad_head, e.ref_bad.head);
  EXPECT_EQ(e.status.bad_token, e.ref_bad.token);
  EXPECT_EQ(e.status.bad_tier, 1);
  try {
    throw_if_failed(e.status, e.plan, 4, "dump.safetensors");
    ADD_FAILURE() << "no error thrown";
  } catch (const Error& err) {
    EXPECT_EQ(err.code(), Errc::format);
    EXPECT_NE(std::string(err.what()).find("layer 4 K head 2 token 9"), std::string::npos) << err.what();
  }
  // Only the V problem left: the INT4 range check fires.
  const float one = 1.0f;
  std::memcpy(k.data() + 4 * at(2, 9, 5), &one, 4);
  e = run_encode(g, k, v, km, vm);
  ASSERT_FALSE(e.ref_ok);
  EXPECT_EQ(e.status.bad_kv, 1);
  EXPECT_EQ(e.status.bad_head, 0);
  EXPECT_EQ(e.status.bad_token, 4);
  EXPECT_EQ(e.status.bad_tier, 2);
  // The FP16-tier NaN alone is fine and stored with the CPU's NaN bits.
  std::memcpy(v.data() + 4 * at(0, 4, 0), &one, 4);
  e = run_encode(g, k, v, km, vm);
  ASSERT_TRUE(e.ref_ok);
  EXPECT_TRUE(e.status.ok());
  EXPECT_TRUE(same_payload(e.plan, e.gpu, e.ref));
  check_decode(e.plan, e.ref, e.rope, "FP16-tier NaN");
}

// INT2 rows are refused like INT4 rows, and reported as tier 4 (the status needs 3 tier bits).
TEST_F(Gpu, NonFiniteInInt2TokenIsReportedLikeTheCpu) {
  Case c;
  c.dtype = DType::F32;
  c.H = 2;
  c.T = 12;
  c.int2 = true;
  const LayerGeometry g = geometry(c);
  auto k = make_tensor(g, 7), v = make_tensor(g, 8);
  std::vector<uint8_t> km(12, 4), vm(12, 4);
  const float inf = INFINITY, huge = -70000.0f;
  auto at = [&](int h, int t, int d) { return (size_t(h) * 12 + size_t(t)) * size_t(c.D) + size_t(d); };
  std::memcpy(v.data() + 4 * at(1, 5, 9), &inf, 4);
  Encoded e = run_encode(g, k, v, km, vm);
  ASSERT_FALSE(e.ref_ok);
  EXPECT_EQ(e.status.bad_kv, 1);
  EXPECT_EQ(e.status.bad_head, 1);
  EXPECT_EQ(e.status.bad_token, 5);
  EXPECT_EQ(e.status.bad_tier, 4);
  const float one = 1.0f;
  std::memcpy(v.data() + 4 * at(1, 5, 9), &one, 4);
  std::memcpy(k.data() + 4 * at(0, 3, 0), &huge, 4);  // minimum beyond FP16 range
  e = run_encode(g, k, v, km, vm);
  ASSERT_FALSE(e.ref_ok);
  EXPECT_EQ(e.status.bad_kv, 0);
  EXPECT_EQ(e.status.bad_token, 3);
  EXPECT_EQ(e.status.bad_tier, 4);
}

TEST_F(Gpu, DeviceMapsThatDisagreeWithThePlanAreReported) {
  Case c;
  const LayerGeometry g = geometry(c);
  const auto k = make_tensor(g, 1), v = make_tensor(g, 2);
  const auto km = make_tiers(c.T, 3), vm = make_tiers(c.T, 4);
  auto other = km;
  other[0] = uint8_t((other[0] + 1) % 4);
  const Encoded e = run_encode(g, k, v, km, vm, &other);
  EXPECT_TRUE(e.status.map_mismatch);
  EXPECT_THROW(throw_if_failed(e.status, e.plan, 0, "x"), Error);
  auto invalid = km;
  invalid[1] = 9;
  EXPECT_TRUE(run_encode(g, k, v, km, vm, &invalid).status.map_mismatch);
}

TEST_F(Gpu, ArgumentsAreChecked) {
  Case c;
  const LayerGeometry g = geometry(c);
  const auto km = make_tiers(c.T, 3);
  const LayerPlan p = plan_layer(g, km.data(), km.data(), "t");
  DevBuf buf(max_layer_bytes(g) + 64), ws(workspace_bytes(g));
  LayerInputs in;
  in.k = in.v = buf.get();
  in.k_tiers = in.v_tiers = buf.get<uint8_t>();
  EXPECT_THROW(encode_layer_async(p, in, buf.get<uint8_t>() + 1, max_layer_bytes(g), ws.get(), workspace_bytes(g), nullptr), Error);
  EXPECT_THROW(encode_layer_async(p, in, buf.get<uint8_t>(), 10, ws.get(), workspace_bytes(g), nullptr), Error);
  EXPECT_THROW(encode_layer_async(p, in, buf.get<uint8_t>(), max_layer_bytes(g), ws.get(), 8, nullptr), Error);
}

TEST_F(Gpu, PipelineMatchesSingleLayerEncodes) {
  Case c;
  c.H = 4;
  c.T = 129;
  c.D = 128;
  c.kt = KeyTransform::prerope_centre;
  const LayerGeometry g = geometry(c);
  std::vector<float> rope(rope_table_floats(g));
  fill_rope_table(g, 10000.0, 3, rope.data());
  DevBuf drope(rope.size() * 4);
  drope.upload(rope);
  constexpr int L = 5;
  std::vector<std::vector<uint8_t>> k, v, km, vm;
  for (int l = 0; l < L; ++l) {
    k.push_back(make_tensor(g, uint32_t(10 * l + 1)));
    v.push_back(make_tensor(g, uint32_t(10 * l + 2)));
    km.push_back(make_tiers(c.T, uint32_t(10 * l + 3)));
    vm.push_back(make_tiers(c.T, uint32_t(10 * l + 4)));
  }
  DevBuf dk1(k[1].size());  // layer 1 from device memory, the others from host memory
  dk1.upload(k[1]);
  EncodePipeline pipe(g, drope.get<float>());
  int next = 0, seen = 0;
  for (; next < 2; ++next) pipe.submit(next == 1 ? dk1.get() : k[size_t(next)].data(), v[size_t(next)].data(), km[size_t(next)].data(), vm[size_t(next)].data());
  while (pipe.in_flight()) {
    const auto done = pipe.next("test");
    EXPECT_EQ(done.layer, seen++);
    const LayerPlan p = plan_layer(g, km[size_t(done.layer)].data(), vm[size_t(done.layer)].data(), "t");
    std::vector<uint8_t> want;
    ASSERT_TRUE(ref::encode_layer(p, k[size_t(done.layer)].data(), v[size_t(done.layer)].data(), km[size_t(done.layer)].data(),
                                  vm[size_t(done.layer)].data(), rope.data(), want));
    EXPECT_TRUE(same_payload(p, std::vector<uint8_t>(done.payload.begin(), done.payload.end()), want)) << "layer " << done.layer;
    if (next < L) {
      pipe.submit(k[size_t(next)].data(), v[size_t(next)].data(), km[size_t(next)].data(), vm[size_t(next)].data());
      ++next;
    }
  }
  EXPECT_EQ(seen, L);
}

}  // namespace
}  // namespace skv::cuda::test
