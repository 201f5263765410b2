#include "device.hpp"

#include "skv/error.hpp"
#ifdef SKV_HAVE_CUDA
#include "skv/cuda/codec.hpp"
#include "skv/cuda/container.hpp"
#endif

namespace skv::cli {

void add_device_option(CLI::App& sub, std::string& choice) {
  sub.add_option("--device", choice,
                 "Run the layer codec on cpu, cuda or auto (cuda when this build has it and a GPU is "
                 "usable, else cpu); the bytes do not depend on it")
      ->check(CLI::IsMember({"cpu", "cuda", "auto"}));
}

Device resolve_device(const std::string& choice) {
  if (choice == "cpu") return Device::cpu;
  std::string why;
#ifdef SKV_HAVE_CUDA
  if (cuda::cuda_available(&why)) return Device::cuda;
#else
  why = "this skv was built without CUDA (configure with -DSKV_CUDA=ON)";
#endif
  if (choice == "cuda") fail(Errc::unsupported, "--device cuda", why);
  return Device::cpu;
}

EncodeResult encode_on(Device device, const KvCache& cache, const Plan& plan, ByteSink& out,
                       const EncodeOptions& opts) {
#ifdef SKV_HAVE_CUDA
  if (device == Device::cuda) return cuda::encode_cuda(cache, plan, out, opts);
#else
  (void)device;
#endif
  return encode(cache, plan, out, opts);
}

#ifdef SKV_HAVE_CUDA
struct LayerSource::Gpu {
  explicit Gpu(ContainerReader& reader) : decoder(reader) {}
  cuda::LayerDecoder decoder;
};
#else
struct LayerSource::Gpu {};
#endif

LayerSource::LayerSource(Device device, ContainerReader& reader) : reader_(reader) {
#ifdef SKV_HAVE_CUDA
  if (device == Device::cuda) gpu_ = std::make_unique<Gpu>(reader);
#else
  (void)device;
#endif
}

LayerSource::~LayerSource() = default;

bool LayerSource::next_layer(DecodedLayer& out, std::optional<DType> dtype, bool skip) {
#ifdef SKV_HAVE_CUDA
  if (gpu_) return gpu_->decoder.next_layer(out, dtype, skip);
#endif
  return reader_.next_layer(out, dtype, skip);
}

}  // namespace skv::cli
