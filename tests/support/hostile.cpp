#include "hostile.hpp"

#include <zstd.h>

#include <cstring>

#include "skv/codec.hpp"
#include "skv/synthetic.hpp"

namespace skv::test {

std::vector<std::byte> base_container(bool prerope, bool int2) {
  SyntheticOptions o;
  o.spec = "2x2x64:16";
  o.threads = 1;
  const SyntheticCache sc = make_synthetic(o);
  Plan p = Plan::uniform(2, 16, Tier::FP16);
  for (size_t i = 0; i < p.k_tiers.size(); ++i) {
    p.k_tiers[i] = Tier(int2 ? i % 5 : i % 4);
    p.v_tiers[i] = Tier(int2 ? (i + 1) % 5 : (i + 1) % 4);
  }
  p.quant.int2 = int2;
  p.quant.key_transform = prerope ? KeyTransform::prerope_centre : KeyTransform::centre;
  p.quant.zstd_level = 0;
  p.policy = "hostile-test";
  VectorSink sink;
  EncodeOptions eo;
  eo.threads = 1;
  encode(sc.cache, p, sink, eo);
  return sink.bytes;
}

std::vector<std::byte> with_manifest(const std::function<void(nlohmann::json&)>& edit, bool prerope) {
  EditableContainer c = EditableContainer::parse(base_container(prerope));
  nlohmann::json m = c.manifest();
  edit(m);
  c.set_manifest(m);
  return c.seal();
}

namespace {
// The manifest of base_container() claiming `tokens` tokens (shapes to match).
nlohmann::json claim_tokens(EditableContainer& c, int64_t tokens) {
  nlohmann::json m = c.manifest();
  m["shape"]["tokens"] = tokens;
  for (auto& t : m["tensors"]) t["k_shape"][1] = t["v_shape"][1] = tokens;
  return m;
}
}  // namespace

std::vector<std::byte> layer_claims_4g() {
  EditableContainer c = EditableContainer::parse(base_container());
  c.set_manifest(claim_tokens(c, int64_t(1) << 24));
  std::vector<std::byte> f = c.seal();
  uint64_t mani;
  std::memcpy(&mani, f.data() + 64 + 8, 8);
  const size_t layr = 128 + size_t((mani + 63) / 64 * 64);
  const uint64_t claim = uint64_t(4) << 30;
  std::memcpy(f.data() + layr + 8, &claim, 8);
  rehash_header(f, layr);
  f.resize(layr + 64);
  return f;
}

std::vector<std::byte> claims_tokens(int64_t tokens, bool prerope) {
  EditableContainer c = EditableContainer::parse(base_container(prerope));
  c.set_manifest(claim_tokens(c, tokens));
  return c.seal();
}

std::vector<std::byte> rope_table_2p24() { return claims_tokens(int64_t(1) << 24, true); }

std::vector<std::byte> zstd_claims_4g() {
  EditableContainer c = EditableContainer::parse(base_container());
  // 1 layer, 1 head, 2^20 tokens of D = 2048, all FP16: K and V FP16 streams of 4 GiB each.
  const int64_t T = int64_t(1) << 20, D = 2048;
  nlohmann::json m = c.manifest();
  m["shape"] = {{"layers", 1}, {"kv_heads", 1}, {"tokens", T}, {"head_dim", D}};
  m["tensors"] = nlohmann::json::array({m["tensors"][0]});
  m["tensors"][0]["k_shape"] = m["tensors"][0]["v_shape"] = {1, T, D};
  m["quant"]["int8"]["group"] = m["quant"]["int4"]["group"] = 32;
  m["quant"]["key_transform"] = "none";
  m["drops"] = 0;
  c.set_manifest(m);
  auto zstd = [](const std::vector<uint8_t>& raw) {
    std::vector<uint8_t> z(ZSTD_compressBound(raw.size()));
    z.resize(ZSTD_compress(z.data(), z.size(), raw.data(), raw.size(), 19));
    return z;
  };
  std::vector<EditStream> s(13);
  const std::vector<uint8_t> maps(size_t(T), 0);  // all FP16
  const std::vector<uint8_t> bit(64 << 10, 0);    // a real frame, of 64 KiB (not 4 GiB)
  for (int kv = 0; kv < 2; ++kv) {
    s[size_t(kv)] = {1, uint64_t(T), zstd(maps)};
    s[size_t(kv ? 8 : 3)] = {1, uint64_t(2 * T * D), zstd(bit)};
  }
  c.set_streams(0, s);
  c.sections.erase(c.sections.begin() + 2);  // layer 1
  return c.seal(false);
}

std::string deep_json_array(int depth) { return std::string(size_t(depth), '[') + std::string(size_t(depth), ']'); }

std::vector<std::byte> deep_shape_safetensors(int depth) {
  const std::string h = R"({"layers.0.k":{"dtype":"F16","shape":)" + deep_json_array(depth) +
                        R"(,"data_offsets":[0,16]},"layers.0.v":{"dtype":"F16","shape":[1,2,4],"data_offsets":[16,32]}})";
  std::vector<std::byte> f(8 + h.size() + 32, std::byte{0});
  const uint64_t n = h.size();
  std::memcpy(f.data(), &n, 8);
  std::memcpy(f.data() + 8, h.data(), h.size());
  return f;
}

}  // namespace skv::test
