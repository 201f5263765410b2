#include "skv/model/kv_bridge.hpp"

#include <cstring>
#include <string>

#include "skv/error.hpp"
#include "skv/half.hpp"

namespace skv::model {
namespace {

void to_float(const std::byte* p, DType t, float* out, int n) {
  for (int e = 0; e < n; ++e) {
    switch (t) {
      case DType::F32: std::memcpy(out + e, p + 4 * e, 4); break;
      case DType::F16: { uint16_t h; std::memcpy(&h, p + 2 * e, 2); out[e] = f16_to_f32(h); break; }
      case DType::BF16: { uint16_t h; std::memcpy(&h, p + 2 * e, 2); out[e] = bf16_to_f32(h); break; }
      default: break;
    }
  }
}

}  // namespace

void assign_from(KvCacheObject& dst, const KvCache& src) {
  const KvShape& s = src.shape;
  if (s.layers != dst.layers() || s.kv_heads != dst.kv_heads() || s.head_dim != dst.head_dim() ||
      s.tokens != dst.tokens())
    fail(Errc::invalid_argument, src.source,
         "cache shape " + std::to_string(s.layers) + "x" + std::to_string(s.kv_heads) + "x" +
             std::to_string(s.tokens) + "x" + std::to_string(s.head_dim) + " does not match the model's " +
             std::to_string(dst.layers()) + "x" + std::to_string(dst.kv_heads()) + "x" +
             std::to_string(dst.tokens()) + "x" + std::to_string(dst.head_dim()));
  if (!is_float(s.dtype)) fail(Errc::invalid_argument, src.source, "K/V dtype is not a float type");
  const int hd = s.head_dim;
  for (int l = 0; l < s.layers; ++l) {
    for (int h = 0; h < s.kv_heads; ++h)
      for (int t = 0; t < s.tokens; ++t) {
        const size_t at = size_t(h) * dst.head_stride() + size_t(t) * size_t(hd);
        to_float(src.row(l, false, h, t), s.dtype, dst.k_data(l) + at, hd);
        to_float(src.row(l, true, h, t), s.dtype, dst.v_data(l) + at, hd);
      }
    auto mask = dst.mask(l);
    const auto& m = src.layers[size_t(l)].mask;
    for (int t = 0; t < s.tokens; ++t)
      mask[size_t(t)] = m ? uint8_t(m->bytes[size_t(t)] != std::byte{0}) : uint8_t(1);
  }
}

}  // namespace skv::model
