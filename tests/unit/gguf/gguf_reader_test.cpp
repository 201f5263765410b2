#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "gguf_builder.hpp"
#include "skv/error.hpp"
#include "skv/formats/gguf.hpp"

using namespace skv;
using skv::test::GgufBuilder;

namespace {

// Every metadata value type, nested arrays, general.alignment = 64, two F32 tensors.
GgufBuilder valid_file() {
  GgufBuilder g;
  g.header(2, 15);
  g.str("a.u8").raw<uint32_t>(0).raw<uint8_t>(200);
  g.str("a.i8").raw<uint32_t>(1).raw<int8_t>(-5);
  g.str("a.u16").raw<uint32_t>(2).raw<uint16_t>(60000);
  g.str("a.i16").raw<uint32_t>(3).raw<int16_t>(-30000);
  g.kv_u32("a.u32", 4000000000u);
  g.str("a.i32").raw<uint32_t>(5).raw<int32_t>(-2000000000);
  g.str("a.f32").raw<uint32_t>(6).raw<float>(1.5f);
  g.str("a.bool").raw<uint32_t>(7).raw<uint8_t>(1);
  g.kv_str("a.str", "héllo");
  g.str("a.u64").raw<uint32_t>(10).raw<uint64_t>(uint64_t(1) << 40);
  g.str("a.i64").raw<uint32_t>(11).raw<int64_t>(-(int64_t(1) << 40));
  g.str("a.f64").raw<uint32_t>(12).raw<double>(-0.25);
  g.str("a.strs").raw<uint32_t>(9).raw<uint32_t>(8).raw<uint64_t>(2).str("x").str("yz");
  g.str("a.nested").raw<uint32_t>(9).raw<uint32_t>(9).raw<uint64_t>(1)  // [[7, 8]] of i32
      .raw<uint32_t>(5).raw<uint64_t>(2).raw<int32_t>(7).raw<int32_t>(8);
  g.kv_u32("general.alignment", 64);
  g.tensor("w", {3, 2}, 0, 0);   // 6 floats = 24 bytes
  g.tensor("b", {4}, 0, 64);     // next aligned offset
  g.pad_to(64);
  float w[6] = {1, 2, 3, 4, 5, 6};
  g.bytes(w, sizeof w).pad_to(64);
  float bias[4] = {-1, -2, -3, -4};
  g.bytes(bias, sizeof bias);
  return g;
}

std::string parse_error(const std::vector<std::byte>& b, Errc want) {
  try {
    gguf::File::parse(b, "t.gguf");
  } catch (const Error& e) {
    EXPECT_EQ(int(e.code()), int(want)) << e.what();
    const std::string msg = e.what();
    EXPECT_EQ(msg.rfind("t.gguf: ", 0), 0u) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    return msg;
  }
  ADD_FAILURE() << "parse did not fail";
  return {};
}

}  // namespace

TEST(GgufReader, ParsesEveryValueTypeAndTensors) {
  const auto g = valid_file();
  const auto f = gguf::File::parse(g.b, "t.gguf");
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), 64u);
  EXPECT_EQ(f.metadata().size(), 15u);
  EXPECT_EQ(f.find("a.u8")->u, 200u);
  EXPECT_EQ(f.find("a.i8")->i, -5);
  EXPECT_EQ(f.find("a.u16")->u, 60000u);
  EXPECT_EQ(f.find("a.i16")->i, -30000);
  EXPECT_EQ(f.get_uint("a.u32"), 4000000000u);
  EXPECT_EQ(f.find("a.i32")->i, -2000000000);
  EXPECT_EQ(f.get_float("a.f32"), 1.5);
  EXPECT_EQ(f.get_bool("a.bool"), true);
  EXPECT_EQ(f.get_string("a.str"), "héllo");
  EXPECT_EQ(f.get_uint("a.u64"), uint64_t(1) << 40);
  EXPECT_EQ(f.find("a.i64")->i, -(int64_t(1) << 40));
  EXPECT_EQ(f.get_float("a.f64"), -0.25);
  EXPECT_EQ(f.get_strings("a.strs"), (std::vector<std::string>{"x", "yz"}));
  const gguf::Value* n = f.find("a.nested");
  ASSERT_EQ(n->items.size(), 1u);
  ASSERT_EQ(n->items[0].items.size(), 2u);
  EXPECT_EQ(n->items[0].items[1].i, 8);
  EXPECT_FALSE(f.find("missing"));
  EXPECT_THROW(f.get_string("a.u32"), Error);
  EXPECT_THROW(f.get_uint("a.i8"), Error);  // negative
  EXPECT_THROW(f.require_uint("missing"), Error);

  ASSERT_EQ(f.tensors().size(), 2u);
  const auto* w = f.tensor("w");
  ASSERT_TRUE(w);
  EXPECT_EQ(w->shape(), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(w->nbytes, 24u);
  const auto wv = f.dequantize(*w);
  EXPECT_EQ(wv, (std::vector<float>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(f.dequantize(*f.tensor("b")), (std::vector<float>{-1, -2, -3, -4}));
  EXPECT_EQ(f.data_offset() % 64, 0u);
}

TEST(GgufReader, OpensFromDiskWithMmap) {
  const auto g = valid_file();
  const auto path = std::filesystem::temp_directory_path() / "skv_gguf_reader_test.gguf";
  {
    std::ofstream o(path, std::ios::binary);
    o.write(reinterpret_cast<const char*>(g.b.data()), std::streamsize(g.b.size()));
  }
  const auto f = gguf::File::open(path.string());
  EXPECT_EQ(f.dequantize(*f.tensor("b"))[3], -4.0f);
  std::filesystem::remove(path);
  EXPECT_THROW(gguf::File::open(path.string()), Error);
}

TEST(GgufReader, DefaultAlignmentIs32) {
  GgufBuilder g;
  g.header(1, 0).tensor("t", {2}, 1, 0).pad_to(32);
  const uint16_t h[2] = {0x3C00, 0xC000};  // 1.0, -2.0
  g.bytes(h, sizeof h);
  const auto f = gguf::File::parse(g.b, "t.gguf");
  EXPECT_EQ(f.data_offset(), 32u * ((g.b.size() - 4 + 31) / 32));
  EXPECT_EQ(f.dequantize(f.tensors()[0]), (std::vector<float>{1.0f, -2.0f}));
}

TEST(GgufReader, RejectsBadHeader) {
  auto g = valid_file();
  g.b[0] = std::byte{'X'};
  parse_error(g.b, Errc::format);
  parse_error(GgufBuilder().header(0, 0, 1).b, Errc::unsupported);
  parse_error(GgufBuilder().header(0, 0, 4).b, Errc::unsupported);
  auto h = GgufBuilder().header(0, 0).b;
  h.resize(10);
  parse_error(h, Errc::truncated);
  parse_error(GgufBuilder().header(uint64_t(1) << 40, 0).b, Errc::format);
  parse_error(GgufBuilder().header(0, uint64_t(1) << 40).b, Errc::format);
}

TEST(GgufReader, RejectsEveryTruncation) {
  const auto g = valid_file();
  // Cutting anywhere before the last tensor's end must fail, never read out of bounds.
  for (size_t n = 0; n < g.b.size(); n += 3) {
    std::vector<std::byte> cut(g.b.begin(), g.b.begin() + std::ptrdiff_t(n));
    EXPECT_THROW(gguf::File::parse(cut, "t.gguf"), Error) << n;
  }
}

TEST(GgufReader, RejectsBadMetadata) {
  GgufBuilder g;
  g.header(0, 1).str("k").raw<uint32_t>(13).raw<uint32_t>(0);
  EXPECT_NE(parse_error(g.b, Errc::format).find("unknown value type"), std::string::npos);
  g.header(0, 1).str("k").raw<uint32_t>(7).raw<uint8_t>(2);
  EXPECT_NE(parse_error(g.b, Errc::format).find("bool"), std::string::npos);
  g.header(0, 2).kv_u32("k", 1).kv_u32("k", 2);
  EXPECT_NE(parse_error(g.b, Errc::format).find("duplicate metadata key 'k'"), std::string::npos);
  g.header(0, 1).kv_u32("", 1);
  parse_error(g.b, Errc::format);
  // A string length larger than the cap, and one larger than the file.
  g.header(0, 1).raw<uint64_t>(uint64_t(1) << 60);
  parse_error(g.b, Errc::format);
  g.header(0, 1).str("k").raw<uint32_t>(8).raw<uint64_t>(1000).raw<uint32_t>(0);
  parse_error(g.b, Errc::truncated);
  // An array whose length cannot fit in the bytes left.
  g.header(0, 1).str("k").raw<uint32_t>(9).raw<uint32_t>(4).raw<uint64_t>(1000000).raw<uint32_t>(1);
  EXPECT_NE(parse_error(g.b, Errc::format).find("array length"), std::string::npos);
  g.header(0, 1).str("k").raw<uint32_t>(9).raw<uint32_t>(42).raw<uint64_t>(0);
  parse_error(g.b, Errc::format);
  // Arrays nested past the depth cap.
  g.header(0, 1).str("k");
  for (int d = 0; d < 6; ++d) g.raw<uint32_t>(9).raw<uint32_t>(9).raw<uint64_t>(1);
  parse_error(g.b, Errc::format);
}

// A u8 array costs ~100x its bytes once parsed: a 48 MiB array would take 4.6 GiB (issue 15).
// The parsed metadata is bounded instead (Limits::max_metadata_bytes), before anything is reserved.
TEST(GgufReader, BoundsParsedMetadataMemory) {
  GgufBuilder g;
  const uint64_t n = uint64_t(48) << 20;
  g.header(0, 1).str("tokenizer.ggml.precompiled_charsmap").raw<uint32_t>(9).raw<uint32_t>(0).raw<uint64_t>(n);
  g.b.resize(g.b.size() + n);
  EXPECT_NE(parse_error(g.b, Errc::format).find("array of 50331648 values would take the parsed metadata past its 256 MiB limit"),
            std::string::npos);
  // Many arrays, each small: charged in total.
  gguf::Limits lim;
  lim.max_metadata_bytes = 1 << 20;
  g.header(0, 3);
  for (const char* k : {"a", "b", "c"}) {
    g.str(k).raw<uint32_t>(9).raw<uint32_t>(0).raw<uint64_t>(4000);
    g.b.resize(g.b.size() + 4000);
  }
  EXPECT_THROW(gguf::File::parse(g.b, "t.gguf", lim), Error);
  lim.max_metadata_bytes = 64 << 20;
  EXPECT_NO_THROW(gguf::File::parse(g.b, "t.gguf", lim));
}

TEST(GgufReader, RejectsBadAlignment) {
  GgufBuilder g;
  g.header(0, 1).kv_u32("general.alignment", 48);
  EXPECT_NE(parse_error(g.b, Errc::format).find("power of two"), std::string::npos);
  g.header(0, 1).kv_u32("general.alignment", 0);
  parse_error(g.b, Errc::format);
  g.header(0, 1).kv_str("general.alignment", "32");
  parse_error(g.b, Errc::format);
}

TEST(GgufReader, RejectsBadTensorInfos) {
  auto one = [](std::vector<uint64_t> dims, uint32_t type, uint64_t off, size_t data) {
    GgufBuilder g;
    g.header(1, 0).tensor("t", std::move(dims), type, off).pad_to(32);
    g.b.resize(g.b.size() + data);
    return g.b;
  };
  EXPECT_NO_THROW(gguf::File::parse(one({4}, 0, 0, 16), "t.gguf"));
  EXPECT_NE(parse_error(one({4}, 0, 0, 15), Errc::truncated).find("outside"), std::string::npos);
  parse_error(one({0}, 0, 0, 16), Errc::format);                      // zero dim
  parse_error(one({1, 1, 1, 1, 1}, 0, 0, 16), Errc::format);          // five dims
  parse_error(one({}, 0, 0, 16), Errc::format);                       // no dims
  parse_error(one({4}, 0, 8, 64), Errc::format);                      // misaligned offset
  parse_error(one({4}, 99, 0, 16), Errc::unsupported);                // unknown type
  parse_error(one({16}, 2, 0, 64), Errc::format);                     // Q4_0 row not 32-multiple
  parse_error(one({uint64_t(1) << 40, uint64_t(1) << 40}, 0, 0, 16), Errc::format);  // overflow
  parse_error(one({4}, 0, ~uint64_t(0) - 31, 16), Errc::truncated);  // offset + size overflows

  GgufBuilder g;
  g.header(2, 0).tensor("a", {16}, 0, 0).tensor("b", {4}, 0, 32).pad_to(32);
  g.b.resize(g.b.size() + 64);
  EXPECT_NE(parse_error(g.b, Errc::format).find("overlap"), std::string::npos);
  g.header(2, 0).tensor("a", {4}, 0, 0).tensor("a", {4}, 0, 32).pad_to(32);
  g.b.resize(g.b.size() + 64);
  EXPECT_NE(parse_error(g.b, Errc::format).find("duplicate tensor 'a'"), std::string::npos);
}
