// skv_model_probe: a small driver of skv_model for the Python cross-check scripts (tools/) and
// manual timing. Prints JSON on stdout.
//   skv_model_probe dequant MODEL TENSOR IDX...      values at flat indices (GGUF order)
//   skv_model_probe tokenize MODEL TEXTFILE          token ids of the file's text
//   skv_model_probe detok MODEL ID...                decoded text
//   skv_model_probe logits MODEL ID...               per position: top-1 id, log p(next token)
//   skv_model_probe bench MODEL N [THREADS]          prefill N tokens: seconds, peak RSS
//   skv_model_probe ppl MODEL TEXTFILE N M           perplexity of M tokens after N
//   skv_model_probe needle MODEL FILLERFILE TOKENS DEPTH NUMBER   one needle trial
//   skv_model_probe pretok KIND TEXTFILE             pre-tokenizer pieces, one JSON list per
//                                                    line of the file (KIND: gpt2, digits_gpt2,
//                                                    llama3, qwen2; lines split at \x1e)
#include <sys/resource.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "skv/error.hpp"
#include "skv/formats/gguf.hpp"
#include "skv/model/eval.hpp"
#include "skv/model/model.hpp"

using nlohmann::json;
using namespace skv;

namespace {

std::vector<int32_t> ids_from(int argc, char** argv, int first) {
  std::vector<int32_t> ids;
  for (int k = first; k < argc; ++k) ids.push_back(int32_t(std::stol(argv[k])));
  return ids;
}

int run(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: skv_model_probe dequant|tokenize|detok|logits|bench MODEL ...\n";
    return 2;
  }
  const std::string cmd = argv[1], path = argv[2];
  json out;
  if (cmd == "dequant") {
    const auto f = gguf::File::open(path);
    const auto* t = f.tensor(argv[3]);
    if (!t) throw Error(Errc::invalid_argument, path + ": no tensor " + argv[3]);
    const auto v = f.dequantize(*t);
    out["type"] = gguf::ggml_type_name(t->type);
    double sum = 0;
    for (float x : v) sum += x;
    out["sum"] = sum;
    for (int k = 4; k < argc; ++k) out["values"].push_back(v.at(std::stoull(argv[k])));
  } else if (cmd == "tokenize" || cmd == "detok") {
    auto m = model::Model::load(path);
    if (cmd == "tokenize") {
      std::ifstream in(argv[3], std::ios::binary);
      std::stringstream ss;
      ss << in.rdbuf();
      out["ids"] = m.tokenizer().encode(ss.str());
    } else {
      out["text"] = m.tokenizer().decode(ids_from(argc, argv, 3));
    }
  } else if (cmd == "logits") {
    auto m = model::Model::load(path);
    const auto ids = ids_from(argc, argv, 3);
    auto cache = m.new_cache();
    const auto logits = m.forward(cache, ids, 0);
    const size_t V = size_t(m.config().vocab);
    for (size_t t = 0; t < ids.size(); ++t) {
      std::span<const float> row(logits.data() + t * V, V);
      out["top1"].push_back(model::argmax(row));
      if (t + 1 < ids.size()) {
        const float mx = *std::max_element(row.begin(), row.end());
        double s = 0;
        for (float x : row) s += std::exp(double(x - mx));
        out["logprob"].push_back(double(row[size_t(ids[t + 1])] - mx) - std::log(s));
      }
    }
  } else if (cmd == "ppl" || cmd == "needle") {
    auto m = model::Model::load(path);
    std::ifstream in(argv[3], std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    auto t0 = std::chrono::steady_clock::now();
    if (cmd == "ppl") {
      const auto ids = m.tokenizer().encode(ss.str());
      const size_t n = std::stoul(argv[4]), mm = std::stoul(argv[5]);
      if (ids.size() < n + mm) throw Error(Errc::invalid_argument, "text too short");
      const auto r = model::perplexity(m, std::span(ids).first(n), std::span(ids).subspan(n, mm));
      out = {{"ppl", r.ppl}, {"mean_nll", r.mean_nll}, {"context", r.context}, {"targets", r.targets},
             {"top1_hits", r.top1_hits}};
    } else {
      const auto p = model::make_needle_prompt(m.tokenizer(), ss.str(), std::stoi(argv[4]), std::stod(argv[5]),
                                               uint32_t(std::stoul(argv[6])));
      const auto r = model::needle_trial(m, p);
      out = {{"success", r.success}, {"answer", r.answer}, {"haystack_tokens", p.haystack.size()},
             {"needle_start", p.needle_start}, {"needle_len", p.needle_len}};
    }
    out["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  } else if (cmd == "pretok") {
    const std::string kind = argv[2];
    const model::PreTokenizer k = kind == "gpt2" ? model::PreTokenizer::gpt2
                                  : kind == "digits_gpt2" ? model::PreTokenizer::digits_gpt2
                                  : kind == "llama3" ? model::PreTokenizer::llama3
                                                     : model::PreTokenizer::qwen2;
    std::ifstream in(argv[3], std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string all = ss.str();
    out = json::array();
    for (size_t a = 0; a <= all.size();) {
      size_t b = all.find('\x1e', a);
      if (b == std::string::npos) b = all.size();
      out.push_back(model::pre_tokenize(std::string_view(all).substr(a, b - a), k));
      a = b + 1;
    }
  } else if (cmd == "bench") {
    const int n = std::stoi(argv[3]);
    const int threads = argc > 4 ? std::stoi(argv[4]) : 0;
    auto t0 = std::chrono::steady_clock::now();
    auto m = model::Model::load(path, threads);
    auto t1 = std::chrono::steady_clock::now();
    std::vector<int32_t> ids(static_cast<size_t>(n));
    for (int k = 0; k < n; ++k) ids[size_t(k)] = int32_t((k * 7919 + 13) % m.config().vocab);
    auto cache = m.new_cache();
    const auto logits = m.prefill(cache, ids);
    auto t2 = std::chrono::steady_clock::now();
    struct rusage ru {};
    getrusage(RUSAGE_SELF, &ru);
    out["load_s"] = std::chrono::duration<double>(t1 - t0).count();
    out["prefill_s"] = std::chrono::duration<double>(t2 - t1).count();
    out["tokens"] = n;
    out["peak_rss_mib"] = double(ru.ru_maxrss) / 1024.0;
    out["last_top1"] = model::argmax(logits);
  } else {
    std::cerr << "skv_model_probe: unknown command " << cmd << "\n";
    return 2;
  }
  std::cout << out.dump() << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "skv_model_probe: " << e.what() << "\n";
    return 1;
  }
}
