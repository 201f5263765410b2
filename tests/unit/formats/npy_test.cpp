#include "skv/formats/npy.hpp"

#include <cstring>

#include <gtest/gtest.h>

#include "test_util.hpp"

namespace skv::npy {
namespace {

using test::error_code;
using test::ScratchDir;

// A .npy file as numpy writes it (version 1.0, header padded to 64 bytes with a final newline).
std::string npy_file(const std::string& dict, const std::string& data, int version = 1) {
  const size_t prefix = version == 1 ? 10 : 12;
  std::string h = dict;
  const size_t total = (prefix + h.size() + 1 + 63) / 64 * 64;
  h.append(total - prefix - h.size() - 1, ' ');
  h += '\n';
  std::string out(prefix, '\0');
  std::memcpy(out.data(), "\x93NUMPY", 6);
  out[6] = char(version);
  for (size_t i = 0; i < prefix - 8; ++i) out[8 + i] = char((h.size() >> (8 * i)) & 0xff);
  out.append(h);
  out.append(data);
  return out;
}

Reader parse(const std::string& file) {
  static std::vector<std::byte> keep;
  keep = test::bytes_of(file);
  return Reader::from_bytes(keep, "t.npy");
}

void expect_error(const std::string& file, Errc code, const std::string& needle) {
  std::string msg;
  EXPECT_EQ(error_code([&] { parse(file); }, &msg), code) << msg;
  EXPECT_NE(msg.find("t.npy"), std::string::npos) << msg;
  EXPECT_NE(msg.find(needle), std::string::npos) << "'" << needle << "' not in: " << msg;
}

TEST(Npy, RoundTrips) {
  ScratchDir d;
  const DType all[] = {DType::F16, DType::BF16, DType::F32, DType::U8, DType::BOOL, DType::I8, DType::I32, DType::I64};
  const Shape shapes[] = {{}, {5}, {2, 3}, {2, 1, 7}, {0, 3}};
  int n = 0;
  for (DType t : all)
    for (const Shape& s : shapes) {
      Tensor x(t, s);
      for (size_t i = 0; i < x.data.size(); ++i) x.data.data()[i] = std::byte((i * 37 + 11) & 0xff);
      const std::string p = d.path(std::to_string(n++) + ".npy");
      write_file(p, x.view());
      const std::string raw = test::read_all(p);
      EXPECT_EQ((raw.size() - x.data.size()) % 64, 0u) << "data must start 64-byte aligned";
      Reader r = Reader::open(p);
      EXPECT_EQ(r.view().dtype, t);
      EXPECT_EQ(r.view().shape, s);
      ASSERT_EQ(r.view().bytes.size(), x.data.size());
      if (x.data.size()) {
        EXPECT_EQ(0, std::memcmp(r.view().bytes.data(), x.data.data(), x.data.size()));
      }
    }
}

TEST(Npy, WritesWhatNumpyWrites) {
  // np.save of np.zeros((2, 3), np.float32) (numpy 2.x), byte for byte.
  ScratchDir d;
  Tensor x(DType::F32, {2, 3});
  std::memset(x.data.data(), 0, x.data.size());
  write_file(d.path("z.npy"), x.view());
  EXPECT_EQ(test::read_all(d.path("z.npy")),
            npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", std::string(24, '\0')));
  Tensor y(DType::U8, {3});
  std::memset(y.data.data(), 1, 3);
  write_file(d.path("u.npy"), y.view());
  EXPECT_EQ(test::read_all(d.path("u.npy")),
            npy_file("{'descr': '|u1', 'fortran_order': False, 'shape': (3,), }", "\1\1\1"));
}

TEST(Npy, ReadsVersions2And3AndVariants) {
  Reader r2 = parse(npy_file("{'descr': '<f2', 'fortran_order': False, 'shape': (2,), }", "abcd", 2));
  EXPECT_EQ(r2.view().dtype, DType::F16);
  Reader r3 = parse(npy_file("{\"shape\": (1, 2), \"descr\": \"|b1\", \"fortran_order\": False}", std::string("\1\0", 2), 3));
  EXPECT_EQ(r3.view().dtype, DType::BOOL);
  EXPECT_EQ(r3.view().shape, (Shape{1, 2}));
  Reader rb = parse(npy_file("{'descr': 'bfloat16', 'fortran_order': False, 'shape': (2,), }", std::string("\x80\x3f\x00\x40", 4)));
  EXPECT_EQ(rb.view().dtype, DType::BF16);
}

TEST(NpyMalformed, Rejected) {
  expect_error("\x93NUMPX\x01\x00\x10\x00", Errc::truncated, "too short");
  std::string magic = npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", "12345678");
  magic[5] = 'X';
  expect_error(magic, Errc::format, "magic");
  expect_error(npy_file("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", std::string(16, 'x')),
               Errc::unsupported, "fortran_order");
  expect_error(npy_file("{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", "12345678"),
               Errc::unsupported, "big-endian");
  expect_error(npy_file("{'descr': '<V2', 'fortran_order': False, 'shape': (2,), }", "1234"),
               Errc::unsupported, "bfloat16");
  expect_error(npy_file("{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }", "12345678"),
               Errc::unsupported, "'<f8'");
  expect_error(npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", "12345678"),
               Errc::truncated, "needs 12");
  expect_error(npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", "12345678"),
               Errc::format, "unexpected bytes");
  expect_error(npy_file("{'descr': '<f4', 'shape': (1,), }", "1234"), Errc::format, "fortran_order");
  expect_error(npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }", ""), Errc::format, "malformed");
  expect_error(npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (1,) ", "1234"), Errc::format, "malformed");
  std::string v4 = npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", "1234");
  v4[6] = 4;
  expect_error(v4, Errc::unsupported, "version 4.0");
  std::string longhdr = npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", "1234");
  longhdr[9] = 0x7f;
  expect_error(longhdr, Errc::truncated, "header length");
}

}  // namespace
}  // namespace skv::npy
