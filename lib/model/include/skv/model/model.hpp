// A small, correct CPU reference runner for Llama-family GGUF models (llama, mistral, qwen2):
// token embedding, RMSNorm, RoPE, grouped-query attention with a causal mask and a per-token
// cache mask, SwiGLU MLP, tied or separate output head. Weights are dequantized to F32 once at
// load; matrix products go through OpenBLAS (cblas_sgemm).
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "skv/kvcache.hpp"
#include "skv/model/kv_cache.hpp"
#include "skv/model/tokenizer.hpp"

namespace skv::model {

struct ModelConfig {
  std::string name, architecture;  // general.name, general.architecture
  int n_layers = 0, d_model = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0, d_ff = 0;
  int vocab = 0, n_rot = 0, context_length = 0;
  float rope_theta = 10000.0f, rms_eps = 1e-5f;
  // Pairing of RoPE dimensions as stored in the weights: gptj = adjacent pairs (2i, 2i+1), what
  // ggml's rope mode 0 applies to llama GGUFs (convert_hf_to_gguf permutes q/k for it);
  // neox = halves (i, i + n_rot/2), ggml's NEOX mode (qwen2).
  RopeStyle rope_style = RopeStyle::gptj;
};

struct LayerWeights {
  std::vector<float> attn_norm, wq, wk, wv, wo, bq, bk, bv;  // W as [out, in]; biases optional
  std::vector<float> ffn_norm, w_gate, w_up, w_down;
};

struct Weights {
  std::vector<float> tok_embd;  // [vocab, d_model]
  std::vector<float> out_norm;  // [d_model]
  std::vector<float> output;    // [vocab, d_model]; empty = tied to tok_embd
  std::vector<LayerWeights> layers;
};

// Post-RoPE queries of the last `window` tokens of a forward call, per layer
// [q_heads, window, head_dim] (fewer rows when the call had fewer tokens).
struct QueryCapture {
  int window = 0;
  int rows = 0;
  std::vector<std::vector<float>> q;
};

class Model {
 public:
  // Loads a GGUF file; threads <= 0 leaves OpenBLAS's default.
  static Model load(const std::string& path, int threads = 0);
  // A model from explicit weights (tests, tiny random models); no tokenizer.
  Model(ModelConfig cfg, Weights w);
  Model(Model&&) noexcept;
  Model& operator=(Model&&) noexcept;
  ~Model();

  const ModelConfig& config() const noexcept { return cfg_; }
  bool has_tokenizer() const noexcept { return tokenizer_.has_value(); }
  const Tokenizer& tokenizer() const;  // throws when the GGUF's tokenizer is not supported
  const std::string& source() const noexcept { return source_; }

  KvCacheObject new_cache() const { return {cfg_.n_layers, cfg_.n_kv_heads, cfg_.head_dim}; }

  // Runs `tokens` at positions cache.tokens().. and appends their K/V to the cache. Returns
  // logits [n, vocab] for the last n = tokens.size() - logits_from tokens (logits_from may equal
  // tokens.size() for none). Queries of the last capture->window tokens go to *capture.
  std::vector<float> forward(KvCacheObject& cache, std::span<const int32_t> tokens,
                             size_t logits_from, QueryCapture* capture = nullptr) const;
  // Prefill: logits of the last token only.
  std::vector<float> prefill(KvCacheObject& cache, std::span<const int32_t> tokens,
                             QueryCapture* capture = nullptr) const {
    return forward(cache, tokens, tokens.empty() ? 0 : tokens.size() - 1, capture);
  }
  std::vector<float> decode_step(KvCacheObject& cache, int32_t token) const {
    return forward(cache, std::span<const int32_t>(&token, 1), 0);
  }

 private:
  ModelConfig cfg_;
  Weights w_;
  std::optional<Tokenizer> tokenizer_;
  std::string tokenizer_error_;
  std::string source_;
};

// Index of the largest logit.
int32_t argmax(std::span<const float> logits);

}  // namespace skv::model
