// The KV layout model: a view over a dump as layers x {K, V} x kv_heads x tokens x head_dim, plus
// optional observation queries and token masks per layer. Views point into the dump (mmap), so
// building a KvCache copies no tensor data.
#pragma once
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "skv/tensor.hpp"

namespace skv {

// Element order of K/V tensors in the dump.
enum class Layout : uint8_t {
  HTD = 0,  // [kv_heads, tokens, head_dim] (canonical, HuggingFace without batch)
  THD = 1,  // [tokens, kv_heads, head_dim] (vLLM / flash-attn)
};

enum class RopeStyle : uint8_t { unknown = 0, neox = 1, gptj = 2 };

struct KvShape {
  int layers = 0, kv_heads = 0, tokens = 0, head_dim = 0;
  int q_heads = 0, window = 0;  // 0 when the dump carries no queries
  DType dtype = DType::F16;     // K and V element type (F16, BF16 or F32)
  int64_t elements() const { return int64_t(layers) * 2 * kv_heads * tokens * head_dim; }
  uint64_t fp16_bytes() const { return uint64_t(elements()) * 2; }  // the budget's denominator
};

// What skv understands of a dump's __metadata__ (all optional).
struct KvMeta {
  std::string model, architecture;
  std::optional<double> rope_theta;
  RopeStyle rope_style = RopeStyle::unknown;
  int64_t position_offset = 0;
  std::optional<int64_t> needle_start, needle_len;
};

struct KvLayer {
  TensorView k, v;                // in `layout` order
  std::optional<TensorView> q;    // [q_heads, window, head_dim], always HTD order
  std::optional<TensorView> mask; // U8/BOOL [tokens], nonzero = present
  std::string k_name, v_name, q_name, mask_name;  // names in the source dump
};

struct KvCache {
  KvShape shape;
  Layout layout = Layout::HTD;
  KvMeta meta;
  std::map<std::string, std::string> metadata;  // the dump's __metadata__, verbatim
  std::vector<KvLayer> layers;
  std::string source;  // file name, for error messages

  // Pointer to the head_dim contiguous elements of (layer, K or V, head, token).
  const std::byte* row(int layer, bool value, int head, int token) const {
    const KvLayer& L = layers[size_t(layer)];
    const TensorView& t = value ? L.v : L.k;
    const size_t es = dtype_size(shape.dtype);
    const size_t idx = layout == Layout::HTD
                           ? (size_t(head) * size_t(shape.tokens) + size_t(token))
                           : (size_t(token) * size_t(shape.kv_heads) + size_t(head));
    return t.bytes.data() + idx * size_t(shape.head_dim) * es;
  }
};

// Builds a KvCache from the named tensors of a dump. Recognises canonical names
// (layers.{L}.k/.v/.q/.mask) and HuggingFace names (past_key_values.{L}.key/.value, with an
// optional leading batch dimension of 1). Throws Errc::format, naming `source` and the tensor, on
// inconsistent layers (shape or dtype differs, a V missing, a gap in layer numbers).
KvCache kv_from_tensors(const std::vector<NamedTensor>& tensors,
                        const std::map<std::string, std::string>& metadata, Layout layout,
                        const std::string& source);

// Parses the metadata keys skv understands; throws Errc::format on a malformed value.
KvMeta parse_kv_meta(const std::map<std::string, std::string>& metadata, const std::string& source);

}  // namespace skv
