// encode_cuda / LayerDecoder: the CPU container codec with each layer's streams made (or
// consumed) by the CUDA kernels, through EncodeOptions::layer_streams and
// ContainerReader::next_layer_streams.
#include "skv/cuda/container.hpp"

#include <algorithm>
#include <memory>
#include <vector>

#include "skv/cuda/check.hpp"
#include "skv/cuda/codec.hpp"
#include "skv/cuda/pipeline.hpp"
#include "skv/error.hpp"

namespace skv::cuda {
namespace {

// One cudaMalloc'd buffer, freed on scope exit.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t n) { SKV_CUDA_CHECK(cudaMalloc(&p_, n ? n : 1)); }
  ~DeviceBuffer() { (void)cudaFree(p_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  template <class T = uint8_t> T* get() const { return static_cast<T*>(p_); }

 private:
  void* p_ = nullptr;
};

// The RoPE tables on the device (prerope_centre only; otherwise empty): one per distinct layer
// RoPE (KvMeta::rope_for_layer), not per layer; layer(l) is layer l's.
class DeviceRope {
 public:
  DeviceRope() = default;
  DeviceRope(const LayerGeometry& g, const KvMeta& rope, int layers) {
    if (g.key_transform != KeyTransform::prerope_centre) return;
    std::vector<float> table(rope_table_floats(g));
    for (int l = 0; l < layers; ++l) {
      const RopeParams p = rope.rope_for_layer(l);
      size_t i = 0;
      while (i < params_.size() && !(params_[i] == p)) ++i;
      if (i == params_.size()) {
        fill_rope_table(g, p, rope.position_offset, table.data());
        auto d = std::make_unique<DeviceBuffer>(table.size() * sizeof(float));
        SKV_CUDA_CHECK(cudaMemcpy(d->get(), table.data(), table.size() * sizeof(float), cudaMemcpyHostToDevice));
        params_.push_back(p);
        tables_.push_back(std::move(d));
      }
      index_.push_back(i);
    }
  }
  const float* layer(int l) const { return index_.empty() ? nullptr : tables_[index_[size_t(l)]]->get<float>(); }

 private:
  std::vector<RopeParams> params_;
  std::vector<std::unique_ptr<DeviceBuffer>> tables_;
  std::vector<size_t> index_;
};

constexpr size_t round256(size_t n) { return (n + 255) & ~size_t(255); }

}  // namespace

EncodeResult encode_cuda(const KvCache& cache, const Plan& plan, ByteSink& out, const EncodeOptions& opts) {
  // Made on the first layer, after encode() has validated the cache and plan.
  DeviceRope rope;  // declared before the pipeline, which uses it
  std::unique_ptr<EncodePipeline> pipe;
  int submitted = 0;
  const int L = cache.shape.layers;
  const size_t T = size_t(plan.tokens);
  EncodeOptions o = opts;
  o.layer_streams = [&](int l, LayerStreamViews& streams) {
    if (!pipe) {
      const LayerGeometry g = make_geometry(cache.shape, cache.layout, plan.quant, cache.meta.rope_style, cache.source);
      // encode() has checked cache.meta.prerope_ok(): rope_for_layer(l) is what the manifest says.
      rope = DeviceRope(g, cache.meta, L);
      pipe = std::make_unique<EncodePipeline>(g, rope.layer(0));
    }
    // Keep the next layer encoding while the writer compresses and writes this one. Layer l-1's
    // payload (the slot layer l+1 takes) has been written by the time layer l is asked for.
    for (; submitted < std::min(l + 2, L); ++submitted) {
      const KvLayer& layer = cache.layers[size_t(submitted)];
      const size_t at = size_t(submitted) * T;
      pipe->submit(layer.k.bytes.data(), layer.v.bytes.data(),
                   reinterpret_cast<const uint8_t*>(plan.k_tiers.data() + at),
                   reinterpret_cast<const uint8_t*>(plan.v_tiers.data() + at), rope.layer(submitted));
    }
    const EncodePipeline::Done done = pipe->next(cache.source);
    if (done.layer != l) fail(Errc::cuda, cache.source, "internal: GPU pipeline returned the wrong layer");
    const auto views = split_streams(done.plan, done.payload);
    std::copy(views.begin(), views.end(), streams.begin());
  };
  return encode(cache, plan, out, o);
}

struct LayerDecoder::Impl {
  ContainerReader& reader;
  LayerGeometry geo;
  DeviceRope rope;
  std::unique_ptr<DeviceBuffer> payload, kv, workspace;
  uint8_t* h_payload = nullptr;  // pinned
  size_t payload_cap = 0, workspace_size = 0, kv_stride = 0;
  cudaStream_t stream = nullptr;
  LayerStreams ls;

  explicit Impl(ContainerReader& r) : reader(r) {}
  ~Impl() {
    if (stream) (void)cudaStreamSynchronize(stream);
    (void)cudaFreeHost(h_payload);
    if (stream) (void)cudaStreamDestroy(stream);
  }

  void setup() {
    const ContainerInfo& info = reader.info();
    geo = make_geometry(info.shape, info.layout, info.quant, info.rope.rope_style, "container");
    if (geo.key_transform == KeyTransform::prerope_centre) rope = DeviceRope(geo, info.rope, info.shape.layers);
    payload_cap = max_layer_bytes(geo);
    workspace_size = workspace_bytes(geo);
    kv_stride = round256(size_t(geo.kv_heads) * size_t(geo.tokens) * size_t(geo.head_dim) * 4);
    SKV_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    SKV_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&h_payload), payload_cap));
    payload = std::make_unique<DeviceBuffer>(payload_cap);
    kv = std::make_unique<DeviceBuffer>(2 * kv_stride + size_t(geo.tokens));  // K, V, mask
    workspace = std::make_unique<DeviceBuffer>(workspace_size);
  }

  bool next_layer(DecodedLayer& out, std::optional<DType> want, bool skip) {
    const ContainerInfo& info = reader.info();
    const DType dt = want.value_or(info.shape.dtype);
    if (!is_float(dt)) fail(Errc::invalid_argument, "container", "decode dtype must be F16, BF16 or F32");
    if (skip) return reader.next_layer(out, want, true);  // verified on the host, nothing to decode
    if (!reader.next_layer_streams(ls)) return false;
    if (!stream) setup();
    const int l = ls.index;
    const std::string ctx = "layer " + std::to_string(l);
    const LayerPlan plan = plan_layer(geo, ls.streams[kKMap].data(), ls.streams[kVMap].data(), ctx);
    join_streams(plan, ls.streams, h_payload);
    SKV_CUDA_CHECK(cudaMemcpyAsync(payload->get(), h_payload, plan.payload_bytes, cudaMemcpyHostToDevice, stream));
    LayerOutputs o;
    o.k = kv->get();
    o.v = kv->get() + kv_stride;
    o.dtype = dt;
    o.mask = info.has_drops ? kv->get() + 2 * kv_stride : nullptr;
    decode_layer_async(plan, payload->get(), rope.layer(l), o, workspace->get(),
                       workspace_size, stream);
    for (int k_or_v = 0; k_or_v < 2; ++k_or_v) {
      Tensor& t = k_or_v ? out.v : out.k;
      const Shape& shape = k_or_v ? ls.v_shape : ls.k_shape;
      if (t.dtype != dt || t.shape != shape || !t.data.data()) t = Tensor(dt, shape);
      SKV_CUDA_CHECK(cudaMemcpyAsync(t.data.data(), k_or_v ? o.v : o.k, t.data.size(), cudaMemcpyDeviceToHost, stream));
    }
    out.q.reset();
    out.mask.reset();
    if (o.mask) {
      out.mask = Tensor(DType::U8, Shape{int64_t(geo.tokens)});
      SKV_CUDA_CHECK(cudaMemcpyAsync(out.mask->data.data(), o.mask, size_t(geo.tokens), cudaMemcpyDeviceToHost, stream));
    }
    throw_if_failed(read_status(workspace->get(), plan, stream), plan, l, "container");  // synchronises
    out.index = l;
    out.tiers = ls.tiers;
    return true;
  }
};

LayerDecoder::LayerDecoder(ContainerReader& reader) : impl_(new Impl(reader)) {}
LayerDecoder::~LayerDecoder() { delete impl_; }
bool LayerDecoder::next_layer(DecodedLayer& out, std::optional<DType> out_dtype, bool skip) {
  return impl_->next_layer(out, out_dtype, skip);
}

}  // namespace skv::cuda
