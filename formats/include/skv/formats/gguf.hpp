// GGUF (v2/v3) reader: header, typed metadata, tensor infos and dequantization to F32.
// Strict in the spirit of a safetensors reader: every count and string length is capped and
// checked against the bytes that remain, tensor data must lie inside the file, aligned, and not
// overlap, and all size arithmetic is overflow-checked. Errors are skv::Error with one line
// naming the file and what is wrong. Layout per the GGUF spec (ggml docs/gguf.md).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace skv::gguf {

enum class ValueType : uint32_t {
  u8 = 0, i8 = 1, u16 = 2, i16 = 3, u32 = 4, i32 = 5, f32 = 6, boolean = 7,
  string = 8, array = 9, u64 = 10, i64 = 11, f64 = 12,
};
const char* value_type_name(ValueType t) noexcept;

// ggml tensor element types (the subset with a known layout; others are rejected on read).
enum class GgmlType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
  Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
  I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, BF16 = 30,
};
const char* ggml_type_name(GgmlType t) noexcept;
// Elements per block and bytes per block; nullopt for an unknown type id.
struct BlockLayout { uint32_t elements, bytes; };
std::optional<BlockLayout> block_layout(uint32_t type) noexcept;
// True where dequantize() handles the type: F32, F16, BF16, Q4_0, Q4_1, Q8_0.
bool can_dequantize(GgmlType t) noexcept;

// One metadata value. Scalars use the field matching their type (unsigned ints and bool in u,
// signed ints in i, floats in f, strings in s); arrays keep their element type and items.
struct Value {
  ValueType type = ValueType::u8;
  uint64_t u = 0;
  int64_t i = 0;
  double f = 0;
  std::string s;
  ValueType elem_type = ValueType::u8;
  std::vector<Value> items;

  bool is_integer() const noexcept;
  bool is_float() const noexcept { return type == ValueType::f32 || type == ValueType::f64; }
};

struct TensorInfo {
  std::string name;
  std::vector<uint64_t> dims;  // GGUF order: dims[0] varies fastest (ggml ne0)
  GgmlType type = GgmlType::F32;
  uint64_t offset = 0;  // from the start of the data section
  uint64_t numel = 0;
  uint64_t nbytes = 0;
  std::span<const std::byte> data;  // into the file
  // Row-major shape (reverse of dims), as safetensors/numpy would write it.
  std::vector<int64_t> shape() const;
};

struct Limits {
  uint64_t max_tensors = 1u << 16;
  uint64_t max_kv = 1u << 16;
  uint64_t max_string = 1u << 24;      // one key or string value
  uint64_t max_array = 1u << 26;       // elements in one array
  uint32_t max_array_depth = 4;        // arrays of arrays
  uint32_t max_dims = 4;               // ggml's GGML_MAX_DIMS
  // Memory the parsed metadata may take (sizeof(Value) per value, plus string bytes): a u8
  // array costs ~100x its file bytes as Values, so a 48 MiB file could take 4.6 GiB. The largest
  // real vocabularies (tokens, scores, types, merges) take well under 100 MiB.
  uint64_t max_metadata_bytes = uint64_t(256) << 20;
};

class File {
 public:
  // Memory-maps path (read-only) and parses it. The mapping lives as long as the File.
  static File open(const std::string& path, const Limits& limits = {});
  // Parses bytes that the caller keeps alive; `source` names them in errors.
  static File parse(std::span<const std::byte> bytes, const std::string& source,
                    const Limits& limits = {});

  const std::string& source() const noexcept { return source_; }
  uint32_t version() const noexcept { return version_; }
  uint64_t alignment() const noexcept { return alignment_; }
  uint64_t data_offset() const noexcept { return data_offset_; }

  const std::vector<std::pair<std::string, Value>>& metadata() const noexcept { return kv_; }
  const Value* find(std::string_view key) const noexcept;
  // Typed getters: throw Errc::format naming the file and key when present with another type;
  // the *_or forms return the fallback when the key is absent.
  std::optional<uint64_t> get_uint(std::string_view key) const;  // any non-negative integer
  std::optional<double> get_float(std::string_view key) const;    // f32/f64 or integer
  std::optional<std::string> get_string(std::string_view key) const;
  std::optional<bool> get_bool(std::string_view key) const;
  uint64_t require_uint(std::string_view key) const;  // throws when absent
  std::string require_string(std::string_view key) const;
  // String array (tokenizer.ggml.tokens...); nullopt when absent.
  std::optional<std::vector<std::string>> get_strings(std::string_view key) const;

  const std::vector<TensorInfo>& tensors() const noexcept { return tensors_; }
  const TensorInfo* tensor(std::string_view name) const noexcept;
  // Dequantizes a whole tensor to F32 in dims order; throws Errc::unsupported for other types.
  std::vector<float> dequantize(const TensorInfo& t) const;

 private:
  File() = default;
  std::string source_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, Value>> kv_;
  std::vector<TensorInfo> tensors_;
  std::shared_ptr<const void> keepalive_;  // the mapping, when open() made it
};

// Dequantizes n elements (a multiple of the type's block size) of `type` from src into dst.
// `what` names the tensor in errors.
void dequantize(GgmlType type, std::span<const std::byte> src, float* dst, uint64_t n,
                const std::string& what);

}  // namespace skv::gguf
