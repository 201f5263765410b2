#include "skv/formats/safetensors.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cstring>

#include <gtest/gtest.h>

#include "test_util.hpp"

namespace skv::safetensors {
namespace {

using test::error_code;
using test::ScratchDir;
using test::st_file;

// Deterministic bytes for a tensor of `n` bytes.
std::vector<std::byte> fill(size_t n, unsigned seed) {
  std::vector<std::byte> v(n);
  uint32_t x = seed * 2654435761u + 1;
  for (auto& b : v) {
    x ^= x << 13, x ^= x >> 17, x ^= x << 5;
    b = std::byte(x & 0xff);
  }
  return v;
}

Reader parse(const std::string& file) {
  static std::vector<std::byte> keep;  // from_bytes does not copy
  keep = test::bytes_of(file);
  return Reader::from_bytes(keep, "t.safetensors");
}

// Parses `file`, expects an error with `code` whose message contains every string in `needles`.
void expect_error(const std::string& file, Errc code, std::vector<std::string> needles) {
  std::string msg;
  EXPECT_EQ(error_code([&] { parse(file); }, &msg), code) << msg;
  EXPECT_NE(msg.find("t.safetensors"), std::string::npos) << msg;
  for (const auto& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << "'" << n << "' not in: " << msg;
}

TEST(Safetensors, RoundTripEveryDtypeWithMetadata) {
  ScratchDir d;
  const DType all[] = {DType::F16, DType::BF16, DType::F32, DType::U8,
                       DType::BOOL, DType::I8, DType::I32, DType::I64};
  std::vector<std::vector<std::byte>> data;
  std::vector<NamedTensor> tensors;
  unsigned seed = 1;
  for (DType t : all) {
    const Shape shape = {2, 3, int64_t(seed)};
    data.push_back(fill(size_t(6 * seed) * dtype_size(t), seed));
    tensors.push_back({"t." + std::string(dtype_name(t)), {t, shape, data.back()}});
    ++seed;
  }
  // A scalar and an empty tensor are legal too.
  data.push_back(fill(4, 99));
  tensors.push_back({"scalar", {DType::F32, {}, data.back()}});
  tensors.push_back({"empty", {DType::F16, {0, 4}, {}}});
  const Metadata meta = {{"model", "x/y"}, {"rope_theta", "10000"}, {"unicode", "caf\xc3\xa9"}};
  write_file(d.path("a.safetensors"), tensors, meta);

  Reader r = Reader::open(d.path("a.safetensors"));
  EXPECT_EQ(r.metadata(), meta);
  ASSERT_EQ(r.tensors().size(), tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorInfo* info = r.find(tensors[i].name);
    ASSERT_NE(info, nullptr) << tensors[i].name;
    const TensorView v = r.view(*info);
    EXPECT_EQ(v.dtype, tensors[i].view.dtype);
    EXPECT_EQ(v.shape, tensors[i].view.shape);
    ASSERT_EQ(v.bytes.size(), tensors[i].view.bytes.size());
    EXPECT_EQ(0, std::memcmp(v.bytes.data(), tensors[i].view.bytes.data(), v.bytes.size()));
    r.release(*info);
  }
  // The writer lays tensors out in the order given; the reader lists them by offset.
  for (size_t i = 0; i < tensors.size(); ++i) EXPECT_EQ(r.tensors()[i].name, tensors[i].name);
  EXPECT_EQ(error_code([&] { r.view("nope"); }), Errc::format);
}

TEST(Safetensors, HeaderMatchesThePythonLibrary) {
  // Bytes produced by `safetensors.numpy.save({"b": zeros((2,3), f16), "a": ones(3, u8)},
  // metadata={"x": "y"})` (the Python library orders by dtype size then name; skv keeps the order
  // it is given, so it is given the same order here).
  ScratchDir d;
  std::vector<std::byte> b(12, std::byte{0}), a(3, std::byte{1});
  write_file(d.path("p.safetensors"), {{"b", {DType::F16, {2, 3}, b}}, {"a", {DType::U8, {3}, a}}},
             {{"x", "y"}});
  const std::string header =
      R"({"__metadata__":{"x":"y"},"b":{"dtype":"F16","shape":[2,3],"data_offsets":[0,12]},)"
      R"("a":{"dtype":"U8","shape":[3],"data_offsets":[12,15]}})";
  EXPECT_EQ(header.size() % 8, 0u);
  EXPECT_EQ(test::read_all(d.path("p.safetensors")),
            st_file(header, std::string(12, '\0') + std::string(3, '\1')));
}

TEST(Safetensors, HeaderIsPaddedWithSpaces) {
  ScratchDir d;
  std::vector<std::byte> a(1, std::byte{7});
  write_file(d.path("p.safetensors"), {{"a", {DType::U8, {1}, a}}}, {});
  const std::string f = test::read_all(d.path("p.safetensors"));
  const std::string header = R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})";  // 53 bytes
  EXPECT_EQ(f, st_file(header + std::string(3, ' '), "\x07"));
}

TEST(Safetensors, StreamingWriterChecksByteCount) {
  ScratchDir d;
  {
    OutputFile out(d.path("s.safetensors"));
    Writer w(out, {{"a", DType::F32, {4}}, {"b", DType::U8, {3}}}, {});
    auto bytes = fill(19, 3);
    w.write(std::span(bytes).first(5));
    w.write(std::span(bytes).subspan(5, 9));
    EXPECT_EQ(error_code([&] { w.finish(); }), Errc::invalid_argument);
    w.write(std::span(bytes).subspan(14, 5));
    EXPECT_EQ(error_code([&] { w.write(std::span(bytes).first(1)); }), Errc::invalid_argument);
    w.finish();
    out.commit();
  }
  Reader r = Reader::open(d.path("s.safetensors"));
  EXPECT_EQ(r.view("b").bytes.size(), 3u);
}

TEST(Safetensors, WriterRejectsDuplicatesAndBadSizes) {
  ScratchDir d;
  std::vector<std::byte> a(4);
  EXPECT_EQ(error_code([&] {
              write_file(d.path("x"), {{"a", {DType::U8, {4}, a}}, {"a", {DType::U8, {4}, a}}}, {});
            }),
            Errc::invalid_argument);
  EXPECT_EQ(error_code([&] { write_file(d.path("x"), {{"a", {DType::F32, {2}, a}}}, {}); }),
            Errc::invalid_argument);
  EXPECT_TRUE(d.entries().empty());
}

const std::string kOk = R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})";

TEST(SafetensorsMalformed, Truncated) {
  expect_error(std::string("\x05\x00\x00", 3), Errc::truncated, {"8-byte"});
  expect_error(st_file(kOk, "xy").substr(0, 20), Errc::truncated, {"header length"});
}

TEST(SafetensorsMalformed, HeaderLengthLargerThanFile) {
  expect_error(st_file(kOk, "xy", 1000), Errc::truncated, {"header length 1000"});
}

TEST(SafetensorsMalformed, HeaderCap) {
  expect_error(st_file(kOk, "xy", 100'000'001), Errc::format, {"100000000"});
}

TEST(SafetensorsMalformed, NotJsonOrNotAnObject) {
  expect_error(st_file("{\"a\":", ""), Errc::format, {"JSON"});
  expect_error(st_file("[1,2]", ""), Errc::format, {"not a JSON object"});
  expect_error(st_file(kOk + std::string("\0", 1), "xy"), Errc::format, {"JSON"});
}

TEST(SafetensorsMalformed, MetadataMustBeStrings) {
  expect_error(st_file(R"({"__metadata__":{"k":1},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", "x"),
               Errc::format, {"__metadata__", "'k'"});
  expect_error(st_file(R"({"__metadata__":["x"]})", ""), Errc::format, {"__metadata__"});
  // null is accepted as "no metadata", like the reference reader.
  EXPECT_TRUE(parse(st_file(R"({"__metadata__":null})", "")).metadata().empty());
}

TEST(SafetensorsMalformed, UnknownDtype) {
  expect_error(st_file(R"({"w":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})", "12345678"),
               Errc::format, {"unknown dtype 'F64'", "'w'"});
}

TEST(SafetensorsMalformed, ShapeDoesNotMatchSpan) {
  expect_error(st_file(R"({"w":{"dtype":"F16","shape":[3],"data_offsets":[0,4]}})", "1234"),
               Errc::format, {"'w'", "needs 6 bytes", "span 4"});
  expect_error(st_file(R"({"w":{"dtype":"U8","shape":[-1],"data_offsets":[0,0]}})", ""),
               Errc::format, {"'w'"});
  expect_error(st_file(R"({"w":{"dtype":"U8","shape":[4294967296,4294967296,4],"data_offsets":[0,0]}})", ""),
               Errc::format, {"'w'"});
}

TEST(SafetensorsMalformed, Overlap) {
  expect_error(st_file(R"({"a":{"dtype":"U8","shape":[3],"data_offsets":[0,3]},)"
                       R"("b":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}})", "abcd"),
               Errc::format, {"'b'", "overlaps", "'a'"});
}

TEST(SafetensorsMalformed, HoleAndTrailingBytes) {
  expect_error(st_file(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                       R"("b":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}})", "abcd"),
               Errc::format, {"hole before tensor 'b'"});
  expect_error(st_file(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}})", "abc"),
               Errc::format, {"hole before tensor 'a'"});
  expect_error(st_file(kOk, "xyz"), Errc::format, {"trailing"});
}

TEST(SafetensorsMalformed, OffsetsOutsideData) {
  expect_error(st_file(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})", "ab"),
               Errc::truncated, {"'a'"});
  expect_error(st_file(R"({"a":{"dtype":"U8","shape":[0],"data_offsets":[3,2]}})", ""),
               Errc::format, {"'a'", "end before"});
  expect_error(st_file(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0]}})", "x"),
               Errc::format, {"'a'", "data_offsets"});
  expect_error(st_file(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,-1]}})", "x"),
               Errc::format, {"'a'"});
  expect_error(st_file(R"({"a":{"shape":[1],"data_offsets":[0,1]}})", "x"), Errc::format, {"dtype"});
}

TEST(SafetensorsMalformed, DuplicateNames) {
  expect_error(st_file(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                       R"("a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})", "xy"),
               Errc::format, {"duplicate", "'a'"});
}

// Through skv::parse_json (issue 15): a shape nested 100000 deep (was SIGSEGV), a repeated key
// inside an entry or __metadata__, a UTF-8 BOM before the header.
TEST(SafetensorsMalformed, HostileJson) {
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  expect_error(st_file(R"({"a":{"dtype":"U8","shape":)" + deep + R"(,"data_offsets":[0,1]}})", "x"),
               Errc::format, {"header is not valid JSON: nested deeper than 64 levels"});
  expect_error(st_file(R"({"a":{"dtype":"U8","dtype":"F16","shape":[1],"data_offsets":[0,1]}})", "x"),
               Errc::format, {"duplicate key 'dtype'"});
  expect_error(st_file(R"({"__metadata__":{"k":"1","k":"2"},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", "x"),
               Errc::format, {"duplicate key 'k'"});
  expect_error(st_file("\xEF\xBB\xBF" R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", "x"),
               Errc::format, {"byte-order mark"});
}

TEST(Safetensors, AcceptsWhatTheReferenceAccepts) {
  // Entries listed out of offset order, unpadded header, zero-sized tensors sharing an offset,
  // unknown extra fields: all load in the Python library, so they load here.
  Reader r = parse(st_file(R"({"b":{"dtype":"U8","shape":[1],"data_offsets":[1,2]},)"
                           R"("z":{"dtype":"U8","shape":[0],"data_offsets":[2,2]},)"
                           R"("y":{"dtype":"U8","shape":[0],"data_offsets":[2,2]},)"
                           R"("a":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"extra":1}})", "xy"));
  ASSERT_EQ(r.tensors().size(), 4u);
  EXPECT_EQ(r.tensors()[0].name, "a");
  EXPECT_EQ(r.tensors()[1].name, "b");
  EXPECT_EQ(r.tensors()[2].name, "y");
  EXPECT_EQ(char(r.view("b").bytes[0]), 'y');
}

TEST(Safetensors, FileOver4GiB) {
  ScratchDir d;
  const std::string path = d.path("big.safetensors");
  const uint64_t big = (uint64_t(4) << 30) + 4096 * 3 + 5;  // > 4 GiB, not page aligned
  const std::string header = R"({"big":{"dtype":"U8","shape":[)" + std::to_string(big) +
                             R"(],"data_offsets":[0,)" + std::to_string(big) +
                             R"(]},"tail":{"dtype":"F32","shape":[2],"data_offsets":[)" +
                             std::to_string(big) + "," + std::to_string(big + 8) + "]}}";
  const std::string head = st_file(header, "");
  const int fd = ::open(path.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
  ASSERT_GE(fd, 0);
  const off_t total = off_t(head.size() + big + 8);
  if (::ftruncate(fd, total) != 0) {
    ::close(fd);
    GTEST_SKIP() << "filesystem refuses a sparse " << total << "-byte file: " << std::strerror(errno);
  }
  const float tail[2] = {1.5f, -2.25f};
  ASSERT_EQ(::pwrite(fd, head.data(), head.size(), 0), ssize_t(head.size()));
  ASSERT_EQ(::pwrite(fd, "Z", 1, off_t(head.size() + big - 1)), 1);
  ASSERT_EQ(::pwrite(fd, tail, 8, off_t(head.size() + big)), 8);
  ::close(fd);

  Reader r = Reader::open(path);
  const TensorView b = r.view("big");
  ASSERT_EQ(b.bytes.size(), big);
  EXPECT_EQ(char(b.bytes[big - 1]), 'Z');
  EXPECT_EQ(char(b.bytes[size_t(3) << 30]), '\0');
  const TensorView t = r.view("tail");
  ASSERT_EQ(t.bytes.size(), 8u);
  EXPECT_EQ(t.as<float>()[0], 1.5f);
  EXPECT_EQ(t.as<float>()[1], -2.25f);
  r.release(*r.find("big"));
  EXPECT_EQ(char(b.bytes[big - 1]), 'Z');  // still readable after release
}

}  // namespace
}  // namespace skv::safetensors
