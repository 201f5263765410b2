#include "skv/dtype.hpp"

#include <array>
#include <utility>

namespace skv {
namespace {
constexpr std::array<std::pair<DType, std::string_view>, 8> kNames{{
    {DType::F16, "F16"}, {DType::BF16, "BF16"}, {DType::F32, "F32"}, {DType::U8, "U8"},
    {DType::BOOL, "BOOL"}, {DType::I8, "I8"}, {DType::I32, "I32"}, {DType::I64, "I64"}}};
}

size_t dtype_size(DType t) noexcept {
  switch (t) {
    case DType::F16: case DType::BF16: return 2;
    case DType::F32: case DType::I32: return 4;
    case DType::I64: return 8;
    case DType::U8: case DType::BOOL: case DType::I8: return 1;
  }
  return 0;
}

std::string_view dtype_name(DType t) noexcept {
  for (auto& [d, n] : kNames)
    if (d == t) return n;
  return "?";
}

std::optional<DType> dtype_from_name(std::string_view name) noexcept {
  for (auto& [d, n] : kNames)
    if (n == name) return d;
  return std::nullopt;
}

}  // namespace skv
