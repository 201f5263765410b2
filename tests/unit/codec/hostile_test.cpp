// Containers whose checksums are valid and whose content is hostile (issue 15): each reader rule
// rejects its case with Errc::format (or truncated) and a message naming the field, before
// allocating what the file claims. The writer refuses what the reader would reject.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "codec_test_util.hpp"
#include "hostile.hpp"
#include "skv/error.hpp"
#include "skv/json.hpp"

using namespace skv;
using namespace skv::test;
using nlohmann::json;

namespace {

// A source that does not know its size (a pipe): the reader cannot check claims up front.
struct PipeSource final : ByteSource {
  SpanSource inner;
  explicit PipeSource(std::span<const std::byte> b) : inner(b) {}
  size_t read(void* dst, size_t n) override { return inner.read(dst, n); }
};

// Decodes everything; the error (code and message) or nullopt when it decoded.
std::optional<Error> try_decode(std::span<const std::byte> bytes, bool pipe = false) {
  try {
    SpanSource span(bytes);
    PipeSource piped(bytes);
    ContainerReader r(pipe ? static_cast<ByteSource&>(piped) : span, "hostile.skv");
    r.set_threads(1);
    DecodedLayer d;
    while (r.next_layer(d)) {}
    return std::nullopt;
  } catch (const Error& e) {
    return e;
  }
}

void expect_rejected(const std::vector<std::byte>& f, const std::string& field, Errc code = Errc::format) {
  const auto e = try_decode(f);
  ASSERT_TRUE(e.has_value()) << "accepted; expected an error about " << field;
  EXPECT_EQ(e->code(), code) << e->what();
  EXPECT_NE(std::string(e->what()).find(field), std::string::npos) << e->what();
  EXPECT_EQ(std::string(e->what()).find('\n'), std::string::npos) << "not one line: " << e->what();
  EXPECT_TRUE(std::string(e->what()).starts_with("hostile.skv: ")) << e->what();
}

TEST(Hostile, BaseContainersDecode) {
  for (bool prerope : {false, true})
    for (bool int2 : {false, true}) {
      EXPECT_FALSE(try_decode(base_container(prerope, int2)).has_value());
      // Re-sealing a valid file changes nothing.
      const auto b = base_container(prerope, int2);
      EXPECT_EQ(EditableContainer::parse(b).seal(), b);
    }
}

// ---------------------------------------------------------------- JSON

TEST(Hostile, JsonParserBoundsDepthAndRejectsDuplicatesAndBom) {
  EXPECT_NO_THROW(parse_json(deep_json_array(kMaxJsonDepth), "x", "it"));
  for (const std::string& bad : {deep_json_array(kMaxJsonDepth + 1), deep_json_array(100000),
                                 std::string(R"({"a":{"b":1,"b":2}})"), std::string(R"([{"k":1},{"k":1,"k":1}])"),
                                 std::string("\xEF\xBB\xBF{}"), std::string("{}\0", 3), std::string("{} x")}) {
    try {
      parse_json(bad, "x.json", "it");
      ADD_FAILURE() << "accepted " << bad.substr(0, 40);
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::format);
      EXPECT_TRUE(std::string(e.what()).starts_with("x.json: it is not valid JSON: ")) << e.what();
    }
  }
  // The same key in sibling objects is fine.
  EXPECT_NO_THROW(parse_json(R"([{"k":1},{"k":2}])", "x", "it"));
}

TEST(Hostile, ManifestJson) {
  auto text_edit = [](const std::function<void(std::string&)>& f) {
    EditableContainer c = EditableContainer::parse(base_container());
    std::string t = c.manifest().dump();
    f(t);
    c.set_manifest_text(t);
    return c.seal();
  };
  expect_rejected(text_edit([](std::string& t) { t.insert(1, R"("format":"skv",)"); }), "duplicate key 'format'");
  expect_rejected(text_edit([](std::string& t) { t.insert(0, "\xEF\xBB\xBF"); }), "byte-order mark");
}

TEST(Hostile, ManifestNestingIsBoundedNotRecursed) {
  EditableContainer c = EditableContainer::parse(base_container());
  std::string t = c.manifest().dump();
  t.insert(1, "\"deep\":" + deep_json_array(100000) + ",");
  c.set_manifest_text(t);
  expect_rejected(c.seal(), "nested deeper than 64");
}

// ---------------------------------------------------------------- manifest rules

TEST(Hostile, TensorNamesAreDistinctValidKeys) {
  const std::pair<std::function<void(json&)>, std::string> cases[] = {
      {[](json& m) { m["tensors"][0]["v"] = m["tensors"][0]["k"]; }, "layer 0 v name 'layers.0.k' is also the name of layer 0 k"},
      {[](json& m) { m["tensors"][1]["k"] = "layers.0.k"; }, "layer 1 k name 'layers.0.k' is also the name of layer 0 k"},
      {[](json& m) { m["tensors"][0]["k"] = m["tensors"][1]["mask"]; }, "layer 1 mask name 'layers.1.mask' is also the name of layer 0 k"},
      {[](json& m) { m["tensors"][1]["mask"] = "layers.0.v"; }, "layer 1 mask name 'layers.0.v' is also the name of layer 0 v"},
      {[](json& m) { m["tensors"][0]["k"] = "__metadata__"; }, "layer 0 k name '__metadata__' is the reserved"},
      {[](json& m) { m["tensors"][1]["v"] = ""; }, "layer 1 v name '' is empty"},
      {[](json& m) { m["tensors"][0]["mask"] = "a\nb"; }, "layer 0 mask name 'a\\x0ab' holds a control character"},
      {[](json& m) { m["tensors"][0]["k"] = std::string(2000, 'k'); }, "is longer than 1024 bytes"},
  };
  for (const auto& [edit, msg] : cases) expect_rejected(with_manifest(edit), msg);
}

TEST(Hostile, ShapesAreExactlyTheLayoutsShape) {
  expect_rejected(with_manifest([](json& m) { m["tensors"][0]["k_shape"] = {2 * 16 * 64}; }), "layer 0 'k_shape' is [2048], layout HTD needs [2, 16, 64]");
  expect_rejected(with_manifest([](json& m) { m["tensors"][1]["v_shape"] = {16, 2, 64}; }), "layer 1 'v_shape' is [16,2,64], layout HTD needs [2, 16, 64]");
  expect_rejected(with_manifest([](json& m) {
                    m["layout"] = "THD";
                    m["tensors"][0]["k_shape"] = {2, 16, 64};
                  }),
                  "layout THD needs [16, 2, 64]");
  expect_rejected(with_manifest([](json& m) { m["tensors"][0]["k_shape"] = {1, 2, 16, 64}; }), "'k_shape' is [1,2,16,64]");
}

TEST(Hostile, NumbersAreFiniteAndInRange) {
  const std::pair<std::function<void(json&)>, std::string> cases[] = {
      {[](json& m) { m["rope"]["theta"] = 1e-310; }, "'rope.theta' must be a finite number >= 1"},
      {[](json& m) { m["rope"]["theta"] = 1e-3; }, "'rope.theta' must be a finite number >= 1"},
      {[](json& m) { m["rope"]["theta"] = -10000; }, "'rope.theta' must be a finite number >= 1"},
      {[](json& m) { m["rope"]["theta"] = {10000, 0.5}; }, "'rope.theta' must be a finite number >= 1"},
      {[](json& m) { m["rope"]["position_offset"] = int64_t(1) << 53; }, "'rope.position_offset' must be an integer in 0..2^40"},
      {[](json& m) { m["rope"]["position_offset"] = 1.5; }, "'rope.position_offset'"},
      {[](json& m) { m["requested_budget"] = -1; }, "'requested_budget' must be a finite number >= 0"},
      {[](json& m) { m["requested_budget"] = HUGE_VAL; }, "'requested_budget' must be a finite number"},  // dumped as null
      {[](json& m) { m["quant"]["zstd_level"] = "high"; }, "'quant.zstd_level'"},
      {[](json& m) { m["shape"]["kv_heads"] = 65537; }, "'kv_heads' must be an integer in 1..65536"},
      {[](json& m) { m["shape"]["tokens"] = 0; }, "'tokens' must be an integer in 1.."},
      {[](json& m) { m["shape"]["head_dim"] = 64.0; }, "'head_dim' must be an integer"},
      {[](json& m) { m["tensors"][0] = "layers.0.k"; }, "'tensors[0]' must be an object"},
  };
  for (const auto& [edit, msg] : cases) expect_rejected(with_manifest(edit, true), msg);
}

// The writer refuses what the reader rejects: one set of limits (skv/limits.hpp).
TEST(Hostile, WriterRefusesWhatReadersReject) {
  auto refuses = [](KvCache& c, const std::string& msg) {
    VectorSink sink;
    try {
      encode(c, Plan::uniform(c.shape.layers, c.shape.tokens, Tier::INT8), sink, {});
      ADD_FAILURE() << "wrote a container readers reject (" << msg << ")";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::invalid_argument) << e.what();
      EXPECT_NE(std::string(e.what()).find(msg), std::string::npos) << e.what();
    }
  };
  {
    auto oc = make_cache(1, 2, 4, 32);
    oc.cache.meta.rope_theta = {10000};
    oc.cache.meta.rope_style = RopeStyle::neox;
    oc.cache.meta.position_offset = int64_t(1) << 41;
    refuses(oc.cache, "'rope.position_offset'");
    oc.cache.meta.position_offset = 0;
    oc.cache.meta.rope_theta = {1e-300};
    refuses(oc.cache, "'rope.theta'");
  }
  {
    auto oc = make_cache(1, 65537, 1, 32);
    refuses(oc.cache, "'kv_heads'");
  }
  {
    auto oc = make_cache(2, 1, 4, 32);
    oc.cache.layers[1].k_name = oc.cache.layers[0].k_name;
    refuses(oc.cache, "is also the name of layer 0 k");
  }
}

// ---------------------------------------------------------------- decoded numbers

// Sets element i (of `width` bytes) of stream s of layer l to `bits`, re-sealed.
std::vector<std::byte> poke(bool int2, int l, int s, size_t i, uint32_t bits, int width) {
  EditableContainer c = EditableContainer::parse(base_container(false, int2));
  auto st = c.streams(l);
  EXPECT_GE(st[size_t(s)].bytes.size(), (i + 1) * size_t(width)) << "stream " << s << " too short";
  std::memcpy(st[size_t(s)].bytes.data() + i * size_t(width), &bits, size_t(width));
  c.set_streams(l, st);
  return c.seal();
}

TEST(Hostile, ScalesParamsAndCentresAreFinite) {
  const uint32_t nan16 = 0x7e00, inf16 = 0x7c00, neg16 = 0xbc00;  // NaN, +inf, -1
  for (uint32_t b : {nan16, inf16, neg16}) {
    expect_rejected(poke(false, 0, 5, 1, b, 2), "layer 0 stream 5 (K INT8 scales): a scale is NaN, infinite or negative");
    expect_rejected(poke(false, 1, 10, 0, b, 2), "layer 1 stream 10 (V INT8 scales)");
    expect_rejected(poke(false, 0, 7, 0, b, 2), "layer 0 stream 7 (K INT4 parameters)");   // scale
    expect_rejected(poke(true, 1, 16, 0, b, 2), "layer 1 stream 16 (V INT2 parameters)");
  }
  for (uint32_t b : {nan16, inf16}) {
    expect_rejected(poke(false, 1, 12, 1, b, 2), "layer 1 stream 12 (V INT4 parameters)");  // a minimum
    expect_rejected(poke(true, 0, 14, 3, b, 2), "layer 0 stream 14 (K INT2 parameters)");
  }
  EXPECT_FALSE(try_decode(poke(false, 0, 7, 1, neg16, 2)).has_value()) << "a negative INT4 minimum is fine";
  for (uint32_t b : {0x7fc00000u, 0x7f800000u, 0xff800000u})
    expect_rejected(poke(false, 1, 2, 5, b, 4), "layer 1 stream 2 (K centres): a centre is NaN or infinite");
}

TEST(Hostile, TrailerNumbers) {
  auto trailer = [](size_t at, double v) {
    EditableContainer c = EditableContainer::parse(base_container());
    std::memcpy(c.section("TRLR").payload.data() + at, &v, 8);
    return c.seal(false);
  };
  expect_rejected(trailer(8, std::nan("")), "trailer: achieved_budget");
  expect_rejected(trailer(8, 0.5), "trailer: achieved_budget");
  expect_rejected(trailer(16, std::nan("")), "trailer: nominal_budget");
  expect_rejected(trailer(16, -0.25), "trailer: nominal_budget");
  EditableContainer c = EditableContainer::parse(base_container());
  const uint64_t one = 1;
  std::memcpy(c.section("TRLR").payload.data() + 24, &one, 8);
  expect_rejected(c.seal(false), "trailer: raw_bytes");
}

// ---------------------------------------------------------------- allocation bounds

TEST(Hostile, LayerClaimOfGigabytesIsNotAllocated) {
  const auto f = layer_claims_4g();
  EXPECT_LT(f.size(), 1200u);
  for (bool pipe : {false, true}) {  // size known: refused at once; a pipe: grows only as bytes arrive
    const auto e = try_decode(f, pipe);
    ASSERT_TRUE(e.has_value());
    EXPECT_EQ(e->code(), Errc::truncated) << e->what();
    EXPECT_NE(std::string(e->what()).find("section LAYR"), std::string::npos) << e->what();
  }
}

TEST(Hostile, RopeTableIsNotBuiltFromTheManifest) {
  const auto f = rope_table_2p24();
  SpanSource src(f);
  ContainerReader r(src, "hostile.skv");  // a 4 GiB table here, before the fix
  EXPECT_EQ(r.info().shape.tokens, 1 << 24);
  expect_rejected(f, "layer 0 stream 0: holds 16 bytes, tier maps imply 16777216");
}

TEST(Hostile, ZstdClaimIsNotAllocatedBeforeItDecodes) {
  const auto f = zstd_claims_4g();
  EXPECT_LT(f.size(), 8000u);
  expect_rejected(f, "layer 0 stream 3: zstd frame does not decode to its size");
}

TEST(Hostile, GrowingReadsStillDecode) {
  // Through a pipe-like source every payload is read in growing steps: same output.
  const auto f = base_container(true, true);
  EXPECT_FALSE(try_decode(f, true).has_value());
}

}  // namespace
