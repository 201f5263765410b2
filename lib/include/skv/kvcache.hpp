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

// RoPE frequency scaling, as HuggingFace config.json's `rope_scaling` (formats/skv.md, "RoPE
// frequencies"). Only the types whose inv_freq skv reproduces exactly are here; the others make
// KvMeta::rope_unsupported non-empty.
enum class RopeScalingType : uint8_t { none = 0, linear = 1, llama3 = 2 };

struct RopeScaling {
  RopeScalingType type = RopeScalingType::none;
  double factor = 1;                               // linear, llama3
  double low_freq_factor = 1, high_freq_factor = 4;  // llama3
  double original_max_position_embeddings = 8192;  // llama3
  bool operator==(const RopeScaling&) const = default;
};

// The RoPE frequencies of one layer: base theta and scaling (style and offset are per cache).
struct RopeParams {
  double theta = 0;
  RopeScaling scaling;
  bool operator==(const RopeParams&) const = default;
};

// inv_freq of pair j in [0, head_dim / 2), in f64, as formats/skv.md defines it for `p`.
double rope_inv_freq(const RopeParams& p, int j, int head_dim);

// Metadata values as parse_kv_meta reads them: a JSON list of thetas (shortest round-trip
// numbers), and rope_scaling as config.json spells it ({"rope_type": "linear", "factor": 4}).
std::string rope_theta_json(const std::vector<double>& thetas);
std::string rope_scaling_json(const RopeScaling& s);

// What skv understands of a dump's __metadata__ (all optional).
struct KvMeta {
  std::string model, architecture;
  // Base theta: empty when unknown, one value for every layer, or one per layer.
  std::vector<double> rope_theta;
  RopeScaling rope_scaling;  // the same for every layer
  RopeStyle rope_style = RopeStyle::unknown;
  int64_t position_offset = 0;
  // Non-empty when the metadata describes RoPE skv cannot reproduce (an unsupported
  // rope_scaling type, partial rotary dimensions, ...): says what, e.g. "rope_scaling type
  // 'yarn' is not supported". prerope_centre is then unavailable.
  std::string rope_unsupported;
  int rotary_dim = 0;  // rotary_dim metadata (0 = not given: all of head_dim rotates)
  std::optional<int64_t> needle_start, needle_len;

  // Why prerope_centre cannot be used on a cache of this shape, or "" when it can (theta and
  // style known, a theta list of one per layer, head_dim even and all rotated, nothing
  // unsupported). The text completes "prerope_centre: ...".
  std::string prerope_unavailable(const KvShape& shape) const;
  bool prerope_ok(const KvShape& shape) const { return prerope_unavailable(shape).empty(); }
  // Layer l's RoPE frequencies; needs a non-empty rope_theta.
  RopeParams rope_for_layer(int l) const;
  // One theta for every layer (rope_theta has one value, or all its values are equal) and no
  // scaling: the description format 1.0 can hold.
  bool rope_v1() const;
  // One line for skv inspect: "theta 10000 (layers 0-4, 6-10), 1000000 (layers 5, 11) scaling
  // llama3 factor 8 ...", without style and offset; "" when rope_theta is empty.
  std::string rope_summary() const;
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

// Parses the metadata keys skv understands; throws Errc::format, naming `source`, on a malformed
// value. `layers` (0 = unknown) checks the length of a per-layer rope_theta list and resolves
// sliding_window_pattern. RoPE keys (README.md, "Dump layout"):
//   rope_theta             number, or a JSON list of one number per layer
//   rope_local_base_freq   theta of the sliding-window layers (Gemma 3), with layer_types (JSON
//                          list, "sliding_attention" entries are local) or sliding_window_pattern
//                          (N: layer l is local unless (l + 1) % N == 0); rope_theta is then the
//                          global layers' theta
//   rope_scaling           JSON object as in config.json: rope_type (or type) "default",
//                          "linear" (factor) or "llama3" (factor, low_freq_factor,
//                          high_freq_factor, original_max_position_embeddings); other types
//                          are recorded as unsupported
//   partial_rotary_factor, rotary_dim   anything but full rotation is recorded as unsupported
KvMeta parse_kv_meta(const std::map<std::string, std::string>& metadata, const std::string& source,
                     int layers = 0);

}  // namespace skv
