// skv bench: encode/decode throughput, achieved budget, quality and the transfer-path saving, per
// (source x policy x budget x device), against raw FP16 and zstd baselines.
//
// Memory: the cache is coded a few layers at a time (layer slices of about 128 MiB of FP16, each a
// container of its own in one preallocated buffer), so the peak stays near the cache plus two
// slices. The exact whole-cache container size comes from one extra encode into a counting sink.
// Quality metrics are computed on the fly, one decoded layer at a time, over every layer.
#include <fmt/core.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <ctime>
#include <optional>

#include "cli.hpp"
#include "dump_input.hpp"
#include "plan_args.hpp"
#include "skv/bench.hpp"
#include "skv/codec.hpp"
#include "skv/error.hpp"
#include "skv/formats/file_io.hpp"
#include "skv/formats/safetensors.hpp"
#include "skv/half.hpp"
#include "skv/metrics.hpp"
#include "skv/parallel.hpp"
#include "skv/synthetic.hpp"
#include "skv/transfer.hpp"
#ifdef SKV_HAVE_CUDA
#include "skv/cuda/codec.hpp"
#endif

namespace skv::cli {
namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }
double cpu_now() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) * 1e-9;
}

struct BenchArgs {
  std::vector<std::string> inputs;
  std::string synthetic, save_dump, layout = "htd", device = "cpu", csv, dtype = "f16";
  std::vector<std::string> policies{"raw", "zstd-1", "zstd-3", "spectrum", "pdtrim", "int8", "int4"};
  std::vector<double> budgets{0.5};
  std::vector<std::string> links{"10", "25", "100", "400"};
  int threads = 0, runs = 5, window = 32;
  uint64_t seed = 1;
  bool needle = false, json = false, force = false;
  PlanArgs plan;
};

// What one row measured. Optional fields are absent (null in JSON) where they do not apply.
struct Row {
  std::string source, policy, device = "cpu", error, key_transform, tiers;
  double budget = 0;  // requested; 0 = none
  bool lossless = false, codec = true;
  uint64_t fp16_bytes = 0, bytes = 0;
  int layers = 1;
  std::optional<double> nominal, plan_s, first_byte_s, attn, attn_max, top1, needle;
  double enc_s = 0, dec_s = 0, enc_cpu_s = 0, dec_cpu_s = 0;
};

double median(std::vector<double> v);

// Wall and CPU seconds of each timed run (warm-up excluded); a row gets their medians.
struct RunTimes {
  std::vector<double> enc_w, enc_c, dec_w, dec_c;
  void add(double ew, double ec, double dw, double dc) {
    enc_w.push_back(ew);
    enc_c.push_back(ec);
    dec_w.push_back(dw);
    dec_c.push_back(dc);
  }
  void store(Row& row) const {
    row.enc_s = median(enc_w);
    row.enc_cpu_s = median(enc_c);
    row.dec_s = median(dec_w);
    row.dec_cpu_s = median(dec_c);
  }
};

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// A progress line on stderr, only on a terminal, only once the run has taken over a second.
class Progress {
 public:
  explicit Progress(const Globals& g) : on_(g.verbosity > 0 && isatty(STDERR_FILENO)), t0_(Clock::now()) {}
  void update(const std::string& what) {
    if (!on_ || since(t0_) < 1.0 || since(last_) < 0.1) return;
    last_ = Clock::now();
    fmt::print(stderr, "\r\033[K[{:6.1f}s] {}", since(t0_), what);
    std::fflush(stderr);
    shown_ = true;
  }
  void clear() {
    if (shown_) fmt::print(stderr, "\r\033[K");
    shown_ = false;
  }
  ~Progress() { clear(); }

 private:
  bool on_, shown_ = false;
  Clock::time_point t0_, last_{};
};

double parse_link(const std::string& text) {
  std::string s = text;
  for (const char* suffix : {"Gbps", "gbps", "G", "g"})
    if (s.size() > std::strlen(suffix) && s.ends_with(suffix)) {
      s.resize(s.size() - std::strlen(suffix));
      break;
    }
  double v = 0;
  size_t used = 0;
  try {
    v = std::stod(s, &used);
  } catch (const std::logic_error&) {
    used = 0;
  }
  if (used == 0 || used != s.size() || !std::isfinite(v) || v <= 0)
    fail(Errc::invalid_argument, "--link '" + text + "'", "expected a positive link speed in Gbit/s, e.g. 25 or 25Gbps");
  return v;
}

// "zstd-3" -> 3; nullopt when not a zstd baseline name.
std::optional<int> zstd_level_of(const std::string& p) {
  if (p == "zstd") return 3;
  if (!p.starts_with("zstd-")) return std::nullopt;
  const std::string n = p.substr(5);
  if (n.empty() || n.size() > 2 || !std::all_of(n.begin(), n.end(), [](char c) { return c >= '0' && c <= '9'; }))
    fail(Errc::invalid_argument, "--policy '" + p + "'", "zstd level must be 1..22, e.g. zstd-3");
  const int lv = std::stoi(n);
  if (lv < 1 || lv > 22) fail(Errc::invalid_argument, "--policy '" + p + "'", "zstd level must be 1..22");
  return lv;
}

void check_policy_name(const std::string& p) {
  if (p == "raw" || zstd_level_of(p) || policy_from_name(p)) return;
  fail(Errc::invalid_argument, "--policy '" + p + "'",
       "unknown; expected raw, zstd-N, spectrum, spectrum3, spectrum2, greedy, pdtrim, snapkv, fp16, int8 or int4");
}

bool budgeted(const std::string& p) {
  const auto pk = policy_from_name(p);
  return pk && !(*pk == PolicyKind::fp16 || *pk == PolicyKind::int8 || *pk == PolicyKind::int4);
}

bool has_queries(const KvCache& c) { return c.shape.window > 0 && !c.layers.empty() && c.layers[0].q; }

// Layers per slice: about 128 MiB of FP16, at least one layer.
int slice_layers_for(const KvShape& s) {
  const uint64_t per_layer = s.fp16_bytes() / uint64_t(std::max(s.layers, 1));
  const uint64_t target = uint64_t(128) << 20;
  return int(std::clamp<uint64_t>(per_layer ? target / per_layer : 1, 1, uint64_t(std::max(s.layers, 1))));
}

// Running totals of per-layer attention metrics (weighted by query count).
struct QualitySum {
  double err = 0, err_max = 0, top1 = 0, needle = 0;
  int64_t n = 0;
  bool has_needle = false;
  void add(const AttentionMetrics& m) {
    const auto q = double(m.queries);
    err += m.rel_error * q;
    err_max = std::max(err_max, m.max_rel_error);
    top1 += m.top1_agreement * q;
    if (m.needle_top1) {
      has_needle = true;
      needle += *m.needle_top1 * q;
    }
    n += m.queries;
  }
  void store(Row& r) const {
    if (!n) return;
    r.attn = err / double(n);
    r.attn_max = err_max;
    r.top1 = top1 / double(n);
    if (has_needle) r.needle = needle / double(n);
  }
};

// A sink that streams (claims nothing, as a pipe) and notes when the first byte past the file
// header and manifest, i.e. layer 0's first byte, arrives.
struct FirstByteSink final : ByteSink {
  uint64_t bytes = 0, threshold = 0;
  Clock::time_point t0 = Clock::now();
  std::optional<double> at;
  void write(const void*, size_t n) override {
    bytes += n;
    if (!at && bytes > threshold) at = since(t0);
  }
};

// One skv policy at one budget: plan, exact size, warm-up with quality, then timed runs.
Row bench_policy(const KvCache& c, const PlanArgs& pa, const std::string& label, int runs, int threads,
                 Progress& prog) {
  Row row;
  row.policy = label;
  row.budget = pa.budget;
  row.fp16_bytes = c.shape.fp16_bytes();
  row.layers = c.shape.layers;
  auto t0 = Clock::now();
  const PlanResult pr = build_plan(c, pa);
  row.plan_s = since(t0);
  const Plan& plan = pr.plan;
  row.key_transform = plan.quant.key_transform == KeyTransform::none     ? "none"
                      : plan.quant.key_transform == KeyTransform::centre ? "centre"
                                                                         : "prerope";
  EncodeOptions eo;
  eo.threads = threads;
  {
    CountingSink count;
    prog.update(label + ": sizing");
    const EncodeResult er = encode(c, plan, count, eo);
    row.bytes = count.bytes;
    // Time to first byte on a pipe: the plan, then the encoder until layer 0 starts leaving.
    FirstByteSink first;
    first.threshold = 64 + 64 + (er.bytes.manifest + 63) / 64 * 64;  // file header, MANI header + payload
    prog.update(label + ": first byte");
    first.t0 = Clock::now();
    encode(c, plan, first, eo);
    if (first.at) row.first_byte_s = *row.plan_s + *first.at;
    row.nominal = er.info.nominal_budget;
    uint64_t total = 0;
    for (int t = 0; t < kNumTiers; ++t) total += er.info.tiers.k[size_t(t)] + er.info.tiers.v[size_t(t)];
    for (int t = 0; t < kNumTiers; ++t) {
      const uint64_t n = er.info.tiers.k[size_t(t)] + er.info.tiers.v[size_t(t)];
      if (!n) continue;
      if (!row.tiers.empty()) row.tiers += " ";
      row.tiers += fmt::format("{}:{:.1f}%", tier_name(Tier(t)), 100.0 * double(n) / double(total ? total : 1));
    }
  }

  struct Slice {
    int first;
    KvCache cache;
    Plan plan;
  };
  std::vector<Slice> slices;
  const int per = slice_layers_for(c.shape);
  size_t capacity = 0;
  for (int l = 0; l < c.shape.layers; l += per) {
    const int n = std::min(per, c.shape.layers - l);
    Slice s{l, slice_layers(c, l, n), slice_plan(plan, l, n)};
    const SizeModel m = size_model(s.cache, s.plan.quant, s.plan.policy, s.plan.requested_budget);
    capacity = std::max(capacity, size_t(m.bound(s.plan)));
    slices.push_back(std::move(s));
  }
  FixedSink sink(capacity + 65536);
  DecodedLayer dl;  // reused by every decode: no per-layer allocation once warm
  const bool quality = has_queries(c);
  RunTimes times;
  for (int run = 0; run <= runs; ++run) {  // run 0: warm-up, with quality metrics
    double enc_w = 0, enc_c = 0, dec_w = 0, dec_c = 0;
    QualitySum qs;
    for (const Slice& s : slices) {
      prog.update(fmt::format("{}: {} layers {}-{}", label, run ? fmt::format("run {}/{}", run, runs) : "warm-up",
                              s.first, s.first + s.cache.shape.layers - 1));
      sink.clear();
      auto w0 = Clock::now();
      double c0 = cpu_now();
      encode(s.cache, s.plan, sink, eo);
      enc_w += since(w0);
      enc_c += cpu_now() - c0;
      SpanSource src(sink.bytes());
      w0 = Clock::now();
      c0 = cpu_now();
      ContainerReader reader(src, label + " slice");
      reader.set_threads(threads);
      int l = 0;
      double metric_w = 0, metric_c = 0;
      while (reader.next_layer(dl)) {
        if (run == 0 && quality) {
          const auto m0 = Clock::now();
          const double mc0 = cpu_now();
          const KvCache orig = slice_layers(c, s.first + l, 1);
          KvCache dec = orig;
          dec.source = "decoded";
          dec.shape.dtype = dl.k.dtype;
          dec.layers[0].k = dl.k.view();
          dec.layers[0].v = dl.v.view();
          dec.layers[0].mask = dl.mask ? std::optional<TensorView>(dl.mask->view()) : std::nullopt;
          qs.add(attention_metrics(orig, dec, threads));
          metric_w += since(m0);
          metric_c += cpu_now() - mc0;
        }
        ++l;
      }
      dec_w += since(w0) - metric_w;
      dec_c += cpu_now() - c0 - metric_c;
    }
    if (run == 0) {
      qs.store(row);
      continue;
    }
    times.add(enc_w, enc_c, dec_w, dec_c);
  }
  times.store(row);
  return row;
}

// zstd on the FP16 bytes of every K and V tensor (F32 caches are converted first, untimed).
Row bench_zstd(const KvCache& c, int level, int runs, int threads, Progress& prog) {
  const KvShape& s = c.shape;
  Row row;
  row.policy = fmt::format("zstd-{}", level);
  row.lossless = true;
  row.fp16_bytes = s.fp16_bytes();
  row.layers = s.layers;
  ZstdCoder z(level, threads);
  const size_t n = size_t(s.kv_heads) * size_t(s.tokens) * size_t(s.head_dim) * 2;
  Buffer comp(ZstdCoder::bound(n)), plain(n), conv(s.dtype == DType::F32 ? n : 1);
  RunTimes times;
  for (int run = 0; run <= runs; ++run) {
    double enc_w = 0, enc_c = 0, dec_w = 0, dec_c = 0;
    uint64_t bytes = 0;
    for (int l = 0; l < s.layers; ++l) {
      prog.update(fmt::format("{}: {} layer {}", row.policy, run ? fmt::format("run {}/{}", run, runs) : "warm-up", l));
      for (bool value : {false, true}) {
        const TensorView& t = value ? c.layers[size_t(l)].v : c.layers[size_t(l)].k;
        std::span<const std::byte> src = t.bytes;
        if (s.dtype == DType::F32) {
          auto* out = reinterpret_cast<uint16_t*>(conv.data());
          const float* in = t.as<float>();
          for (size_t i = 0; i < n / 2; ++i) out[i] = f32_to_f16(in[i]);
          src = std::span<const std::byte>(conv.data(), n);
        }
        auto w0 = Clock::now();
        double c0 = cpu_now();
        const size_t m = z.compress(src, comp.span());
        enc_w += since(w0);
        enc_c += cpu_now() - c0;
        w0 = Clock::now();
        c0 = cpu_now();
        z.decompress(std::span<const std::byte>(comp.data(), m), plain.span());
        dec_w += since(w0);
        dec_c += cpu_now() - c0;
        bytes += m;
        if (run == 0 && std::memcmp(plain.data(), src.data(), n) != 0)
          fail(Errc::format, c.source, row.policy + " round trip differs (libzstd bug?)");
      }
    }
    if (run == 0) {
      row.bytes = bytes;
      continue;
    }
    times.add(enc_w, enc_c, dec_w, dec_c);
  }
  times.store(row);
  return row;
}

Row raw_row(const KvCache& c) {
  Row row;
  row.policy = "raw";
  row.lossless = true;
  row.codec = false;
  row.fp16_bytes = row.bytes = c.shape.fp16_bytes();
  row.nominal = 1.0;
  row.layers = c.shape.layers;
  return row;
}

// ---- output ----------------------------------------------------------------------------------

double gbps_of(uint64_t bytes, double s) { return s > 0 ? double(bytes) / s / 1e9 : 0; }

TransferInput transfer_input(const Row& r) {
  return {.raw_bytes = r.fp16_bytes, .encoded_bytes = r.bytes, .encode_s = r.enc_s, .decode_s = r.dec_s,
          .plan_s = r.plan_s.value_or(0), .layers = r.layers};
}

double row_break_even(const Row& r) {
  if (!r.codec || r.bytes == 0 || r.enc_s <= 0 || r.dec_s <= 0) return 0;
  return break_even_gbps(double(r.fp16_bytes) / double(r.bytes), double(r.fp16_bytes) / r.enc_s,
                         double(r.fp16_bytes) / r.dec_s);
}

nlohmann::json opt_json(const std::optional<double>& v) { return v ? nlohmann::json(*v) : nlohmann::json(nullptr); }

nlohmann::json row_json(const Row& r, const std::vector<double>& links, int threads) {
  nlohmann::json j = {{"source", r.source}, {"policy", r.policy},
                      {"budget", r.budget > 0 ? nlohmann::json(r.budget) : nlohmann::json(nullptr)},
                      {"device", r.device}, {"threads", threads}};
  if (!r.error.empty()) {
    j["error"] = r.error;
    return j;
  }
  const bool q = r.attn.has_value();
  j.update({{"achieved_budget", double(r.bytes) / double(r.fp16_bytes)},
            {"nominal_budget", opt_json(r.nominal)},
            {"bytes", r.bytes},
            {"fp16_bytes", r.fp16_bytes},
            {"lossless", r.lossless},
            {"encode_gbps", r.codec ? nlohmann::json(gbps_of(r.fp16_bytes, r.enc_s)) : nlohmann::json(nullptr)},
            {"decode_gbps", r.codec ? nlohmann::json(gbps_of(r.fp16_bytes, r.dec_s)) : nlohmann::json(nullptr)},
            {"encode_ms", r.enc_s * 1e3},
            {"decode_ms", r.dec_s * 1e3},
            {"encode_cpu_ms", r.enc_cpu_s * 1e3},
            {"decode_cpu_ms", r.dec_cpu_s * 1e3},
            {"encode_gbps_per_cpu_s", r.codec ? nlohmann::json(gbps_of(r.fp16_bytes, r.enc_cpu_s)) : nlohmann::json(nullptr)},
            {"decode_gbps_per_cpu_s", r.codec ? nlohmann::json(gbps_of(r.fp16_bytes, r.dec_cpu_s)) : nlohmann::json(nullptr)},
            {"plan_ms", r.plan_s ? nlohmann::json(*r.plan_s * 1e3) : nlohmann::json(nullptr)},
            {"first_byte_ms", r.first_byte_s ? nlohmann::json(*r.first_byte_s * 1e3) : nlohmann::json(nullptr)}});
  if (!r.key_transform.empty()) j["key_transform"] = r.key_transform;
  if (!r.tiers.empty()) j["tiers"] = r.tiers;
  if (q) {
    j["attn_rel_err"] = *r.attn;
    j["attn_rel_err_max"] = opt_json(r.attn_max);
    j["top1_agree"] = *r.top1;
    if (r.needle) j["needle_top1"] = *r.needle;
  }
  nlohmann::json lj = nlohmann::json::array();
  for (double g : links) {
    const TransferResult t = transfer_time(transfer_input(r), g);
    lj.push_back({{"gbps", g}, {"raw_ms", t.raw_ms}, {"skv_ms", t.pipelined_ms}, {"seq_ms", t.seq_ms},
                  {"saving_pct", t.saving_pct}, {"seq_saving_pct", t.seq_saving_pct},
                  {"codec_only_ms", t.codec_only_ms}, {"saving_codec_only_pct", t.saving_codec_only_pct}});
  }
  j["links"] = lj;
  j["break_even_gbps"] = row_break_even(r);
  return j;
}

std::string csv_field(const nlohmann::json& v) {
  if (v.is_null()) return "";
  if (v.is_string()) {
    const auto s = v.get<std::string>();
    if (s.find_first_of(",\"\n") == std::string::npos) return s;
    std::string q = "\"";
    for (char ch : s) q += ch == '"' ? std::string("\"\"") : std::string(1, ch);
    return q + "\"";
  }
  if (v.is_number_float()) return fmt::format("{:.6g}", v.get<double>());
  return v.dump();
}

void write_csv(const std::string& path, bool force, const nlohmann::json& rows) {
  static const char* row_keys[] = {"source", "policy", "budget", "device", "threads", "achieved_budget",
                                   "nominal_budget", "bytes", "encode_gbps", "decode_gbps", "plan_ms",
                                   "first_byte_ms", "attn_rel_err", "top1_agree", "break_even_gbps"};
  static const char* link_keys[] = {"gbps", "raw_ms", "skv_ms", "seq_ms", "saving_pct", "saving_codec_only_pct"};
  std::string out;
  for (const char* k : row_keys) out += std::string(k) + ",";
  out += "link_gbps,raw_ms,skv_ms,seq_ms,saving_pct,saving_codec_only_pct,error\n";
  for (const auto& r : rows) {
    std::string head;
    for (const char* k : row_keys) head += csv_field(r.contains(k) ? r[k] : nlohmann::json(nullptr)) + ",";
    const std::string err = r.contains("error") ? csv_field(r["error"]) : "";
    if (!r.contains("links") || r["links"].empty()) {
      out += head + ",,,,,," + err + "\n";
      continue;
    }
    for (const auto& l : r["links"]) {
      out += head;
      for (const char* k : link_keys) out += csv_field(l[k]) + ",";
      out += err + "\n";
    }
  }
  OutputFile f(path, {.force = force, .allow_terminal = true});
  f.write(out.data(), out.size());
  f.commit();
}

void print_table(const std::vector<Row>& rows, const std::vector<double>& links) {
  std::string head = fmt::format("{:<10} {:>6} {:>8} {:>7} {:>9} {:>9} {:>8} {:>9} {:>9} {:>6}", "policy", "budget",
                                 "achieved", "nominal", "enc GB/s", "dec GB/s", "plan ms", "1st byte", "attn err", "top1");
  for (double g : links) head += fmt::format(" {:>9}", fmt::format("save@{:g}G", g));
  head += fmt::format(" {:>10}", "break-even");
  fmt::print("{}\n", head);
  auto num = [](const std::optional<double>& v, const char* f) { return v ? fmt::format(fmt::runtime(f), *v) : std::string("-"); };
  for (const Row& r : rows) {
    const std::string budget = r.budget > 0 ? fmt::format("{:.3f}", r.budget) : "-";
    if (!r.error.empty()) {
      fmt::print("{:<10} {:>6} error: {}\n", r.policy, budget, r.error);
      continue;
    }
    std::string line = fmt::format(
        "{:<10} {:>6} {:>8.4f} {:>7} {:>9} {:>9} {:>8} {:>9} {:>9} {:>6}", r.policy, budget,
        double(r.bytes) / double(r.fp16_bytes), num(r.nominal, "{:.4f}"),
        r.codec ? fmt::format("{:.3f}", gbps_of(r.fp16_bytes, r.enc_s)) : "-",
        r.codec ? fmt::format("{:.3f}", gbps_of(r.fp16_bytes, r.dec_s)) : "-",
        r.plan_s ? fmt::format("{:.0f}", *r.plan_s * 1e3) : "-",
        r.first_byte_s ? fmt::format("{:.0f}", *r.first_byte_s * 1e3) : "-", num(r.attn, "{:.5f}"), num(r.top1, "{:.4f}"));
    for (double g : links) line += fmt::format(" {:>8.1f}%", transfer_time(transfer_input(r), g).saving_pct);
    const double be = row_break_even(r);
    line += be > 0 ? fmt::format(" {:>6.1f}Gbps", be) : fmt::format(" {:>10}", "-");
    fmt::print("{}\n", line);
  }
}

// ---- driver ----------------------------------------------------------------------------------

std::string cuda_unavailable_reason() {
#ifdef SKV_HAVE_CUDA
  std::string why;
  if (!skv::cuda::cuda_available(&why)) return why.empty() ? "no usable CUDA device" : why;
  return "the CUDA codec is not wired into skv bench yet";
#else
  return "skv was built without CUDA (configure with -DSKV_CUDA=ON)";
#endif
}

DType parse_dtype(const std::string& s) {
  if (s == "f16") return DType::F16;
  if (s == "bf16") return DType::BF16;
  return DType::F32;
}

void bench_cache(const KvCache& c, const std::string& source, const BenchArgs& a, int threads,
                 std::vector<Row>& rows, Progress& prog, const Globals& g) {
  const bool quality = has_queries(c);
  if (g.verbosity > 1)
    fmt::print(stderr, "{}: {} layers x {} kv heads x {} tokens x {} dims, {}, {} FP16{}\n", source, c.shape.layers,
               c.shape.kv_heads, c.shape.tokens, c.shape.head_dim, dtype_name(c.shape.dtype),
               human_bytes(c.shape.fp16_bytes()), quality ? fmt::format(", {} window queries", c.shape.window) : "");
  // Touch every page of the source once before anything is timed, so that whichever row comes
  // first does not pay for mapping the dump into memory (a real encode pays that once, too).
  volatile uint8_t sink = 0;
  for (const KvLayer& l : c.layers)
    for (const TensorView* t : {&l.k, &l.v, l.q ? &*l.q : nullptr})
      if (t)
        for (size_t i = 0; i < t->bytes.size(); i += 4096) sink = sink + uint8_t(t->bytes[i]);
  std::vector<std::string> policies = a.policies;
  if (!a.plan.tiers_file.empty()) policies.push_back("explicit");
  for (const std::string& p : policies) {
    std::vector<double> budgets{0};
    if (budgeted(p)) budgets = a.budgets;
    for (double b : budgets) {
      Row row;
      try {
        if (p == "raw") {
          row = raw_row(c);
        } else if (auto lv = zstd_level_of(p)) {
          row = bench_zstd(c, *lv, a.runs, threads, prog);
        } else {
          PlanArgs pa = a.plan;
          pa.threads = threads;
          pa.budget = b;
          if (p != "explicit") {
            pa.policy = p;
            pa.tiers_file.clear();
          }
          row = bench_policy(c, pa, p, a.runs, threads, prog);
        }
        if (row.lossless && quality) {  // bit-exact by construction (zstd is verified above)
          row.attn = 0;
          row.attn_max = 0;
          row.top1 = 1;
        }
      } catch (const skv::Error& e) {
        if (e.code() != Errc::budget && e.code() != Errc::invalid_argument) throw;
        row = Row{};
        row.policy = p;
        row.error = e.what();
      }
      row.source = source;
      row.budget = b;
      rows.push_back(std::move(row));
    }
  }
}

int run_bench(const BenchArgs& a, const Globals& g) {
  for (const auto& p : a.policies) check_policy_name(p);
  std::vector<double> links;
  for (const auto& l : a.links) links.push_back(parse_link(l));
  for (double b : a.budgets)
    if (!(b > 0 && b <= 1)) fail(Errc::invalid_argument, fmt::format("--budget {}", b), "must lie in (0, 1]");
  if (a.runs < 1) fail(Errc::invalid_argument, "--runs", "must be at least 1");

  if (a.device == "cuda") fail(Errc::unsupported, "--device cuda", "CUDA path not available: " + cuda_unavailable_reason());
  if (a.device == "all" || a.device == "auto")
    note(g, fmt::format("skv bench: --device {}: CUDA path not available ({}); measuring on cpu", a.device,
                        cuda_unavailable_reason()));

  const int threads = a.threads > 0 ? a.threads : default_threads();
  std::vector<Row> rows;
  Progress prog(g);
  nlohmann::json sources = nlohmann::json::array();
  auto describe = [&](const KvCache& c, const std::string& name) {
    sources.push_back({{"source", name}, {"layers", c.shape.layers}, {"kv_heads", c.shape.kv_heads},
                       {"tokens", c.shape.tokens}, {"head_dim", c.shape.head_dim},
                       {"dtype", std::string(dtype_name(c.shape.dtype))}, {"fp16_bytes", c.shape.fp16_bytes()},
                       {"window_queries", c.shape.window}});
  };

  const bool synthetic = !a.synthetic.empty() || a.inputs.empty();
  if (!a.save_dump.empty() && a.synthetic.empty())
    fail(Errc::invalid_argument, "--save-dump", "needs --synthetic SHAPE");
  if (synthetic) {
    SyntheticOptions so;
    so.spec = a.synthetic.empty() ? "llama2-7b:4096" : a.synthetic;
    so.dtype = parse_dtype(a.dtype);
    so.seed = a.seed;
    so.window = a.window;
    so.needle = a.needle;
    so.threads = threads;
    prog.update("generating " + so.spec);
    SyntheticCache syn = make_synthetic(so);
    if (!a.save_dump.empty()) {
      prog.clear();
      safetensors::write_file(a.save_dump, syn.named(), syn.cache.metadata, {.force = a.force});
      note(g, fmt::format("skv bench: wrote synthetic {} ({} FP16) to {}", so.spec,
                          human_bytes(syn.cache.shape.fp16_bytes()), a.save_dump));
      return kExitOk;
    }
    const std::string name = "synthetic " + so.spec;
    describe(syn.cache, name);
    bench_cache(syn.cache, name, a, threads, rows, prog, g);
  }
  for (const auto& in : a.inputs) {
    Dump d = open_dump(in, parse_layout(a.layout));
    describe(d.cache, in);
    bench_cache(d.cache, in, a, threads, rows, prog, g);
  }
  prog.clear();

  nlohmann::json jrows = nlohmann::json::array();
  for (const Row& r : rows) jrows.push_back(row_json(r, links, threads));
  if (!a.csv.empty()) write_csv(a.csv, a.force, jrows);
  if (a.json) {
    print_json({{"rows", jrows}, {"sources", sources}, {"device", "cpu"}, {"threads", threads},
                {"runs", a.runs}, {"links_gbps", links},
                {"quality", "every layer, decoded one at a time; lossless rows are exact by construction"}});
  } else if (g.verbosity > 0 && a.csv != "-") {
    for (const auto& s : sources)
      fmt::print("{}: {} layers x {} kv heads x {} tokens x {} dims, {}, {} FP16; cpu, {} thread{}, median of {} run{}\n",
                 s["source"].get<std::string>(), s["layers"].get<int>(), s["kv_heads"].get<int>(),
                 s["tokens"].get<int>(), s["head_dim"].get<int>(), s["dtype"].get<std::string>(),
                 human_bytes(s["fp16_bytes"].get<uint64_t>()), threads, threads == 1 ? "" : "s", a.runs,
                 a.runs == 1 ? "" : "s");
    print_table(rows, links);
  }
  return kExitOk;
}

}  // namespace

void setup_bench(CLI::App& app, Context& ctx) {
  auto a = std::make_shared<BenchArgs>();
  auto* sub = app.add_subcommand(
      "bench", "Measure encode/decode speed, achieved budget, quality and the transfer-path saving");
  sub->add_option("inputs", a->inputs, "KV dumps (.safetensors); none: --synthetic llama2-7b:4096");
  sub->add_option("--synthetic", a->synthetic,
                  "Generate a cache of a named shape, MODEL:TOKENS or LxHxD:TOKENS (e.g. llama2-7b:4096; "
                  "models: llama2-7b, llama3-8b, mistral-7b, qwen2.5-7b, smollm2-135m, tiny)");
  sub->add_option("--save-dump", a->save_dump,
                  "With --synthetic: write the generated cache (with queries) as a safetensors dump and exit");
  sub->add_option("--dtype", a->dtype, "Element type of the synthetic cache: f16, bf16, f32")
      ->check(CLI::IsMember({"f16", "bf16", "f32"}));
  sub->add_option("--window", a->window, "Observation queries per query head in the synthetic cache (0 = none)")
      ->check(CLI::NonNegativeNumber);
  sub->add_flag("--needle", a->needle, "Plant a needle span in the synthetic cache (needle_start/needle_len metadata)");
  sub->add_option("--seed", a->seed, "Seed of the synthetic cache");
  sub->add_option("--policy", a->policies,
                  "Comma-separated rows: raw, zstd-N (libzstd level N on the FP16 bytes), or skv policies "
                  "(spectrum, spectrum3, spectrum2, greedy, pdtrim, snapkv, fp16, int8, int4)")
      ->delimiter(',');
  sub->add_option("--budget", a->budgets, "Comma-separated byte budgets for the budgeted policies (0 < B <= 1)")
      ->delimiter(',');
  sub->add_option("--device", a->device, "cpu, cuda, all or auto (auto/all fall back to cpu without a usable GPU)")
      ->check(CLI::IsMember({"cpu", "cuda", "all", "auto"}));
  sub->add_option("--threads", a->threads, "Worker threads for codec, planning and zstd (0 = all cores)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--link", a->links, "Comma-separated link speeds in Gbit/s for the transfer model (e.g. 10,25,100,400)")
      ->delimiter(',');
  sub->add_option("--runs", a->runs, "Timed runs per row after one warm-up; the median is reported");
  sub->add_option("--layout", a->layout, "Element order of K/V in the dumps: htd or thd")
      ->check(CLI::IsMember({"htd", "thd"}));
  sub->add_flag("--json", a->json, "Print {\"rows\": [...]} on stdout instead of the table");
  sub->add_option("--csv", a->csv, "Also write one CSV line per (row, link) to this file ('-' = stdout)");
  sub->add_flag("-f,--force", a->force, "Overwrite existing --csv / --save-dump files");
  add_plan_options(*sub, a->plan, /*with_budget=*/false);
  ctx.add(sub, [a, &ctx] { return run_bench(*a, ctx.globals); });
}

}  // namespace skv::cli
