// skv encode: dump (safetensors) -> .skv container.
#include <fmt/core.h>

#include "cli.hpp"
#include "device.hpp"
#include "dump_input.hpp"
#include "plan_args.hpp"
#include "report.hpp"
#include "skv/codec.hpp"
#include "skv/error.hpp"
#include "skv/formats/file_io.hpp"

namespace skv::cli {
namespace {

struct EncodeArgs {
  std::string input = "-", output, layout = "htd", device = "auto";
  bool force = false, json = false;
  int threads = 0;
  PlanArgs plan;
};

int run_encode(const EncodeArgs& a, const Globals& g) {
  const Device device = resolve_device(a.device);
  Dump dump = open_dump(a.input, parse_layout(a.layout));
  PlanArgs pa = a.plan;
  pa.threads = a.threads;
  // Stream through a mapped dump: hand each layer's pages back once a planning pass has read it
  // and once it is encoded.
  const auto release_layer = [&dump](int l) {
    const KvLayer& L = dump.cache.layers[size_t(l)];
    for (const TensorView* t : {&L.k, &L.v}) dump.reader->release(t->bytes);
    if (L.q) dump.reader->release(L.q->bytes);
  };
  const PlanResult pr = build_plan(dump.cache, pa, release_layer);
  const std::string out_path = a.output.empty() ? default_output(a.input, ".skv") : a.output;
  OutputFile out(out_path, {.force = a.force});
  EncodeOptions eo;
  eo.threads = a.threads;
  eo.layer_done = release_layer;
  const EncodeResult r = encode_on(device, dump.cache, pr.plan, out, eo);
  out.commit();
  const bool data_on_stdout = out_path == "-";
  if (a.json) {
    nlohmann::json j = container_json(r.info, r.bytes);
    j["input"] = a.input;
    j["output"] = out_path;
    if (!pr.notes.empty()) j["plan_notes"] = pr.notes;
    if (!pr.report.policy.empty()) j["plan"] = report_json(pr.report);
    print_json(j, data_on_stdout);
  } else if (g.verbosity > 0) {
    fmt::print(stderr, "{} -> {}: {} -> {} (budget {:.4f} achieved{}, nominal {:.4f}; {})\n",
               a.input, out_path, human_bytes(dump.cache.shape.fp16_bytes()),
               human_bytes(r.bytes.total), r.info.achieved_budget,
               r.info.requested_budget > 0 ? fmt::format(" of {:.4f} requested", r.info.requested_budget) : "",
               r.info.nominal_budget, tier_summary(r.info.tiers));
    if (g.verbosity > 1)
      for (const auto& n : pr.notes) fmt::print(stderr, "  {}\n", n);
  }
  return kExitOk;
}

}  // namespace

void setup_encode(CLI::App& app, Context& ctx) {
  auto a = std::make_shared<EncodeArgs>();
  auto* sub = app.add_subcommand("encode", "Encode a KV dump (safetensors) into an .skv container");
  sub->add_option("input", a->input, "KV dump (.safetensors); '-' or nothing reads stdin");
  sub->add_option("-o,--output", a->output,
                  "Output container; '-' is stdout (default: INPUT with .skv, stdout for stdin)");
  sub->add_flag("-f,--force", a->force, "Overwrite an existing output file");
  sub->add_option("--layout", a->layout, "Element order of K/V in the dump: htd ([heads, tokens, dim]) or thd ([tokens, heads, dim])")
      ->check(CLI::IsMember({"htd", "thd"}));
  sub->add_option("--threads", a->threads, "Worker threads (0 = all cores); output does not depend on it")
      ->check(CLI::NonNegativeNumber);
  sub->add_flag("--json", a->json, "Print a JSON summary (to stderr when the container goes to stdout)");
  add_device_option(*sub, a->device);
  add_plan_options(*sub, a->plan);
  ctx.add(sub, [a, &ctx] { return run_encode(*a, ctx.globals); });
}

}  // namespace skv::cli
