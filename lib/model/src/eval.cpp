#include "skv/model/eval.hpp"

#include <algorithm>
#include <cmath>

#include "skv/error.hpp"

namespace skv::model {

PerplexityResult perplexity(const Model& m, std::span<const int32_t> context,
                            std::span<const int32_t> targets, const CacheTransform& transform) {
  if (context.empty() || targets.empty())
    fail(Errc::invalid_argument, "perplexity", "needs at least one context and one target token");
  KvCacheObject cache = m.new_cache();
  const size_t N = context.size(), M = targets.size();
  if (N > 1) m.forward(cache, context.first(N - 1), N - 1);
  if (transform) transform(cache);
  std::vector<int32_t> q;
  q.reserve(M);
  q.push_back(context[N - 1]);
  q.insert(q.end(), targets.begin(), targets.end() - 1);
  const std::vector<float> logits = m.forward(cache, q, 0);
  const size_t V = size_t(m.config().vocab);
  PerplexityResult r;
  r.context = int(N);
  r.targets = int(M);
  double nll = 0;
  for (size_t t = 0; t < M; ++t) {
    const float* row = logits.data() + t * V;
    const float mx = *std::max_element(row, row + V);
    double s = 0;
    for (size_t k = 0; k < V; ++k) s += std::exp(double(row[k] - mx));
    nll -= double(row[size_t(targets[t])] - mx) - std::log(s);
    if (argmax({row, V}) == targets[t]) ++r.top1_hits;
  }
  r.mean_nll = nll / double(M);
  r.ppl = std::exp(r.mean_nll);
  return r;
}

NeedlePrompt make_needle_prompt(const Tokenizer& tok, std::string_view filler, int haystack_tokens,
                                double depth, uint32_t number) {
  if (filler.empty() || haystack_tokens < 16 || depth < 0 || depth > 1 || number > 99999)
    fail(Errc::invalid_argument, "needle", "needs filler text, >= 16 haystack tokens, depth in [0, 1], a 5-digit number");
  NeedlePrompt p;
  char digits[8];
  std::snprintf(digits, sizeof digits, "%05u", number);
  p.number = digits;
  const std::vector<int32_t> needle = tok.encode(" The secret number is " + p.number + ". ");
  const std::vector<int32_t> one = tok.encode(filler);
  if (one.empty()) fail(Errc::invalid_argument, "needle", "filler encodes to no tokens");
  const int fill = std::max(1, haystack_tokens - int(needle.size()));
  std::vector<int32_t> f;
  while (int(f.size()) < fill) f.insert(f.end(), one.begin(), one.end());
  f.resize(size_t(fill));
  // Move the insertion point back to just after a sentence end, so the needle reads as prose.
  size_t at = size_t(std::lround(depth * double(fill)));
  for (size_t k = at; k > 0 && at - k < 64; --k) {
    const std::string s = tok.token_bytes(f[k - 1]);
    if (!s.empty() && (s.back() == '.' || s.back() == '\n')) { at = k; break; }
  }
  p.haystack.assign(f.begin(), f.begin() + std::ptrdiff_t(at));
  p.needle_start = int(p.haystack.size());
  p.needle_len = int(needle.size());
  p.haystack.insert(p.haystack.end(), needle.begin(), needle.end());
  p.haystack.insert(p.haystack.end(), f.begin() + std::ptrdiff_t(at), f.end());
  p.question = tok.encode("\n\nQuestion: What is the secret number mentioned in the text above?\nAnswer: The secret number is");
  return p;
}

NeedleResult needle_trial(const Model& m, const NeedlePrompt& prompt, const CacheTransform& transform,
                          int max_new_tokens) {
  if (prompt.haystack.empty() || prompt.question.empty())
    fail(Errc::invalid_argument, "needle", "empty haystack or question");
  KvCacheObject cache = m.new_cache();
  m.forward(cache, prompt.haystack, prompt.haystack.size());
  if (transform) transform(cache);
  std::vector<float> logits = m.prefill(cache, prompt.question);
  NeedleResult r;
  const int32_t eos = m.has_tokenizer() ? m.tokenizer().eos() : -1;
  for (int k = 0; k < max_new_tokens; ++k) {
    const int32_t next = argmax(logits);
    if (next == eos) break;
    r.answer_ids.push_back(next);
    if (k + 1 < max_new_tokens) logits = m.decode_step(cache, next);
  }
  r.answer = m.has_tokenizer() ? m.tokenizer().decode(r.answer_ids) : std::string();
  r.success = r.answer.find(prompt.number) != std::string::npos;
  return r;
}

}  // namespace skv::model
