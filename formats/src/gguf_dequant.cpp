// Dequantization of ggml block formats to F32. Block layouts follow ggml-common.h:
//   Q4_0: f16 d, u8 qs[16]        x[j] = (lo(qs[j]) - 8) * d, x[j+16] = (hi(qs[j]) - 8) * d
//   Q4_1: f16 d, f16 m, u8 qs[16] x[j] = lo(qs[j]) * d + m,   x[j+16] = hi(qs[j]) * d + m
//   Q8_0: f16 d, i8 qs[32]        x[j] = qs[j] * d
#include <cstring>

#include "skv/error.hpp"
#include "skv/formats/gguf.hpp"
#include "skv/half.hpp"

namespace skv::gguf {
namespace {

uint16_t load_u16(const std::byte* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

void dq_q4_0(const std::byte* src, float* dst, uint64_t blocks) {
  for (uint64_t b = 0; b < blocks; ++b, src += 18, dst += 32) {
    const float d = f16_to_f32(load_u16(src));
    const auto* qs = reinterpret_cast<const uint8_t*>(src + 2);
    for (int j = 0; j < 16; ++j) {
      dst[j] = float(int(qs[j] & 0x0F) - 8) * d;
      dst[j + 16] = float(int(qs[j] >> 4) - 8) * d;
    }
  }
}

void dq_q4_1(const std::byte* src, float* dst, uint64_t blocks) {
  for (uint64_t b = 0; b < blocks; ++b, src += 20, dst += 32) {
    const float d = f16_to_f32(load_u16(src));
    const float m = f16_to_f32(load_u16(src + 2));
    const auto* qs = reinterpret_cast<const uint8_t*>(src + 4);
    for (int j = 0; j < 16; ++j) {
      dst[j] = float(qs[j] & 0x0F) * d + m;
      dst[j + 16] = float(qs[j] >> 4) * d + m;
    }
  }
}

void dq_q8_0(const std::byte* src, float* dst, uint64_t blocks) {
  for (uint64_t b = 0; b < blocks; ++b, src += 34, dst += 32) {
    const float d = f16_to_f32(load_u16(src));
    const auto* qs = reinterpret_cast<const int8_t*>(src + 2);
    for (int j = 0; j < 32; ++j) dst[j] = float(qs[j]) * d;
  }
}

}  // namespace

bool can_dequantize(GgmlType t) noexcept {
  switch (t) {
    case GgmlType::F32: case GgmlType::F16: case GgmlType::BF16:
    case GgmlType::Q4_0: case GgmlType::Q4_1: case GgmlType::Q8_0: return true;
    default: return false;
  }
}

void dequantize(GgmlType type, std::span<const std::byte> src, float* dst, uint64_t n,
                const std::string& what) {
  const auto bl = block_layout(uint32_t(type));
  if (!bl || !can_dequantize(type))
    fail(Errc::unsupported, what, std::string("cannot dequantize ggml type ") + ggml_type_name(type));
  if (n % bl->elements != 0 || src.size() != n / bl->elements * bl->bytes)
    fail(Errc::format, what, std::to_string(src.size()) + " bytes do not hold " + std::to_string(n) + " " +
                                 ggml_type_name(type) + " elements");
  const std::byte* p = src.data();
  const uint64_t blocks = n / bl->elements;
  switch (type) {
    case GgmlType::F32: std::memcpy(dst, p, size_t(n) * 4); break;
    case GgmlType::F16:
      for (uint64_t k = 0; k < n; ++k) dst[k] = f16_to_f32(load_u16(p + 2 * k));
      break;
    case GgmlType::BF16:
      for (uint64_t k = 0; k < n; ++k) dst[k] = bf16_to_f32(load_u16(p + 2 * k));
      break;
    case GgmlType::Q4_0: dq_q4_0(p, dst, blocks); break;
    case GgmlType::Q4_1: dq_q4_1(p, dst, blocks); break;
    case GgmlType::Q8_0: dq_q8_0(p, dst, blocks); break;
    default: break;
  }
}

}  // namespace skv::gguf
