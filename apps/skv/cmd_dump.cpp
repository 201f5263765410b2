// skv dump: run a GGUF model over some text and write its KV cache as a canonical dump
// (safetensors: layers.{L}.k/.v/.q F16 and __metadata__), the input every other command takes.
#include <fmt/core.h>

#include <filesystem>
#include <random>

#include "cli.hpp"
#include "model_session.hpp"
#include "skv/error.hpp"
#include "skv/formats/safetensors.hpp"
#include "skv/model/eval.hpp"

namespace skv::cli {
namespace {

struct DumpArgs {
  std::string model, text_file, prompt, output;
  int tokens = 0, window = 32, threads = 0;
  bool force = false, needle = false, json = false;
  double needle_depth = 0.5;
  uint32_t seed = 1;
};

int run_dump(const DumpArgs& a, const Globals& g) {
  // Refuse an existing output before the (slow) prefill, not after it; OutputFile checks again.
  if (a.output != "-" && !a.force && std::filesystem::exists(a.output))
    fail(Errc::io, a.output, "already exists; use -f to overwrite");
  const model::Model m = load_model(a.model, a.threads, g);
  const model::Tokenizer& tok = m.tokenizer();
  const std::string text = a.text_file.empty() ? a.prompt : read_text(a.text_file);
  const std::string source = a.text_file.empty() ? "prompt" : a.text_file;
  std::vector<int32_t> ids;
  std::map<std::string, std::string> extra{{"source_text", source}};
  if (a.needle) {
    // Haystack of the text (repeated as needed), the needle sentence at the depth, then the
    // question: the window queries are the question's, as a retrieval engine would see them.
    std::mt19937 rng(a.seed);
    const uint32_t number = std::uniform_int_distribution<uint32_t>(10000, 99999)(rng);
    const int total = a.tokens > 0 ? a.tokens : int(tok.encode(text).size());
    const model::NeedlePrompt probe = model::make_needle_prompt(tok, text, 16, 0.5, number);
    const int haystack = total - int(probe.question.size());
    if (haystack < 16)
      fail(Errc::invalid_argument, "--tokens", fmt::format("{} tokens leave no room for a haystack and the "
                                                           "{}-token question", total, probe.question.size()));
    const model::NeedlePrompt p = model::make_needle_prompt(tok, text, haystack, a.needle_depth, number);
    ids = p.haystack;
    if (tok.add_bos_default()) ids.insert(ids.begin(), tok.bos());
    const int shift = tok.add_bos_default() ? 1 : 0;
    ids.insert(ids.end(), p.question.begin(), p.question.end());
    extra["needle_start"] = std::to_string(p.needle_start + shift);
    extra["needle_len"] = std::to_string(p.needle_len);
    extra["needle_number"] = p.number;
    extra["needle_depth"] = fmt::format("{}", a.needle_depth);
    extra["question_start"] = std::to_string(int(p.haystack.size()) + shift);
  } else {
    ids = tok.encode(text, tok.add_bos_default());
    if (ids.empty()) fail(Errc::invalid_argument, source, "the text encodes to no tokens");
    if (a.tokens > 0) {
      if (size_t(a.tokens) > ids.size())
        fail(Errc::invalid_argument, source,
             fmt::format("has {} tokens, --tokens asks for {}", ids.size(), a.tokens));
      ids.resize(size_t(a.tokens));
    }
  }
  model::KvCacheObject cache = m.new_cache();
  model::QueryCapture q;
  prefill(m, cache, ids, a.window, &q, g, "prefill");
  model::Dump d = model::dump_cache(m, cache, ids, a.window > 0 ? &q : nullptr);
  d.metadata.insert(extra.begin(), extra.end());
  std::vector<NamedTensor> named;
  for (size_t k = 0; k < d.names.size(); ++k) named.push_back({d.names[k], d.tensors[k].view()});
  safetensors::write_file(a.output, named, d.metadata, {.force = a.force});
  const auto& c = m.config();
  const uint64_t kv_bytes = uint64_t(c.n_layers) * 2 * uint64_t(c.n_kv_heads) * ids.size() * uint64_t(c.head_dim) * 2;
  if (a.json) {
    nlohmann::json j{{"output", a.output}, {"model", d.metadata["model"]}, {"tokens", ids.size()},
                     {"layers", c.n_layers}, {"kv_heads", c.n_kv_heads}, {"head_dim", c.head_dim},
                     {"q_heads", c.n_heads}, {"window", q.rows}, {"fp16_bytes", kv_bytes},
                     {"metadata", d.metadata}};
    j["metadata"].erase("token_ids");
    print_json(j, a.output == "-");
  } else if (g.verbosity > 0) {
    fmt::print(stderr, "{}: {} tokens x {} layers x {} kv heads x {} dims ({} K/V as FP16), window {}{}\n",
               a.output, ids.size(), c.n_layers, c.n_kv_heads, c.head_dim, human_bytes(kv_bytes), q.rows,
               a.needle ? fmt::format(", needle {} at tokens {}+{}", d.metadata["needle_number"],
                                      d.metadata["needle_start"], d.metadata["needle_len"])
                        : "");
  }
  return kExitOk;
}

}  // namespace

void setup_dump(CLI::App& app, Context& ctx) {
  auto a = std::make_shared<DumpArgs>();
  auto* sub = app.add_subcommand("dump", "Run a GGUF model over text and write its KV cache as a dump (safetensors)");
  sub->add_option("--model", a->model, "GGUF model file (llama, mistral, qwen2 architectures)")->required();
  auto* text = sub->add_option("--text", a->text_file, "Text file to tokenize (UTF-8)");
  auto* prompt = sub->add_option("--prompt", a->prompt, "Text given on the command line");
  text->excludes(prompt);
  prompt->excludes(text);
  sub->add_option("--tokens", a->tokens,
                  "Tokens to keep: the first N of the text (0 = all); with --needle the total "
                  "length, the text repeated as needed")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--window", a->window, "Observation window: post-RoPE queries of the last W tokens (0 = none)")
      ->check(CLI::NonNegativeNumber);
  sub->add_flag("--needle", a->needle,
                "Plant 'The secret number is NNNNN.' in the text and end with a question about it; "
                "the span goes to __metadata__ (needle_start, needle_len)");
  sub->add_option("--needle-depth", a->needle_depth, "Where the needle goes: 0 = start, 1 = end")
      ->check(CLI::Range(0.0, 1.0));
  sub->add_option("--seed", a->seed, "Seed of the needle's random number");
  sub->add_option("-o,--output", a->output, "Output dump (.safetensors); '-' is stdout")->required();
  sub->add_flag("-f,--force", a->force, "Overwrite an existing output file");
  sub->add_option("--threads", a->threads, "BLAS threads (0 = OpenBLAS's default)")->check(CLI::NonNegativeNumber);
  sub->add_flag("--json", a->json, "Print a JSON summary (to stderr when the dump goes to stdout)");
  ctx.add(sub, [a, &ctx, text, prompt] {
    if (text->count() == 0 && prompt->count() == 0) {
      fmt::print(stderr, "skv: dump: give the text with --text FILE or --prompt STRING\n");
      return kExitUsage;
    }
    return run_dump(*a, ctx.globals);
  });
}

}  // namespace skv::cli
