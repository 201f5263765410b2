// Model::load: GGUF metadata -> ModelConfig, tensors -> dequantized F32 weights (shape-checked).
#include <cblas.h>

#include <cmath>

#include "skv/error.hpp"
#include "skv/formats/gguf.hpp"
#include "skv/limits.hpp"
#include "skv/model/model.hpp"

namespace skv::model {
namespace {

std::vector<float> load_tensor(const gguf::File& f, const std::string& name,
                               std::initializer_list<uint64_t> dims, bool optional = false) {
  const gguf::TensorInfo* t = f.tensor(name);
  if (!t) {
    if (optional) return {};
    fail(Errc::format, f.source(), "missing tensor '" + name + "'");
  }
  if (!std::equal(t->dims.begin(), t->dims.end(), dims.begin(), dims.end())) {
    std::string want, got;
    for (auto d : dims) want += (want.empty() ? "" : ", ") + std::to_string(d);
    for (auto d : t->dims) got += (got.empty() ? "" : ", ") + std::to_string(d);
    fail(Errc::format, f.source(), "tensor '" + name + "' has dims [" + got + "], expected [" + want + "]");
  }
  return f.dequantize(*t);
}

int to_int(uint64_t v, const gguf::File& f, const std::string& key) {
  if (v == 0 || v > (uint64_t(1) << 30)) fail(Errc::format, f.source(), key + " = " + std::to_string(v) + " is out of range");
  return int(v);
}

}  // namespace

Model::Model(ModelConfig cfg, Weights w) : cfg_(std::move(cfg)), w_(std::move(w)) {
  const ModelConfig& c = cfg_;
  if (c.n_layers <= 0 || c.d_model <= 0 || c.n_heads <= 0 || c.n_kv_heads <= 0 || c.head_dim <= 0 ||
      c.d_ff <= 0 || c.vocab <= 0 || c.n_heads % c.n_kv_heads != 0 || c.n_rot <= 0 ||
      c.n_rot > c.head_dim || c.n_rot % 2 != 0)
    fail(Errc::invalid_argument, "model config", "inconsistent dimensions");
  const size_t d = size_t(c.d_model), qd = size_t(c.n_heads) * size_t(c.head_dim),
               kd = size_t(c.n_kv_heads) * size_t(c.head_dim), ff = size_t(c.d_ff), V = size_t(c.vocab);
  auto check = [](const std::vector<float>& v, size_t n, const std::string& what, bool optional = false) {
    if ((optional && v.empty()) || v.size() == n) return;
    fail(Errc::invalid_argument, "model weights", what + " has " + std::to_string(v.size()) +
                                                       " elements, expected " + std::to_string(n));
  };
  check(w_.tok_embd, V * d, "tok_embd");
  check(w_.out_norm, d, "out_norm");
  check(w_.output, V * d, "output", true);
  if (w_.layers.size() != size_t(c.n_layers)) fail(Errc::invalid_argument, "model weights", "layer count mismatch");
  for (size_t l = 0; l < w_.layers.size(); ++l) {
    const LayerWeights& L = w_.layers[l];
    const std::string p = "layer " + std::to_string(l) + " ";
    check(L.attn_norm, d, p + "attn_norm"); check(L.ffn_norm, d, p + "ffn_norm");
    check(L.wq, qd * d, p + "wq"); check(L.wk, kd * d, p + "wk"); check(L.wv, kd * d, p + "wv");
    check(L.wo, d * qd, p + "wo");
    check(L.bq, qd, p + "bq", true); check(L.bk, kd, p + "bk", true); check(L.bv, kd, p + "bv", true);
    check(L.w_gate, ff * d, p + "w_gate"); check(L.w_up, ff * d, p + "w_up"); check(L.w_down, d * ff, p + "w_down");
  }
}

Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;
Model::~Model() = default;

const Tokenizer& Model::tokenizer() const {
  if (!tokenizer_) fail(Errc::unsupported, source_.empty() ? "model" : source_, "no tokenizer: " + tokenizer_error_);
  return *tokenizer_;
}

Model Model::load(const std::string& path, int threads) {
  if (threads > 0) openblas_set_num_threads(threads);
  const gguf::File f = gguf::File::open(path);
  ModelConfig c;
  c.architecture = f.require_string("general.architecture");
  c.name = f.get_string("general.name").value_or("");
  const std::string& a = c.architecture;
  if (a == "llama" || a == "mistral") c.rope_style = RopeStyle::gptj;  // ggml rope mode 0
  else if (a == "qwen2") c.rope_style = RopeStyle::neox;               // ggml NEOX mode
  else fail(Errc::unsupported, path, "architecture '" + a + "' (llama, mistral, qwen2 are implemented)");

  c.n_layers = to_int(f.require_uint(a + ".block_count"), f, a + ".block_count");
  c.d_model = to_int(f.require_uint(a + ".embedding_length"), f, a + ".embedding_length");
  c.d_ff = to_int(f.require_uint(a + ".feed_forward_length"), f, a + ".feed_forward_length");
  c.n_heads = to_int(f.require_uint(a + ".attention.head_count"), f, a + ".attention.head_count");
  c.n_kv_heads = to_int(f.get_uint(a + ".attention.head_count_kv").value_or(uint64_t(c.n_heads)), f,
                        a + ".attention.head_count_kv");
  c.head_dim = to_int(f.get_uint(a + ".attention.key_length").value_or(uint64_t(c.d_model / c.n_heads)), f,
                      a + ".attention.key_length");
  if (f.get_uint(a + ".attention.value_length").value_or(uint64_t(c.head_dim)) != uint64_t(c.head_dim))
    fail(Errc::unsupported, path, "value_length differs from key_length");
  c.n_rot = to_int(f.get_uint(a + ".rope.dimension_count").value_or(uint64_t(c.head_dim)), f,
                   a + ".rope.dimension_count");
  // The containers' limit (skv/limits.hpp): a dump must be one that skv can encode.
  const double theta = f.get_float(a + ".rope.freq_base").value_or(10000.0);
  if (!limits::rope_theta_ok(theta) || !std::isfinite(float(theta)))
    fail(Errc::format, path, a + ".rope.freq_base = " + std::to_string(theta) + " is not a finite number >= 1");
  c.rope_theta = float(theta);
  c.rms_eps = float(f.get_float(a + ".attention.layer_norm_rms_epsilon").value_or(1e-5));
  c.context_length = int(f.get_uint(a + ".context_length").value_or(0));
  if (auto st = f.get_string(a + ".rope.scaling.type"); st && *st != "none")
    fail(Errc::unsupported, path, "rope scaling '" + *st + "'");
  if (f.tensor("rope_freqs.weight")) fail(Errc::unsupported, path, "per-dimension rope frequency factors");
  if (c.n_heads % c.n_kv_heads != 0 || c.n_rot > c.head_dim || c.n_rot % 2 != 0)
    fail(Errc::format, path, "inconsistent head counts or rope dimensions");

  const gguf::TensorInfo* emb = f.tensor("token_embd.weight");
  if (!emb || emb->dims.size() != 2) fail(Errc::format, path, "missing or malformed token_embd.weight");
  c.vocab = to_int(emb->dims[1], f, "token_embd.weight vocabulary");

  const uint64_t d = uint64_t(c.d_model), qd = uint64_t(c.n_heads * c.head_dim),
                 kd = uint64_t(c.n_kv_heads * c.head_dim), ff = uint64_t(c.d_ff), V = uint64_t(c.vocab);
  Weights w;
  w.tok_embd = load_tensor(f, "token_embd.weight", {d, V});
  w.out_norm = load_tensor(f, "output_norm.weight", {d});
  w.output = load_tensor(f, "output.weight", {d, V}, true);
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    LayerWeights L;
    L.attn_norm = load_tensor(f, p + "attn_norm.weight", {d});
    L.wq = load_tensor(f, p + "attn_q.weight", {d, qd});
    L.wk = load_tensor(f, p + "attn_k.weight", {d, kd});
    L.wv = load_tensor(f, p + "attn_v.weight", {d, kd});
    L.wo = load_tensor(f, p + "attn_output.weight", {qd, d});
    L.bq = load_tensor(f, p + "attn_q.bias", {qd}, true);
    L.bk = load_tensor(f, p + "attn_k.bias", {kd}, true);
    L.bv = load_tensor(f, p + "attn_v.bias", {kd}, true);
    L.ffn_norm = load_tensor(f, p + "ffn_norm.weight", {d});
    L.w_gate = load_tensor(f, p + "ffn_gate.weight", {d, ff});
    L.w_up = load_tensor(f, p + "ffn_up.weight", {d, ff});
    L.w_down = load_tensor(f, p + "ffn_down.weight", {ff, d});
    w.layers.push_back(std::move(L));
  }
  Model m(std::move(c), std::move(w));
  m.source_ = path;
  try {
    m.tokenizer_.emplace(Tokenizer::from_gguf(f));
  } catch (const Error& e) {
    m.tokenizer_error_ = e.what();
  }
  return m;
}

}  // namespace skv::model
