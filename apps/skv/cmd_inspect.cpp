// skv inspect: describe a KV dump (tensors, per-layer statistics) or an .skv container (shape,
// policy, budgets, per-layer tier histogram, byte breakdown; --verify checks every checksum).
#include <fmt/core.h>

#include "cli.hpp"
#include "dump_input.hpp"
#include "report.hpp"
#include "skv/codec.hpp"
#include "skv/dump_stats.hpp"
#include "skv/error.hpp"
#include "skv/formats/file_io.hpp"

namespace skv::cli {
namespace {

const char* rope_style_name(RopeStyle s) {
  return s == RopeStyle::neox ? "neox" : s == RopeStyle::gptj ? "gptj" : "unknown";
}

struct InspectArgs {
  std::string input = "-", layout = "htd";
  bool json = false, verify = false, brief = false;
};

nlohmann::json tensor_stats_json(const TensorStats& t) {
  nlohmann::json ch = nlohmann::json::array();
  for (const auto& c : t.top_channels) ch.push_back({{"head", c.head}, {"dim", c.dim}, {"mean", c.mean}});
  return {{"absmax", t.absmax}, {"mean_abs", t.mean_abs}, {"top_channels", ch}};
}

std::string channels_str(const TensorStats& t) {
  std::string s;
  for (const auto& c : t.top_channels) s += fmt::format(" h{}/d{}={:+.3g}", c.head, c.dim, c.mean);
  return s;
}

int inspect_dump(const InspectArgs& a, std::shared_ptr<InputFile> file, const Globals& g) {
  Dump d = open_dump(std::move(file), parse_layout(a.layout));
  const KvCache& c = d.cache;
  const auto& s = c.shape;
  nlohmann::json j;
  nlohmann::json tensors = nlohmann::json::array();
  for (const auto& t : d.reader->tensors())
    tensors.push_back({{"name", t.name}, {"dtype", std::string(dtype_name(t.dtype))}, {"shape", t.shape}});
  j["kind"] = "dump";
  j["file"] = a.input;
  j["layers"] = s.layers;
  j["kv_heads"] = s.kv_heads;
  j["tokens"] = s.tokens;
  j["head_dim"] = s.head_dim;
  j["dtype"] = std::string(dtype_name(s.dtype));
  j["layout"] = a.layout;
  j["q_heads"] = s.q_heads;
  j["window"] = s.window;
  j["fp16_bytes"] = s.fp16_bytes();
  j["metadata"] = d.reader->metadata();
  j["tensors"] = tensors;

  const bool human = !a.json && g.verbosity > 0;
  if (human) {
    fmt::print("{}: KV dump, {} layers x {} kv heads x {} tokens x {} dims, {} ({} layout), {} as FP16\n",
               a.input, s.layers, s.kv_heads, s.tokens, s.head_dim, dtype_name(s.dtype), a.layout,
               human_bytes(s.fp16_bytes()));
    if (s.q_heads)
      fmt::print("observation queries: {} heads x {} window tokens\n", s.q_heads, s.window);
    if (!c.meta.model.empty()) fmt::print("model: {}\n", c.meta.model);
    if (!c.meta.rope_theta.empty() || !c.meta.rope_unsupported.empty()) {
      const std::string why = c.meta.prerope_unavailable(s);
      fmt::print("rope: {} style {} offset {}{}\n", c.meta.rope_theta.empty() ? "theta unknown" : c.meta.rope_summary(),
                 rope_style_name(c.meta.rope_style), c.meta.position_offset,
                 why.empty() ? "" : " (prerope unavailable: " + why + ")");
    }
    if (g.verbosity > 1)
      for (const auto& t : d.reader->tensors())
        fmt::print("  {:<32} {:<5} {}\n", t.name, dtype_name(t.dtype), shape_str(t.shape));
    if (!a.brief)
      fmt::print("{:>5}  {:>9} {:>9}  {:>9} {:>9}  {:>6}  {}\n", "layer", "K absmax", "K mean|x|",
                 "V absmax", "V mean|x|", "sinks", "K channels with the largest |mean|");
  }
  nlohmann::json layers = nlohmann::json::array();
  if (!a.brief) {
    const ReleaseFn release = [&](std::span<const std::byte> r) { d.reader->release(r); };
    for (int l = 0; l < s.layers; ++l) {
      const LayerStats st = layer_stats(c, l, {}, release);
      layers.push_back({{"layer", l},
                        {"k", tensor_stats_json(st.k)},
                        {"v", tensor_stats_json(st.v)},
                        {"median_key_norm", st.median_key_norm},
                        {"sink_count", st.sink_count},
                        {"sink_fraction", st.sink_fraction},
                        {"sink_tokens", st.sink_tokens}});
      if (human)
        fmt::print("{:>5}  {:>9.4g} {:>9.4g}  {:>9.4g} {:>9.4g}  {:>6}  {}\n", l, st.k.absmax,
                   st.k.mean_abs, st.v.absmax, st.v.mean_abs, st.sink_count, channels_str(st.k));
    }
    j["layer_stats"] = layers;
  }
  if (a.json) print_json(j);
  return kExitOk;
}

int inspect_container(const InspectArgs& a, const InputFile& file, const Globals& g) {
  SpanSource in(file.bytes());
  ContainerReader reader(in, a.input);
  const ContainerInfo& info = reader.info();
  nlohmann::json per_layer = nlohmann::json::array();
  DecodedLayer layer;
  // Reading every layer verifies every checksum; without --verify it still yields the tier
  // histogram, which lives in the layers' tier maps.
  // INT2 is listed only for files that declare it (format 1.1); older files show what they did.
  const int tiers = info.quant.int2 ? kNumTiers : int(Tier::DROP) + 1;
  while (reader.next_layer(layer, std::nullopt, !a.verify)) {
    nlohmann::json k, v;
    for (int t = 0; t < tiers; ++t) {
      k[tier_name(Tier(t))] = layer.tiers.k[size_t(t)];
      v[tier_name(Tier(t))] = layer.tiers.v[size_t(t)];
    }
    per_layer.push_back({{"layer", layer.index}, {"k", k}, {"v", v}});
  }
  nlohmann::json j = container_json(info, reader.breakdown());
  j["kind"] = "container";
  j["file"] = a.input;
  j["verified"] = a.verify;
  j["layer_tiers"] = per_layer;
  if (a.json) {
    print_json(j);
    return kExitOk;
  }
  if (g.verbosity <= 0) return kExitOk;
  const auto& s = info.shape;
  const ByteBreakdown b = reader.breakdown();
  const std::string version = info.format_minor ? fmt::format("{}.{}", info.format_version, info.format_minor)
                                                 : fmt::format("{}", info.format_version);
  fmt::print("{}: skv container v{}, {} layers x {} kv heads x {} tokens x {} dims, source {} ({})\n",
             a.input, version, s.layers, s.kv_heads, s.tokens, s.head_dim,
             dtype_name(s.dtype), info.layout == Layout::HTD ? "htd" : "thd");
  fmt::print("producer: {}   policy: {}\n", info.producer, info.policy);
  if (!info.rope.rope_theta.empty())
    fmt::print("rope: {} style {} offset {}\n", info.rope.rope_summary(), rope_style_name(info.rope.rope_style),
               info.rope.position_offset);
  fmt::print("budget: achieved {:.4f}{} (every byte counted), nominal {:.4f}\n", info.achieved_budget,
             info.requested_budget > 0 ? fmt::format(" of {:.4f} requested", info.requested_budget) : "",
             info.nominal_budget);
  fmt::print("size: {} for {} of FP16\n", human_bytes(b.total), human_bytes(s.fp16_bytes()));
  fmt::print("bytes: payload {}  scales {}  tier maps {}  centres {}  headers {}  manifest {}  index {}  padding {}\n",
             b.payload, b.scales, b.tier_maps, b.centres, b.header, b.manifest, b.index, b.padding);
  fmt::print("tiers: {}\n", tier_summary(info.tiers));
  const bool int2 = info.quant.int2;
  fmt::print("{:>5}  {:>28}  {:>28}\n", "layer", int2 ? "K fp16/int8/int4/int2/drop" : "K fp16/int8/int4/drop",
             int2 ? "V fp16/int8/int4/int2/drop" : "V fp16/int8/int4/drop");
  for (const auto& l : per_layer) {
    auto row = [int2](const nlohmann::json& t) {
      const std::string q2 = int2 ? fmt::format("{}/", t["int2"].get<uint64_t>()) : std::string();
      return fmt::format("{}/{}/{}/{}{}", t["fp16"].get<uint64_t>(), t["int8"].get<uint64_t>(),
                         t["int4"].get<uint64_t>(), q2, t["drop"].get<uint64_t>());
    };
    fmt::print("{:>5}  {:>28}  {:>28}\n", l["layer"].get<int>(), row(l["k"]), row(l["v"]));
  }
  if (a.verify) fmt::print("verify: every checksum matches\n");
  return kExitOk;
}

}  // namespace

void setup_inspect(CLI::App& app, Context& ctx) {
  auto a = std::make_shared<InspectArgs>();
  auto* sub = app.add_subcommand("inspect", "Describe a KV dump (.safetensors) or an .skv container");
  sub->add_option("input", a->input, "A dump or a container; '-' or nothing reads stdin");
  sub->add_option("--layout", a->layout, "Dumps only: element order of K/V, htd or thd")
      ->check(CLI::IsMember({"htd", "thd"}));
  sub->add_flag("--json", a->json, "Print one JSON object instead of text");
  sub->add_flag("--verify", a->verify, "Containers: decode every layer and verify every checksum");
  sub->add_flag("--brief", a->brief, "Dumps: shapes and metadata only, skip the per-layer statistics");
  ctx.add(sub, [a, &ctx] {
    // Open once (stdin can only be read once), then tell the two kinds apart by their first bytes.
    auto file = std::make_shared<InputFile>(InputFile::open(a->input));
    return is_container(file->bytes()) ? inspect_container(*a, *file, ctx.globals)
                                       : inspect_dump(*a, std::move(file), ctx.globals);
  });
}

}  // namespace skv::cli
