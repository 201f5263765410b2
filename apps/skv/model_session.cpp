#include "model_session.hpp"

#include <fmt/core.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "skv/error.hpp"
#include "skv/metrics.hpp"
#include "skv/model/kv_bridge.hpp"

namespace skv::cli {
namespace {

// Progress is for people watching a terminal: never in pipes, logs or under -q.
class Progress {
 public:
  Progress(const Globals& g, std::string label)
      : on_(g.verbosity > 0 && ::isatty(STDERR_FILENO) != 0), label_(std::move(label)),
        t0_(std::chrono::steady_clock::now()) {}
  ~Progress() {
    if (shown_) std::fputs("\r\033[K", stderr);
  }
  void update(size_t done, size_t total) {
    if (!on_) return;
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
    if (s < 1.0) return;
    fmt::print(stderr, "\r{}: {}/{} ({:.0f} s)\033[K", label_, done, total, s);
    std::fflush(stderr);
    shown_ = true;
  }

 private:
  bool on_, shown_ = false;
  std::string label_;
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(Errc::io, path, "cannot open text file");
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) fail(Errc::io, path, "read error");
  return ss.str();
}

model::Model load_model(const std::string& path, int threads, const Globals& g) {
  Progress p(g, "loading " + path);
  p.update(0, 1);
  return model::Model::load(path, threads);
}

void prefill(const model::Model& m, model::KvCacheObject& cache, std::span<const int32_t> ids,
             int window, model::QueryCapture* capture, const Globals& g, const std::string& label) {
  // Chunks bound the attention scratch and let progress show; a fixed chunk size keeps the
  // result independent of anything but the input.
  constexpr size_t kChunk = 256;
  const size_t n = ids.size(), w = std::min(n, size_t(std::max(window, 0)));
  Progress p(g, label);
  size_t at = 0;
  while (n - at >= kChunk + w) {  // the last call keeps [w, kChunk + w) tokens
    m.forward(cache, ids.subspan(at, kChunk), kChunk);
    at += kChunk;
    p.update(at, n);
  }
  if (capture) capture->window = window;
  if (at < n) m.forward(cache, ids.subspan(at), n - at, capture);
}

CacheUnderTest cache_under_test(const model::Model& m, const model::KvCacheObject& cache,
                                std::span<const int32_t> ids, const model::QueryCapture& q,
                                const std::string& name, Holdout holdout) {
  CacheUnderTest c{model::dump_cache(m, cache, ids, &q), {}, cache, std::nullopt};
  std::vector<NamedTensor> named;
  for (size_t k = 0; k < c.dump.names.size(); ++k) named.push_back({c.dump.names[k], c.dump.tensors[k].view()});
  c.view = kv_from_tensors(named, c.dump.metadata, Layout::HTD, name);
  model::assign_from(c.reference, c.view);
  if (holdout == Holdout::half) c.fit.emplace(query_half(c.view, QueryHalf::fit));
  return c;
}

CodecOutcome codec_round_trip(const CacheUnderTest& c, const PlanArgs& pa, model::KvCacheObject& out) {
  const PlanResult pr = build_plan(c.planned(), pa);
  EncodeOptions eo;
  eo.threads = pa.threads;
  const DecodedCache d = round_trip(c.view, pr.plan, eo);
  out = c.reference;
  model::assign_from(out, d.cache);
  CodecOutcome r;
  r.achieved_budget = d.info.achieved_budget;
  r.nominal_budget = pr.plan.nominal_budget();
  r.bytes = d.container_bytes;
  for (const auto& l : d.layers)
    for (int t = 0; t < kNumTiers; ++t) {
      r.tiers.k[size_t(t)] += l.tiers.k[size_t(t)];
      r.tiers.v[size_t(t)] += l.tiers.v[size_t(t)];
    }
  // The manifest records the achieved ratio only when the writer knew the size up front;
  // recompute it from the bytes so it is always present.
  if (r.achieved_budget <= 0)
    r.achieved_budget = double(r.bytes) / double(c.view.shape.fp16_bytes());
  r.notes = pr.notes;
  if (c.fit) {
    r.attn_fit = attention_metrics(c.view, d.cache, c.fit->positions, pa.threads);
    r.attn_held_out =
        attention_metrics(c.view, d.cache, window_half(c.view.shape.window, QueryHalf::held_out), pa.threads);
  }
  return r;
}

TargetScore score_targets(const model::Model& m, model::KvCacheObject& cache, int32_t last,
                          std::span<const int32_t> targets) {
  if (targets.empty()) fail(Errc::invalid_argument, "perplexity", "no target tokens");
  std::vector<int32_t> q;
  q.reserve(targets.size());
  q.push_back(last);
  q.insert(q.end(), targets.begin(), targets.end() - 1);
  const std::vector<float> logits = m.forward(cache, q, 0);
  const size_t V = size_t(m.config().vocab);
  TargetScore r;
  r.nll.reserve(targets.size());
  double nll = 0;
  for (size_t t = 0; t < targets.size(); ++t) {
    const float* row = logits.data() + t * V;
    const float mx = *std::max_element(row, row + V);
    double s = 0;
    for (size_t k = 0; k < V; ++k) s += std::exp(double(row[k] - mx));
    r.nll.push_back(std::log(s) - double(row[size_t(targets[t])] - mx));
    nll += r.nll.back();
    if (model::argmax({row, V}) == targets[t]) ++r.top1_hits;
  }
  r.mean_nll = nll / double(targets.size());
  r.ppl = std::exp(r.mean_nll);
  return r;
}

std::string greedy_answer(const model::Model& m, model::KvCacheObject& cache, int32_t first,
                          int max_new, const std::string& stop_on) {
  const int32_t eos = m.tokenizer().eos();
  std::vector<int32_t> out;
  std::string text;
  std::vector<float> logits = m.decode_step(cache, first);
  for (int k = 0; k < max_new; ++k) {
    const int32_t next = model::argmax(logits);
    if (next == eos) break;
    out.push_back(next);
    text = m.tokenizer().decode(out);
    if (!stop_on.empty() && text.find(stop_on) != std::string::npos) break;
    if (k + 1 < max_new) logits = m.decode_step(cache, next);
  }
  return text;
}

NeedleCase needle_case(const model::Model& m, const std::string& filler, int haystack_tokens,
                       double depth, uint32_t number) {
  const model::Tokenizer& tok = m.tokenizer();
  NeedleCase c;
  c.depth = depth;
  c.prompt = model::make_needle_prompt(tok, filler, haystack_tokens, depth, number);
  if (tok.add_bos_default()) c.ids.push_back(tok.bos());
  c.needle_start = int(c.ids.size()) + c.prompt.needle_start;
  c.ids.insert(c.ids.end(), c.prompt.haystack.begin(), c.prompt.haystack.end());
  c.ids.insert(c.ids.end(), c.prompt.question.begin(), c.prompt.question.end());
  return c;
}

NeedleTrial run_needle_trial(const model::Model& m, const NeedleCase& c,
                             const std::vector<PlanArgs>& configs, int window, int max_new,
                             const Globals& g, Holdout holdout) {
  const std::span<const int32_t> ids(c.ids);
  const std::span<const int32_t> context = ids.first(ids.size() - 1);
  model::KvCacheObject cache = m.new_cache();
  model::QueryCapture q;
  prefill(m, cache, context, window, &q, g, fmt::format("prefill (depth {:.2f})", c.depth));
  const CacheUnderTest cut = cache_under_test(m, cache, context, q, "needle prompt", holdout);
  NeedleTrial t;
  {
    model::KvCacheObject work = cut.reference;
    t.baseline.answer = greedy_answer(m, work, ids.back(), max_new, c.prompt.number);
    t.baseline.success = t.baseline.answer.find(c.prompt.number) != std::string::npos;
  }
  for (const PlanArgs& pa : configs) {
    NeedleRun r;
    model::KvCacheObject work = cut.reference;
    try {
      r.codec = codec_round_trip(cut, pa, work);
    } catch (const Error& e) {
      if (e.code() != Errc::budget) throw;
      r.error = e.what();
      t.runs.push_back(std::move(r));
      continue;
    }
    r.answer = greedy_answer(m, work, ids.back(), max_new, c.prompt.number);
    r.success = r.answer.find(c.prompt.number) != std::string::npos;
    t.runs.push_back(std::move(r));
  }
  return t;
}

nlohmann::json attention_json(const AttentionMetrics& a) {
  return {{"queries", a.queries},
          {"attn_rel_err", a.rel_error},
          {"attn_rel_err_max", a.max_rel_error},
          {"top1_agree", a.top1_agreement}};
}

bool is_uniform_policy(const std::string& policy) {
  return policy == "fp16" || policy == "int8" || policy == "int4";
}

nlohmann::json tier_shares_json(const TierCounts& t) {
  uint64_t total = 0;
  for (int i = 0; i < kNumTiers; ++i) total += t.k[size_t(i)] + t.v[size_t(i)];
  nlohmann::json j = nlohmann::json::object();
  for (int i = 0; i < kNumTiers; ++i)
    j[tier_name(Tier(i))] = double(t.k[size_t(i)] + t.v[size_t(i)]) / double(total ? total : 1);
  return j;
}

}  // namespace skv::cli
