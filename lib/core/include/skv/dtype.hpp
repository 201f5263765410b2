// Element types of dumped tensors and their names in outside formats.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace skv {

enum class DType : uint8_t { F16 = 0, BF16 = 1, F32 = 2, U8 = 3, BOOL = 4, I8 = 5, I32 = 6, I64 = 7 };

size_t dtype_size(DType t) noexcept;
// safetensors spelling: "F16", "BF16", "F32", "U8", "BOOL", "I8", "I32", "I64".
std::string_view dtype_name(DType t) noexcept;
std::optional<DType> dtype_from_name(std::string_view name) noexcept;
inline bool is_float(DType t) noexcept { return t == DType::F16 || t == DType::BF16 || t == DType::F32; }

}  // namespace skv
