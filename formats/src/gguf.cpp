// GGUF parsing: a bounds-checked cursor over the file bytes, metadata, tensor infos, layout checks.
#include "skv/formats/gguf.hpp"

#include <algorithm>
#include <cstring>
#include <limits>
#include <map>
#include <set>

#include "skv/error.hpp"

namespace skv::gguf {
namespace {

constexpr uint32_t kMaxKnownType = 39;

bool mul_overflows(uint64_t a, uint64_t b, uint64_t* out) { return __builtin_mul_overflow(a, b, out); }
bool add_overflows(uint64_t a, uint64_t b, uint64_t* out) { return __builtin_add_overflow(a, b, out); }

// Little-endian reads with every length checked against what is left.
class Cursor {
 public:
  Cursor(std::span<const std::byte> b, const std::string& src) : b_(b), src_(src) {}
  uint64_t pos() const { return pos_; }
  uint64_t left() const { return b_.size() - pos_; }

  void need(uint64_t n, const std::string& what) const {
    if (n > left())
      fail(Errc::truncated, src_,
           "file ends inside " + what + " (needs " + std::to_string(n) + " bytes at offset " +
               std::to_string(pos_) + ", " + std::to_string(left()) + " left)");
  }
  template <class T> T read(const std::string& what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, b_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string str(uint64_t max_len, const std::string& what) {
    const uint64_t n = read<uint64_t>(what + " length");
    if (n > max_len)
      fail(Errc::format, src_, what + " length " + std::to_string(n) + " exceeds the limit of " +
                                   std::to_string(max_len));
    need(n, what);
    std::string s(reinterpret_cast<const char*>(b_.data() + pos_), size_t(n));
    pos_ += n;
    return s;
  }

 private:
  std::span<const std::byte> b_;
  const std::string& src_;
  uint64_t pos_ = 0;
};

uint64_t min_encoded_size(ValueType t) {
  switch (t) {
    case ValueType::u8: case ValueType::i8: case ValueType::boolean: return 1;
    case ValueType::u16: case ValueType::i16: return 2;
    case ValueType::u32: case ValueType::i32: case ValueType::f32: return 4;
    case ValueType::u64: case ValueType::i64: case ValueType::f64: case ValueType::string: return 8;
    case ValueType::array: return 12;
  }
  return 1;
}

bool valid_value_type(uint32_t t) { return t <= 12; }

// Charges n bytes of parsed metadata against what Limits allows (budget: what is left).
void charge(uint64_t n, uint64_t& budget, const Limits& lim, const std::string& what, const std::string& src) {
  if (n > budget)
    fail(Errc::format, src, what + " would take the parsed metadata past its " +
                                std::to_string(lim.max_metadata_bytes >> 20) + " MiB limit");
  budget -= n;
}

Value read_value(Cursor& c, ValueType t, const Limits& lim, uint32_t depth, const std::string& key,
                 const std::string& src, uint64_t& budget) {
  Value v;
  v.type = t;
  const std::string what = "value of '" + key + "'";
  switch (t) {
    case ValueType::u8: v.u = c.read<uint8_t>(what); break;
    case ValueType::i8: v.i = c.read<int8_t>(what); break;
    case ValueType::u16: v.u = c.read<uint16_t>(what); break;
    case ValueType::i16: v.i = c.read<int16_t>(what); break;
    case ValueType::u32: v.u = c.read<uint32_t>(what); break;
    case ValueType::i32: v.i = c.read<int32_t>(what); break;
    case ValueType::u64: v.u = c.read<uint64_t>(what); break;
    case ValueType::i64: v.i = c.read<int64_t>(what); break;
    case ValueType::f32: v.f = c.read<float>(what); break;
    case ValueType::f64: v.f = c.read<double>(what); break;
    case ValueType::boolean: {
      const uint8_t b = c.read<uint8_t>(what);
      if (b > 1) fail(Errc::format, src, what + ": bool byte is " + std::to_string(b) + ", not 0 or 1");
      v.u = b;
      break;
    }
    case ValueType::string:
      v.s = c.str(lim.max_string, what);
      charge(v.s.size(), budget, lim, what, src);
      break;
    case ValueType::array: {
      if (depth >= lim.max_array_depth)
        fail(Errc::format, src, what + ": arrays nested deeper than " + std::to_string(lim.max_array_depth));
      const uint32_t et = c.read<uint32_t>(what + " element type");
      if (!valid_value_type(et))
        fail(Errc::format, src, what + ": unknown array element type " + std::to_string(et));
      v.elem_type = ValueType(et);
      const uint64_t n = c.read<uint64_t>(what + " array length");
      uint64_t min_bytes = 0;
      if (n > lim.max_array || mul_overflows(n, min_encoded_size(v.elem_type), &min_bytes) ||
          min_bytes > c.left())
        fail(Errc::format, src, what + ": array length " + std::to_string(n) +
                                    " is impossible for the bytes left or over the limit");
      charge(n * sizeof(Value), budget, lim, what + ": array of " + std::to_string(n) + " values", src);
      v.items.reserve(size_t(n));
      for (uint64_t k = 0; k < n; ++k)
        v.items.push_back(read_value(c, v.elem_type, lim, depth + 1, key, src, budget));
      break;
    }
  }
  return v;
}

}  // namespace

const char* value_type_name(ValueType t) noexcept {
  static const char* const names[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32",
                                      "bool", "string", "array", "u64", "i64", "f64"};
  const auto k = uint32_t(t);
  return k <= 12 ? names[k] : "unknown";
}

const char* ggml_type_name(GgmlType t) noexcept {
  switch (t) {
    case GgmlType::F32: return "F32";   case GgmlType::F16: return "F16";
    case GgmlType::Q4_0: return "Q4_0"; case GgmlType::Q4_1: return "Q4_1";
    case GgmlType::Q5_0: return "Q5_0"; case GgmlType::Q5_1: return "Q5_1";
    case GgmlType::Q8_0: return "Q8_0"; case GgmlType::Q8_1: return "Q8_1";
    case GgmlType::Q2_K: return "Q2_K"; case GgmlType::Q3_K: return "Q3_K";
    case GgmlType::Q4_K: return "Q4_K"; case GgmlType::Q5_K: return "Q5_K";
    case GgmlType::Q6_K: return "Q6_K"; case GgmlType::Q8_K: return "Q8_K";
    case GgmlType::I8: return "I8";     case GgmlType::I16: return "I16";
    case GgmlType::I32: return "I32";   case GgmlType::I64: return "I64";
    case GgmlType::F64: return "F64";   case GgmlType::BF16: return "BF16";
  }
  return "unknown";
}

std::optional<BlockLayout> block_layout(uint32_t type) noexcept {
  // Block sizes from ggml's type traits (ggml-common.h block structs).
  switch (type) {
    case 0: return BlockLayout{1, 4};     case 1: return BlockLayout{1, 2};
    case 2: return BlockLayout{32, 18};   case 3: return BlockLayout{32, 20};
    case 6: return BlockLayout{32, 22};   case 7: return BlockLayout{32, 24};
    case 8: return BlockLayout{32, 34};   case 9: return BlockLayout{32, 36};
    case 10: return BlockLayout{256, 84}; case 11: return BlockLayout{256, 110};
    case 12: return BlockLayout{256, 144}; case 13: return BlockLayout{256, 176};
    case 14: return BlockLayout{256, 210}; case 15: return BlockLayout{256, 292};
    case 24: return BlockLayout{1, 1};    case 25: return BlockLayout{1, 2};
    case 26: return BlockLayout{1, 4};    case 27: return BlockLayout{1, 8};
    case 28: return BlockLayout{1, 8};    case 30: return BlockLayout{1, 2};
    default: return std::nullopt;
  }
}

bool Value::is_integer() const noexcept {
  switch (type) {
    case ValueType::u8: case ValueType::i8: case ValueType::u16: case ValueType::i16:
    case ValueType::u32: case ValueType::i32: case ValueType::u64: case ValueType::i64: return true;
    default: return false;
  }
}

std::vector<int64_t> TensorInfo::shape() const {
  std::vector<int64_t> s;
  for (auto it = dims.rbegin(); it != dims.rend(); ++it) s.push_back(int64_t(*it));
  return s;
}

File File::parse(std::span<const std::byte> bytes, const std::string& source, const Limits& lim) {
  File f;
  f.source_ = source;
  Cursor c(bytes, source);
  c.need(4, "the magic");
  if (std::memcmp(bytes.data(), "GGUF", 4) != 0) fail(Errc::format, source, "not a GGUF file (bad magic)");
  c.read<uint32_t>("the magic");
  f.version_ = c.read<uint32_t>("the version");
  if (f.version_ != 2 && f.version_ != 3)
    fail(Errc::unsupported, source, "GGUF version " + std::to_string(f.version_) + " (only 2 and 3 are read)");
  const uint64_t n_tensors = c.read<uint64_t>("the tensor count");
  const uint64_t n_kv = c.read<uint64_t>("the metadata count");
  if (n_tensors > lim.max_tensors)
    fail(Errc::format, source, "tensor count " + std::to_string(n_tensors) + " exceeds the limit of " +
                                   std::to_string(lim.max_tensors));
  if (n_kv > lim.max_kv)
    fail(Errc::format, source, "metadata count " + std::to_string(n_kv) + " exceeds the limit of " +
                                   std::to_string(lim.max_kv));

  std::set<std::string, std::less<>> keys;
  uint64_t budget = lim.max_metadata_bytes;
  f.kv_.reserve(size_t(n_kv));
  for (uint64_t k = 0; k < n_kv; ++k) {
    std::string key = c.str(lim.max_string, "metadata key " + std::to_string(k));
    if (key.empty()) fail(Errc::format, source, "metadata key " + std::to_string(k) + " is empty");
    if (!keys.insert(key).second) fail(Errc::format, source, "duplicate metadata key '" + key + "'");
    const uint32_t t = c.read<uint32_t>("type of '" + key + "'");
    if (!valid_value_type(t))
      fail(Errc::format, source, "metadata '" + key + "' has unknown value type " + std::to_string(t));
    Value v = read_value(c, ValueType(t), lim, 0, key, source, budget);
    f.kv_.emplace_back(std::move(key), std::move(v));
  }

  if (const Value* a = f.find("general.alignment")) {
    if (a->type != ValueType::u32)
      fail(Errc::format, source, std::string("general.alignment has type ") + value_type_name(a->type) + ", not u32");
    if (a->u == 0 || (a->u & (a->u - 1)) != 0)
      fail(Errc::format, source, "general.alignment " + std::to_string(a->u) + " is not a power of two");
    f.alignment_ = a->u;
  }

  std::set<std::string, std::less<>> names;
  f.tensors_.reserve(size_t(n_tensors));
  for (uint64_t k = 0; k < n_tensors; ++k) {
    TensorInfo t;
    t.name = c.str(lim.max_string, "tensor name " + std::to_string(k));
    const std::string what = "tensor '" + t.name + "'";
    if (!names.insert(t.name).second) fail(Errc::format, source, "duplicate " + what);
    const uint32_t nd = c.read<uint32_t>(what + " dimension count");
    if (nd == 0 || nd > lim.max_dims)
      fail(Errc::format, source, what + " has " + std::to_string(nd) + " dimensions (1.." +
                                     std::to_string(lim.max_dims) + " allowed)");
    uint64_t numel = 1;
    for (uint32_t d = 0; d < nd; ++d) {
      const uint64_t dim = c.read<uint64_t>(what + " dimensions");
      if (dim == 0) fail(Errc::format, source, what + " has a zero dimension");
      if (mul_overflows(numel, dim, &numel) || numel > (uint64_t(1) << 62))
        fail(Errc::format, source, what + " element count overflows");
      t.dims.push_back(dim);
    }
    t.numel = numel;
    const uint32_t type = c.read<uint32_t>(what + " type");
    const auto bl = block_layout(type);
    if (!bl || type > kMaxKnownType)
      fail(Errc::unsupported, source, what + " has unknown ggml type " + std::to_string(type));
    t.type = GgmlType(type);
    if (t.dims[0] % bl->elements != 0)
      fail(Errc::format, source, what + " row of " + std::to_string(t.dims[0]) + " elements is not a multiple of the " +
                                     ggml_type_name(t.type) + " block size " + std::to_string(bl->elements));
    if (mul_overflows(numel / bl->elements, bl->bytes, &t.nbytes))
      fail(Errc::format, source, what + " byte size overflows");
    t.offset = c.read<uint64_t>(what + " offset");
    if (t.offset % f.alignment_ != 0)
      fail(Errc::format, source, what + " offset " + std::to_string(t.offset) + " is not a multiple of the alignment " +
                                     std::to_string(f.alignment_));
    f.tensors_.push_back(std::move(t));
  }

  // The data section starts at the next alignment boundary after the tensor infos.
  uint64_t data_start = c.pos();
  if (add_overflows(data_start, f.alignment_ - 1, &data_start))
    fail(Errc::format, source, "data offset overflows");
  data_start -= data_start % f.alignment_;
  const uint64_t file_size = bytes.size();
  if (data_start > file_size && !f.tensors_.empty())
    fail(Errc::truncated, source, "file ends before the data section at offset " + std::to_string(data_start));
  f.data_offset_ = data_start;
  const uint64_t data_size = file_size > data_start ? file_size - data_start : 0;

  std::vector<const TensorInfo*> order;
  for (auto& t : f.tensors_) {
    uint64_t end = 0;
    if (add_overflows(t.offset, t.nbytes, &end) || end > data_size)
      fail(Errc::truncated, source, "tensor '" + t.name + "' data [" + std::to_string(t.offset) + ", +" +
                                        std::to_string(t.nbytes) + ") lies outside the " +
                                        std::to_string(data_size) + "-byte data section");
    t.data = bytes.subspan(size_t(data_start + t.offset), size_t(t.nbytes));
    order.push_back(&t);
  }
  std::sort(order.begin(), order.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
  for (size_t k = 1; k < order.size(); ++k)
    if (order[k - 1]->offset + order[k - 1]->nbytes > order[k]->offset)
      fail(Errc::format, source, "tensors '" + order[k - 1]->name + "' and '" + order[k]->name + "' overlap");
  return f;
}

const Value* File::find(std::string_view key) const noexcept {
  for (const auto& [k, v] : kv_)
    if (k == key) return &v;
  return nullptr;
}

const TensorInfo* File::tensor(std::string_view name) const noexcept {
  for (const auto& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

std::optional<uint64_t> File::get_uint(std::string_view key) const {
  const Value* v = find(key);
  if (!v) return std::nullopt;
  if (!v->is_integer()) fail(Errc::format, source_, std::string(key) + " has type " + value_type_name(v->type) + ", not an integer");
  const bool is_signed = v->type == ValueType::i8 || v->type == ValueType::i16 ||
                         v->type == ValueType::i32 || v->type == ValueType::i64;
  if (is_signed) {
    if (v->i < 0) fail(Errc::format, source_, std::string(key) + " is negative (" + std::to_string(v->i) + ")");
    return uint64_t(v->i);
  }
  return v->u;
}

std::optional<double> File::get_float(std::string_view key) const {
  const Value* v = find(key);
  if (!v) return std::nullopt;
  if (v->is_float()) return v->f;
  if (v->is_integer()) {
    const bool is_signed = v->type == ValueType::i8 || v->type == ValueType::i16 ||
                           v->type == ValueType::i32 || v->type == ValueType::i64;
    return is_signed ? double(v->i) : double(v->u);
  }
  fail(Errc::format, source_, std::string(key) + " has type " + value_type_name(v->type) + ", not a number");
}

std::optional<std::string> File::get_string(std::string_view key) const {
  const Value* v = find(key);
  if (!v) return std::nullopt;
  if (v->type != ValueType::string)
    fail(Errc::format, source_, std::string(key) + " has type " + value_type_name(v->type) + ", not string");
  return v->s;
}

std::optional<bool> File::get_bool(std::string_view key) const {
  const Value* v = find(key);
  if (!v) return std::nullopt;
  if (v->type != ValueType::boolean)
    fail(Errc::format, source_, std::string(key) + " has type " + value_type_name(v->type) + ", not bool");
  return v->u != 0;
}

uint64_t File::require_uint(std::string_view key) const {
  auto v = get_uint(key);
  if (!v) fail(Errc::format, source_, "missing metadata " + std::string(key));
  return *v;
}

std::string File::require_string(std::string_view key) const {
  auto v = get_string(key);
  if (!v) fail(Errc::format, source_, "missing metadata " + std::string(key));
  return *v;
}

std::optional<std::vector<std::string>> File::get_strings(std::string_view key) const {
  const Value* v = find(key);
  if (!v) return std::nullopt;
  if (v->type != ValueType::array || v->elem_type != ValueType::string)
    fail(Errc::format, source_, std::string(key) + " is not an array of strings");
  std::vector<std::string> out;
  out.reserve(v->items.size());
  for (const auto& it : v->items) out.push_back(it.s);
  return out;
}

std::vector<float> File::dequantize(const TensorInfo& t) const {
  std::vector<float> out(size_t(t.numel));
  gguf::dequantize(t.type, t.data, out.data(), t.numel, source_ + ": tensor '" + t.name + "'");
  return out;
}

}  // namespace skv::gguf
