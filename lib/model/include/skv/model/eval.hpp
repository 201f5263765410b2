// Evaluation helpers measuring what a cache transform (e.g. an skv encode/decode round trip, or
// dropping tokens through the mask) does to the model: perplexity and needle-in-a-haystack.
#pragma once
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "skv/model/model.hpp"

namespace skv::model {

// Called once on the context's cache between prefill and scoring; may rewrite layers
// (set_layer) or mask tokens. An empty function leaves the cache alone.
using CacheTransform = std::function<void(KvCacheObject&)>;

struct PerplexityResult {
  double ppl = 0, mean_nll = 0;  // nats
  int context = 0, targets = 0;
  int top1_hits = 0;  // targets that were the argmax prediction
};

// Perplexity of `targets` following `context` (N >= 1 tokens). The cache of context[0..N-1)
// is prefilled and transformed; then context[N-1] and targets[0..M-1) run as fresh queries over
// it, so every one of the M predictions reads the transformed cache.
PerplexityResult perplexity(const Model& m, std::span<const int32_t> context,
                            std::span<const int32_t> targets, const CacheTransform& transform = {});

struct NeedlePrompt {
  std::vector<int32_t> haystack;  // filler with the needle inside: the cache under test
  std::vector<int32_t> question;  // asked after the haystack, as fresh queries
  int needle_start = 0, needle_len = 0;  // token range of the needle in haystack
  std::string number;              // the secret, 5 digits
};

// Filler text (repeated as needed) cut to about haystack_tokens tokens, with the sentence
// "The secret number is NNNNN." inserted at a sentence boundary near depth (0 = start, 1 = end).
NeedlePrompt make_needle_prompt(const Tokenizer& tok, std::string_view filler, int haystack_tokens,
                                double depth, uint32_t number);

struct NeedleResult {
  bool success = false;  // the greedy answer contains the number
  std::string answer;
  std::vector<int32_t> answer_ids;
};

// Prefills the haystack, applies the transform, asks the question and greedily generates up to
// max_new_tokens (stopping at EOS).
NeedleResult needle_trial(const Model& m, const NeedlePrompt& prompt,
                          const CacheTransform& transform = {}, int max_new_tokens = 32);

}  // namespace skv::model
