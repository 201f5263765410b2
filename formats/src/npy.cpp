// .npy reader and writer. The header is a Python dict literal; only the three keys numpy writes
// ('descr', 'fortran_order', 'shape') with string / bool / int-tuple values can appear, so a small
// hand-written parser for exactly that subset is safer than any general literal evaluator.
#include "skv/formats/npy.hpp"

#include <cstring>
#include <optional>

#include "skv/error.hpp"

namespace skv::npy {
namespace {

constexpr char kMagic[] = "\x93NUMPY";

struct Descr {
  std::string_view name;
  DType dtype;
};
// What numpy writes for each dtype; '<' for multi-byte little-endian, '|' where order is moot.
// 'bfloat16' is what numpy + ml_dtypes can load back; np.save itself writes '<V2' (untyped).
constexpr Descr kDescrs[] = {{"<f2", DType::F16}, {"<f4", DType::F32},   {"|u1", DType::U8},
                             {"|b1", DType::BOOL}, {"|i1", DType::I8},   {"<i4", DType::I32},
                             {"<i8", DType::I64},  {"bfloat16", DType::BF16}};

DType dtype_from_descr(const std::string& d, const std::string& file) {
  for (const auto& e : kDescrs)
    if (e.name == d) return e.dtype;
  if (d == "<u1" || d == "u1") return DType::U8;
  if (d == "<b1" || d == "b1") return DType::BOOL;
  if (d == "<i1" || d == "i1") return DType::I8;
  if (!d.empty() && d[0] == '>')
    fail(Errc::unsupported, file, "big-endian dtype '" + d + "' is not supported (use '<' order)");
  if (d == "<V2")
    fail(Errc::unsupported, file,
         "dtype '<V2' is untyped 2-byte data (np.save writes ml_dtypes bfloat16 this way, but it "
         "cannot be told apart from other records); save bfloat16 as safetensors instead");
  fail(Errc::unsupported, file,
       "dtype '" + d + "' is not supported (float16, float32, bfloat16, uint8, bool, int8/32/64)");
}

// Cursor over the header dict literal.
struct Lexer {
  std::string_view s;
  size_t i = 0;
  const std::string& file;

  [[noreturn]] void bad(const std::string& what) const {
    fail(Errc::format, file, "malformed header (" + what + " at column " + std::to_string(i) + ")");
  }
  void ws() {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) ++i;
  }
  bool eat(char c) {
    ws();
    if (i < s.size() && s[i] == c) return ++i, true;
    return false;
  }
  void expect(char c) {
    if (!eat(c)) bad(std::string("expected '") + c + "'");
  }
  std::string str() {
    ws();
    if (i >= s.size() || (s[i] != '\'' && s[i] != '"')) bad("expected a string");
    const char q = s[i++];
    const size_t start = i;
    while (i < s.size() && s[i] != q) {
      if (s[i] == '\\') bad("escape in string");
      ++i;
    }
    if (i >= s.size()) bad("unterminated string");
    return std::string(s.substr(start, i++ - start));
  }
  bool boolean() {
    ws();
    if (s.substr(i, 4) == "True") return i += 4, true;
    if (s.substr(i, 5) == "False") return i += 5, false;
    bad("expected True or False");
  }
  int64_t integer() {
    ws();
    int64_t v = 0;
    const size_t start = i;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
      if (v > (int64_t(1) << 58)) bad("dimension too large");
      v = v * 10 + (s[i++] - '0');
    }
    if (i < s.size() && s[i] == 'L') ++i;  // Python 2 long suffix, still legal in old files
    if (i == start) bad("expected a non-negative integer");
    return v;
  }
  Shape tuple() {
    expect('(');
    Shape shape;
    if (eat(')')) return shape;
    for (;;) {
      shape.push_back(integer());
      if (eat(')')) return shape;
      expect(',');
      if (eat(')')) return shape;
    }
  }
};

struct Header {
  DType dtype;
  Shape shape;
};

Header parse_header(std::string_view text, const std::string& file) {
  Lexer lx{text, 0, file};
  std::optional<std::string> descr;
  std::optional<bool> fortran;
  std::optional<Shape> shape;
  lx.expect('{');
  while (!lx.eat('}')) {
    const std::string key = lx.str();
    lx.expect(':');
    if (key == "descr") {
      lx.ws();
      if (lx.i < text.size() && text[lx.i] == '[')
        fail(Errc::unsupported, file, "structured dtypes are not supported");
      descr = lx.str();
    } else if (key == "fortran_order") {
      fortran = lx.boolean();
    } else if (key == "shape") {
      shape = lx.tuple();
    } else {
      lx.bad("unexpected key '" + key + "'");
    }
    if (!lx.eat(',')) {
      lx.expect('}');
      break;
    }
  }
  lx.ws();
  if (lx.i != text.size()) lx.bad("trailing characters after the dict");
  if (!descr || !fortran || !shape)
    fail(Errc::format, file, "header lacks one of 'descr', 'fortran_order', 'shape'");
  if (*fortran)
    fail(Errc::unsupported, file,
         "fortran_order is True; only C-order arrays are supported (save np.ascontiguousarray(a))");
  return {dtype_from_descr(*descr, file), *shape};
}

}  // namespace

Reader Reader::open(const std::string& path) {
  auto file = std::make_shared<InputFile>(InputFile::open(path));
  Reader r = from_bytes(file->bytes(), path);
  r.file_ = std::move(file);
  return r;
}

Reader Reader::from_bytes(std::span<const std::byte> bytes, const std::string& name) {
  Reader r;
  r.path_ = name;
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  if (bytes.size() < 10) fail(Errc::truncated, name, "too short for a .npy header");
  if (std::memcmp(p, kMagic, 6) != 0) fail(Errc::format, name, "not a .npy file (bad magic)");
  const int major = p[6], minor = p[7];
  if (major < 1 || major > 3 || minor != 0)
    fail(Errc::unsupported, name,
         ".npy format version " + std::to_string(major) + "." + std::to_string(minor) +
             " is not supported (1.0-3.0)");
  size_t hlen, hstart;
  if (major == 1) {
    hlen = size_t(p[8]) | size_t(p[9]) << 8;
    hstart = 10;
  } else {
    if (bytes.size() < 12) fail(Errc::truncated, name, "too short for a .npy header");
    hlen = size_t(p[8]) | size_t(p[9]) << 8 | size_t(p[10]) << 16 | size_t(p[11]) << 24;
    hstart = 12;
  }
  if (hlen > bytes.size() - hstart)
    fail(Errc::truncated, name, "header length " + std::to_string(hlen) + " runs past the end");
  // Version 3 allows UTF-8 in the header; the keys and values skv accepts are ASCII either way.
  const Header h = parse_header({reinterpret_cast<const char*>(p + hstart), hlen}, name);
  const uint64_t need = uint64_t(checked_numel(h.shape, name)) * dtype_size(h.dtype);
  const size_t data = hstart + hlen;
  if (bytes.size() - data < need)
    fail(Errc::truncated, name,
         "array " + shape_str(h.shape) + " needs " + std::to_string(need) + " data bytes, file has " +
             std::to_string(bytes.size() - data));
  if (bytes.size() - data > need)
    fail(Errc::format, name,
         std::to_string(bytes.size() - data - need) + " unexpected bytes after the array data");
  r.view_ = {h.dtype, h.shape, bytes.subspan(data, size_t(need))};
  return r;
}

void write_file(const std::string& path, const TensorView& t, const OutputOptions& opts) {
  std::string_view descr;
  for (const auto& e : kDescrs)
    if (e.dtype == t.dtype) descr = e.name;
  const uint64_t need = uint64_t(checked_numel(t.shape, path)) * dtype_size(t.dtype);
  if (t.bytes.size() != need)
    fail(Errc::invalid_argument, path,
         "tensor has " + std::to_string(t.bytes.size()) + " bytes but shape " + shape_str(t.shape) +
             " needs " + std::to_string(need));
  std::string dict = "{'descr': '" + std::string(descr) + "', 'fortran_order': False, 'shape': (";
  for (size_t i = 0; i < t.shape.size(); ++i) dict += std::to_string(t.shape[i]) + ", ";
  if (t.shape.size() > 1) dict.resize(dict.size() - 2);  // "(3,)" for 1-d, "(2, 3)" otherwise
  else if (t.shape.size() == 1) dict.pop_back();
  dict += "), }";
  // numpy pads magic + length + dict + '\n' to a multiple of 64 so the data is aligned.
  const bool v2 = dict.size() + 1 + 10 + 63 > 0xffff;
  const size_t prefix = v2 ? 12 : 10;
  const size_t total = (prefix + dict.size() + 1 + 63) / 64 * 64;
  dict.append(total - prefix - dict.size() - 1, ' ');
  dict += '\n';
  std::string head(kMagic, 6);
  head += char(v2 ? 2 : 1);
  head += char(0);
  const size_t hl = dict.size();
  for (size_t i = 0; i < (v2 ? 4u : 2u); ++i) head += char((hl >> (8 * i)) & 0xff);
  OutputFile out(path, opts);
  out.write(head.data(), head.size());
  out.write(dict.data(), dict.size());
  out.write(t.bytes);
  out.commit();
}

}  // namespace skv::npy
