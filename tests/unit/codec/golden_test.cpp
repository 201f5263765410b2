// Golden containers (tests/golden/): the encoder must keep producing the committed bytes (a change
// means a format change: bump the version and regenerate), every golden must decode to its
// committed expected output, and the bad goldens must fail with the right error.
// Regenerate with: SKV_REGEN_GOLDEN=1 ./skv_test_codec --gtest_filter='Golden*'
#define XXH_INLINE_ALL
#include <gtest/gtest.h>
#include <xxhash.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "codec_test_util.hpp"
#include "skv/error.hpp"

using namespace skv;
using namespace skv::test;

namespace {

const std::filesystem::path kDir = std::filesystem::path(SKV_SOURCE_DIR) / "tests" / "golden";

bool regen() {
  const char* e = std::getenv("SKV_REGEN_GOLDEN");
  return e && *e == '1';
}

struct GoldenCase {
  const char* name;
  bool compare_bytes;  // false when the bytes depend on the zstd library version
  OwnedCache cache;
  Plan plan;
};

std::vector<GoldenCase> cases() {
  std::vector<GoldenCase> v;
  {
    auto oc = make_cache(2, 2, 7, 64, DType::F16, Layout::HTD, 101, 3.0f);
    Plan p = random_plan(2, 7, 1);
    p.quant.key_transform = KeyTransform::centre;
    p.requested_budget = 0.5;
    v.push_back({"f16_htd_mixed_centre", true, std::move(oc), p});
  }
  {
    auto oc = make_cache(1, 2, 6, 80, DType::BF16, Layout::THD, 102, 2.0f);
    oc.cache.meta.rope_theta = {10000.0};
    oc.cache.meta.rope_style = RopeStyle::neox;
    oc.cache.meta.position_offset = 3;
    Plan p = random_plan(1, 6, 2);
    p.quant.int8_group = 16;
    p.quant.int4_group = 16;
    p.quant.key_transform = KeyTransform::prerope_centre;
    v.push_back({"bf16_thd_prerope", true, std::move(oc), p});
  }
  {
    auto oc = make_cache(1, 1, 4, 96, DType::F32, Layout::HTD, 103);
    Plan p = random_plan(1, 4, 3, false);
    v.push_back({"f32_htd_nodrop", true, std::move(oc), p});
  }
  {
    auto oc = make_cache(2, 1, 9, 64, DType::F16, Layout::THD, 104);
    Plan p = random_plan(2, 9, 4);
    p.quant.zstd_level = 3;
    v.push_back({"f16_thd_zstd", false, std::move(oc), p});
  }
  {
    // Format 1.1: INT2 declared (17 streams per layer, 112-byte trailer), INT2 among all tiers.
    auto oc = make_cache(2, 2, 9, 64, DType::F16, Layout::HTD, 105, 2.0f);
    Plan p = random_plan(2, 9, 5);
    Rng rng(6);
    for (auto* tiers : {&p.k_tiers, &p.v_tiers})
      for (Tier& t : *tiers)
        if (rng.below(3) == 0) t = Tier::INT2;
    p.quant.int2 = true;
    p.quant.int2_group = 16;
    p.quant.key_transform = KeyTransform::centre;
    v.push_back({"f16_htd_int2_centre", true, std::move(oc), p});
  }
  return v;
}

std::vector<std::byte> read_file(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  EXPECT_TRUE(f.good()) << "missing golden file " << p << " (regenerate with SKV_REGEN_GOLDEN=1)";
  std::vector<char> c((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::vector<std::byte> b(c.size());
  std::memcpy(b.data(), c.data(), c.size());
  return b;
}
void write_file(const std::filesystem::path& p, const std::vector<std::byte>& b) {
  std::ofstream f(p, std::ios::binary);
  f.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
}

std::vector<std::byte> encode_golden(const GoldenCase& c) {
  VectorSink sink;
  EncodeOptions o;
  o.threads = 1;
  o.producer = "skv golden";  // independent of the library version
  encode(c.cache.cache, c.plan, sink, o);
  return sink.bytes;
}

// The expected-output format (tests/golden/README.md): per layer, K bytes, V bytes, then the
// mask bytes when the layer has a mask; raw little-endian in the source dtype and layout.
std::vector<std::byte> decoded_bytes(const std::vector<std::byte>& container) {
  std::vector<std::byte> out;
  for (const DecodedLayer& d : decode_all(container)) {
    for (const Tensor* t : {&d.k, &d.v}) out.insert(out.end(), t->data.data(), t->data.data() + t->data.size());
    if (d.mask) out.insert(out.end(), d.mask->data.data(), d.mask->data.data() + d.mask->data.size());
  }
  return out;
}

void rehash_header(std::vector<std::byte>& b, size_t at) {
  const uint64_t h = XXH3_64bits(b.data() + at, 56);
  std::memcpy(b.data() + at + 56, &h, 8);
}

// The bad goldens, derived from the first good one.
std::vector<std::pair<std::string, std::vector<std::byte>>> bad_goldens(const std::vector<std::byte>& good) {
  std::vector<std::pair<std::string, std::vector<std::byte>>> v;
  auto b = good;
  b[1] = std::byte{'Z'};
  v.emplace_back("bad_magic", b);
  b = good;
  b[b.size() - 300] ^= std::byte{0x10};
  v.emplace_back("bad_checksum", b);
  b = good;
  b[8] = std::byte{2};  // major version 2
  rehash_header(b, 0);
  v.emplace_back("future_major", b);
  // Tier code 4 in layer 0's K map, with every checksum recomputed.
  b = good;
  uint64_t mani_size;
  std::memcpy(&mani_size, b.data() + 64 + 8, 8);
  const size_t layr = 128 + size_t((mani_size + 63) / 64 * 64);
  uint64_t size;
  std::memcpy(&size, b.data() + layr + 8, 8);
  b[layr + 64 + 320] = std::byte{4};
  const uint64_t ph = XXH3_64bits(b.data() + layr + 64, size_t((size + 63) / 64 * 64));
  std::memcpy(b.data() + layr + 48, &ph, 8);
  rehash_header(b, layr);
  v.emplace_back("reserved_tier", b);
  return v;
}

TEST(Golden, EncoderBytesAreUnchanged) {
  for (const GoldenCase& c : cases()) {
    const auto bytes = encode_golden(c);
    const auto path = kDir / (std::string(c.name) + ".skv");
    if (regen()) {
      write_file(path, bytes);
      write_file(kDir / (std::string(c.name) + ".expected"), decoded_bytes(bytes));
      if (std::string(c.name) == "f16_htd_mixed_centre")
        for (const auto& [name, bad] : bad_goldens(bytes)) write_file(kDir / ("bad_" + name.substr(name.find('_') + 1) + ".skv"), bad);
      continue;
    }
    if (c.compare_bytes) {
      EXPECT_EQ(read_file(path), bytes) << c.name << ": encoder output changed; a format change needs "
                                        << "a version bump and new goldens";
    }
  }
}

TEST(Golden, GoodFilesDecodeToExpectedOutput) {
  for (const GoldenCase& c : cases()) {
    const auto container = read_file(kDir / (std::string(c.name) + ".skv"));
    const auto expected = read_file(kDir / (std::string(c.name) + ".expected"));
    ASSERT_FALSE(container.empty());
    EXPECT_EQ(decoded_bytes(container), expected) << c.name;
  }
}

TEST(Golden, BadFilesFailWithTheirError) {
  const std::pair<const char*, Errc> bad[] = {{"bad_magic", Errc::format},
                                              {"bad_checksum", Errc::checksum},
                                              {"bad_major", Errc::unsupported},
                                              {"bad_tier", Errc::unsupported}};
  for (const auto& [name, code] : bad) {
    const auto bytes = read_file(kDir / (std::string(name) + ".skv"));
    ASSERT_FALSE(bytes.empty()) << name;
    try {
      decode_all(bytes);
      ADD_FAILURE() << name << " decoded";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), code) << name << ": " << e.what();
    }
  }
}

}  // namespace
