// skv decode: .skv container -> dump (safetensors), streamed layer by layer.
#include <fmt/core.h>

#include <algorithm>
#include <optional>

#include "cli.hpp"
#include "device.hpp"
#include "report.hpp"
#include "skv/codec.hpp"
#include "skv/error.hpp"
#include "skv/formats/file_io.hpp"
#include "skv/formats/safetensors.hpp"

namespace skv::cli {
namespace {

struct DecodeArgs {
  std::string input = "-", output, dtype, layers, device = "auto";
  bool force = false, json = false;
  int threads = 0;
  uint64_t max_output_bytes = 0;  // 0: the default below
};

// --max-output-bytes by default: a container is at least ~1/64 the size of what it decodes to
// unless it drops nearly everything, so a larger claim is refused unless asked for. Without a
// known input size (a pipe), a fixed cap.
constexpr uint64_t kOutputPerInputByte = 64;
constexpr uint64_t kMinOutputCap = uint64_t(256) << 20;
constexpr uint64_t kPipeOutputCap = uint64_t(64) << 30;

// Refuses, before any output exists, a container that would decode to more than the cap: its
// manifest alone can claim terabytes of zeros (all tokens dropped) in a few hundred bytes.
void check_output_size(const DecodeArgs& a, const InputStream& in, const ContainerInfo& info,
                       const std::vector<bool>& want, std::optional<DType> dtype) {
  const KvShape& s = info.shape;
  const uint64_t es = dtype_size(dtype.value_or(s.dtype));
  const uint64_t per_layer = 2 * uint64_t(s.kv_heads) * uint64_t(s.tokens) * uint64_t(s.head_dim) * es +
                             (info.has_drops ? uint64_t(s.tokens) : 0);
  const uint64_t total = per_layer * uint64_t(std::count(want.begin(), want.end(), true));
  uint64_t cap = a.max_output_bytes;
  std::string why = "--max-output-bytes";
  if (cap == 0 && in.size()) {
    cap = std::max(kMinOutputCap, kOutputPerInputByte * *in.size());
    why = fmt::format("the default --max-output-bytes (64 x the {}-byte input, at least 256 MiB)", *in.size());
  } else if (cap == 0) {
    cap = kPipeOutputCap;
    why = "the default --max-output-bytes for an input of unknown size (64 GiB)";
  }
  if (total > cap)
    fail(Errc::invalid_argument, a.input,
         fmt::format("decodes to {} bytes, more than the {} allowed by {}; pass a larger --max-output-bytes to decode it",
                     total, cap, why));
}

std::optional<DType> parse_out_dtype(const std::string& s) {
  if (s.empty()) return std::nullopt;
  if (s == "f16" || s == "F16") return DType::F16;
  if (s == "bf16" || s == "BF16") return DType::BF16;
  if (s == "f32" || s == "F32") return DType::F32;
  fail(Errc::invalid_argument, "--dtype", "expected f16, bf16 or f32, got '" + s + "'");
}

int run_decode(const DecodeArgs& a, const Globals& g) {
  const Device device = resolve_device(a.device);
  InputStream in = InputStream::open(a.input);
  ContainerReader reader(in, a.input);
  reader.set_threads(a.threads);
  LayerSource layers(device, reader);
  const ContainerInfo& info = reader.info();
  const int nl = info.shape.layers;
  std::vector<bool> want(size_t(nl), a.layers.empty());
  for (int l : a.layers.empty() ? std::vector<int>{} : parse_layer_list(a.layers, nl)) want[size_t(l)] = true;
  const std::optional<DType> dtype = parse_out_dtype(a.dtype);
  check_output_size(a, in, info, want, dtype);

  std::string out_path = a.output;
  if (out_path.empty()) {
    out_path = default_output(a.input, ".safetensors");
    if (out_path == a.input) out_path += ".safetensors";
  }
  OutputFile out(out_path, {.force = a.force});
  std::optional<safetensors::Writer> writer;
  std::vector<std::pair<std::string, TensorView>> pending;
  DecodedLayer layer;
  int written_layers = 0;
  for (int l = 0; layers.next_layer(layer, dtype, !want[size_t(l)]); ++l) {
    if (!want[size_t(l)]) continue;
    if (!writer) {
      // Every layer has the same shapes, so the first decoded one fixes the whole header.
      std::vector<safetensors::WriteSpec> specs;
      for (int j = 0; j < nl; ++j) {
        if (!want[size_t(j)]) continue;
        specs.push_back({info.k_names[size_t(j)], layer.k.dtype, layer.k.shape});
        specs.push_back({info.v_names[size_t(j)], layer.v.dtype, layer.v.shape});
        if (layer.mask) {
          std::string mname = j < int(info.mask_names.size()) && !info.mask_names[size_t(j)].empty()
                                  ? info.mask_names[size_t(j)]
                                  : fmt::format("layers.{}.mask", j);
          specs.push_back({mname, DType::U8, layer.mask->shape});
        }
      }
      writer.emplace(out, std::move(specs), info.metadata);
    }
    writer->write(layer.k.data.span());
    writer->write(layer.v.data.span());
    if (layer.mask) writer->write(layer.mask->data.span());
    ++written_layers;
  }
  if (!writer) fail(Errc::format, a.input, "container holds no layers to decode");
  writer->finish();
  out.commit();
  if (a.json) {
    nlohmann::json j = container_json(info, reader.breakdown());
    j["input"] = a.input;
    j["output"] = out_path;
    j["decoded_layers"] = written_layers;
    print_json(j, out_path == "-");
  } else if (g.verbosity > 0) {
    fmt::print(stderr, "{} -> {}: {} layers, {} tokens, {}\n", a.input, out_path, written_layers,
               info.shape.tokens, tier_summary(info.tiers));
  }
  return kExitOk;
}

}  // namespace

void setup_decode(CLI::App& app, Context& ctx) {
  auto a = std::make_shared<DecodeArgs>();
  auto* sub = app.add_subcommand("decode", "Decode an .skv container back into a KV dump (safetensors)");
  sub->add_option("input", a->input, "Container (.skv); '-' or nothing reads stdin");
  sub->add_option("-o,--output", a->output,
                  "Output dump; '-' is stdout (default: INPUT with .safetensors, stdout for stdin)");
  sub->add_flag("-f,--force", a->force, "Overwrite an existing output file");
  sub->add_option("--dtype", a->dtype, "Output element type: f16, bf16 or f32 (default: the source's)")
      ->check(CLI::IsMember({"f16", "bf16", "f32", "F16", "BF16", "F32"}));
  sub->add_option("--layers", a->layers, "Decode only these layers, e.g. 0-3,7 (others are verified and skipped)");
  sub->add_option("--threads", a->threads, "Worker threads per layer (0 = all cores); output does not depend on it")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--max-output-bytes", a->max_output_bytes,
                  "Refuse containers that decode to more bytes than this, e.g. 100G (default: 64 x the input "
                  "size, at least 256M; 64G when the input size is unknown)")
      ->transform(CLI::AsSizeValue(false));
  sub->add_flag("--json", a->json, "Print a JSON summary (to stderr when the dump goes to stdout)");
  add_device_option(*sub, a->device);
  ctx.add(sub, [a, &ctx] { return run_decode(*a, ctx.globals); });
}

}  // namespace skv::cli
