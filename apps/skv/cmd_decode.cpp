// skv decode: .skv container -> dump (safetensors), streamed layer by layer.
#include <fmt/core.h>

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
};

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
  sub->add_flag("--json", a->json, "Print a JSON summary (to stderr when the dump goes to stdout)");
  add_device_option(*sub, a->device);
  ctx.add(sub, [a, &ctx] { return run_decode(*a, ctx.globals); });
}

}  // namespace skv::cli
