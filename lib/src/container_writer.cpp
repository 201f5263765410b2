// encode(): KvCache + Plan -> .skv container, streamed front to back (formats/skv.md).
#include <algorithm>
#include <xxhash.h>
#include <zstd.h>

#include <cstring>
#include <memory>
#include <span>

#include "container_format.hpp"
#include "container_section.hpp"
#include "hash.hpp"
#include "key_rows.hpp"
#include "quant_rows.hpp"
#include "rope.hpp"
#include "skv/error.hpp"
#include "skv/half.hpp"
#include "skv/parallel.hpp"

namespace skv {
namespace fmt {

void fill_header_hash(uint8_t* h) { put_u64(h + 56, XXH3_64bits(h, 56)); }

uint64_t write_section(CountingSink& out, uint32_t tag, uint64_t number, const Payload& payload) {
  XXH3_state_t* st = XXH3_createState();
  XXH3_64bits_reset(st);
  for (const auto& part : payload.parts) XXH3_64bits_update(st, part.p, size_t(part.n));
  const uint64_t pad = align64(payload.size) - payload.size;
  XXH3_64bits_update(st, kZeros, size_t(pad));
  const uint64_t hash = XXH3_64bits_digest(st);
  XXH3_freeState(st);
  uint8_t h[kHeaderSize] = {};
  put_u32(h, tag);
  put_u32(h + 4, kFlagRequired);
  put_u64(h + 8, payload.size);
  put_u64(h + 16, number);
  put_u64(h + 48, hash);
  fill_header_hash(h);
  out.write(h, kHeaderSize);
  for (const auto& part : payload.parts) out.write(part.p, part.n);
  out.write(kZeros, pad);
  return kHeaderSize + payload.size + pad;
}

}  // namespace fmt

using namespace fmt;
static_assert(kMaxStreams == kStreamsPerLayer);

namespace {

struct Geometry {
  int L, H, T, D, g8, g4, g2;  // g2 = 0: no INT2 declared
  RowBytes rb;
  bool centred;
  bool int2;        // the file declares INT2 (format 1.1)
  int streams;      // streams per layer: 13, or 17 with INT2
  uint64_t dir;     // directory bytes: 320, or 448 with INT2
};

// Bytes of stream `s` (raw) given the per-tier token counts of K (n[0]) and V (n[1]).
uint64_t stream_size(const Geometry& g, int s, const uint64_t (&n)[2][kNumTiers]) {
  const uint64_t H = uint64_t(g.H), D = uint64_t(g.D);
  if (s == kKMap || s == kVMap) return uint64_t(g.T);
  if (s == kKCentre) return g.centred ? 4 * H * D : 0;
  if (s >= kKQ2) {
    const int kv = s >= kVQ2 ? 1 : 0;
    return H * n[kv][4] * (s == kKQ2 || s == kVQ2 ? g.rb.values[4] : g.rb.params[4]);
  }
  const int kv = s >= kVBase ? 1 : 0;
  switch (s - (kv ? kVBase : kKBase)) {
    case kF16: return H * n[kv][0] * g.rb.values[0];
    case kQ8: return H * n[kv][1] * g.rb.values[1];
    case kS8: return H * n[kv][1] * g.rb.params[1];
    case kQ4: return H * n[kv][2] * g.rb.values[2];
    default: return H * n[kv][2] * g.rb.params[2];
  }
}

void validate(const KvCache& c, const Plan& plan, const std::string& ctx) {
  const KvShape& s = c.shape;
  if (s.layers < 1 || s.kv_heads < 1 || s.tokens < 1 || s.head_dim < 1)
    fail(Errc::invalid_argument, ctx, "empty cache shape");
  if (!is_float(s.dtype)) fail(Errc::invalid_argument, ctx, "K/V dtype must be F16, BF16 or F32");
  if (c.layers.size() != size_t(s.layers))
    fail(Errc::invalid_argument, ctx, "cache lists " + std::to_string(c.layers.size()) +
                                          " layers, shape says " + std::to_string(s.layers));
  const size_t bytes = size_t(s.kv_heads) * size_t(s.tokens) * size_t(s.head_dim) * dtype_size(s.dtype);
  for (size_t l = 0; l < c.layers.size(); ++l) {
    const KvLayer& L = c.layers[l];
    if (L.k.bytes.size() != bytes || L.v.bytes.size() != bytes || L.k.dtype != s.dtype ||
        L.v.dtype != s.dtype)
      fail(Errc::invalid_argument, ctx, "layer " + std::to_string(l) + " K/V tensors do not match the cache shape");
  }
  if (plan.layers != s.layers || plan.tokens != s.tokens ||
      plan.k_tiers.size() != size_t(s.layers) * size_t(s.tokens) ||
      plan.v_tiers.size() != plan.k_tiers.size())
    fail(Errc::invalid_argument, ctx, "plan shape does not match the cache");
  for (const auto* tiers : {&plan.k_tiers, &plan.v_tiers})
    for (Tier t : *tiers) {
      if (uint8_t(t) >= kNumTiers) fail(Errc::invalid_argument, ctx, "plan holds an unknown tier code");
      if (t == Tier::INT2 && !plan.quant.int2)
        fail(Errc::invalid_argument, ctx,
             "plan holds INT2 tokens but its quant settings do not enable INT2 (QuantSettings::int2)");
    }
  if (plan.quant.key_transform == KeyTransform::prerope_centre && !c.meta.prerope_ok(s))
    fail(Errc::invalid_argument, ctx, "key transform prerope_centre: " + c.meta.prerope_unavailable(s));
  if (c.meta.position_offset < 0) fail(Errc::invalid_argument, ctx, "negative position_offset");
  if (uint8_t(plan.quant.key_transform) > 2) fail(Errc::invalid_argument, ctx, "unknown key transform");
  if (plan.quant.zstd_level < 0 || plan.quant.zstd_level > ZSTD_maxCLevel())
    fail(Errc::invalid_argument, ctx, "zstd level out of range");
}

// Loads one source row as f32.
void load_row(const detail::RowKernels& K, DType dt, const std::byte* src, int d, float* x) {
  if (dt == DType::F16) K.f16_to_f32(reinterpret_cast<const uint16_t*>(src), d, x);
  else if (dt == DType::BF16) K.bf16_to_f32(reinterpret_cast<const uint16_t*>(src), d, x);
  else std::memcpy(x, src, size_t(d) * 4);
}

// Growable uninitialised memory: the quantizer writes every stream byte, so zero-filling fresh
// memory would only be one more pass over it.
struct Scratch {
  Buffer buf;
  uint8_t* get(uint64_t n) {
    if (n > buf.size()) buf = Buffer(size_t(n));
    return reinterpret_cast<uint8_t*>(buf.data());
  }
};

// Writes into memory claimed from the sink (when that memory is too poorly aligned to
// quantize into in place).
struct SpanWriter final : ByteSink {
  uint8_t* p;
  explicit SpanWriter(uint8_t* at) : p(at) {}
  void write(const void* src, size_t n) override {
    std::memcpy(p, src, n);
    p += n;
  }
};

// One layer in flight: its tier counts and ranks, where its streams are built, and (for a sink
// that hands out memory) the claimed section they are built in.
struct LayerJob {
  int l = -1;
  uint64_t n[2][kNumTiers]{};
  std::vector<uint32_t> rank[2];
  uint64_t size[kMaxStreams]{};  // raw bytes of each stream (0 past the file's stream count)
  uint64_t off[kMaxStreams]{};   // offsets in the payload, uncompressed
  uint64_t payload = 0;          // payload bytes before the final padding, uncompressed
  uint8_t* dst[kMaxStreams]{};   // where each stream is built (null: not built here)
  std::span<const std::byte> direct[2];   // see LayerEncoder::plan_layer()
  const LayerStreamViews* external = nullptr;  // streams given by EncodeOptions::layer_streams
  uint8_t* section = nullptr;  // claimed: header + padded payload in the sink's memory
  bool in_place = false;       // streams are built inside `section`
  Scratch scratch[kMaxStreams];

  uint64_t section_bytes() const { return kHeaderSize + align64(payload); }
  bool is_direct(int s) const {
    return (s == int(kKBase) + int(kF16) && !direct[0].empty()) || (s == int(kVBase) + int(kF16) && !direct[1].empty());
  }
  // The raw bytes of stream s.
  std::span<const uint8_t> raw(int s) const {
    if (external) return (*external)[size_t(s)];
    if (is_direct(s)) {
      const std::span<const std::byte> d = direct[s == int(kVBase) + int(kF16) ? 1 : 0];
      return {reinterpret_cast<const uint8_t*>(d.data()), d.size()};
    }
    return {dst[s], size_t(size[s])};
  }
};

struct LayerEncoder {
  const KvCache& c;
  const Plan& plan;
  const Geometry& g;
  const detail::RopeTables* ropes;  // null unless prerope_centre

  // Tier counts, ranks within each tier and stream sizes of layer l.
  void count(LayerJob& j, int l) const {
    j.l = l;
    j.external = nullptr;
    j.section = nullptr;
    j.in_place = false;
    for (int kv = 0; kv < 2; ++kv) {
      std::fill(std::begin(j.n[kv]), std::end(j.n[kv]), 0);
      j.rank[kv].resize(size_t(g.T));
      for (int t = 0; t < g.T; ++t) {
        const Tier tier = kv ? plan.v(l, t) : plan.k(l, t);
        j.rank[kv][size_t(t)] = uint32_t(j.n[kv][size_t(tier)]++);
      }
    }
    uint64_t end = g.dir;
    for (int s = 0; s < g.streams; ++s) {
      j.size[s] = stream_size(g, s, j.n);
      j.off[s] = align64(end);
      end = j.off[s] + j.size[s];
    }
    j.payload = end;
  }

  void write_maps(LayerJob& j) const {
    for (int kv = 0; kv < 2; ++kv) {
      uint8_t* map = j.dst[kv ? kVMap : kKMap];
      for (int t = 0; t < g.T; ++t) map[t] = uint8_t(kv ? plan.v(j.l, t) : plan.k(j.l, t));
    }
  }

  // Takes layer l's streams from an external encoder, after checking them against the plan.
  void use_external(LayerJob& j, int l, const LayerStreamViews& views) const {
    count(j, l);
    for (int kv = 0; kv < 2; ++kv) j.dst[kv ? kVMap : kKMap] = j.scratch[kv ? kVMap : kKMap].get(uint64_t(g.T));
    write_maps(j);
    for (int s = 0; s < kMaxStreams; ++s)  // streams past the file's count must be empty
      if (views[size_t(s)].size() != j.size[s])
        fail(Errc::invalid_argument, c.source,
             "layer " + std::to_string(l) + " stream " + std::to_string(s) + ": the external encoder gave " +
                 std::to_string(views[size_t(s)].size()) + " bytes, the plan implies " + std::to_string(j.size[s]));
    for (int s : {int(kKMap), int(kVMap)})
      if (std::memcmp(views[size_t(s)].data(), j.dst[s], size_t(g.T)) != 0)
        fail(Errc::invalid_argument, c.source,
             "layer " + std::to_string(l) + ": the external encoder's tier map differs from the plan");
    j.direct[0] = j.direct[1] = {};
    j.external = &views;
  }

  // Sets layer l up to be quantized: in `claimed` (the section's memory in the sink, or null),
  // else in the job's scratch buffers.
  void plan_layer(LayerJob& j, int l, uint8_t* claimed) const {
    count(j, l);
    j.section = claimed;
    j.in_place = claimed && reinterpret_cast<uintptr_t>(claimed) % 16 == 0;
    // A layer whose K (or V) is all FP16, from 16-bit HTD rows, has an FP16 stream that is the
    // source tensor byte for byte: unless built in place, it is written from there, not copied.
    for (int kv = 0; kv < 2; ++kv) {
      const KvLayer& L = c.layers[size_t(l)];
      j.direct[kv] = !j.in_place && j.n[kv][0] == uint64_t(g.T) && c.layout == Layout::HTD &&
                             c.shape.dtype != DType::F32
                         ? (kv ? L.v.bytes : L.k.bytes)
                         : std::span<const std::byte>();
    }
    for (int s = 0; s < g.streams; ++s)
      j.dst[s] = j.is_direct(s) ? nullptr
                 : j.in_place   ? j.section + kHeaderSize + j.off[s]
                                : j.scratch[s].get(j.size[s]);
    write_maps(j);
  }

  // Uncompressed sections: directory, zero padding, hash and header around streams already in
  // place (claimed memory), or written out from the scratch buffers.
  void seal(LayerJob& j, ByteSink& sink) const {
    uint8_t dir[kDirSizeInt2] = {};
    for (int s = 0; s < g.streams; ++s) {
      put_u64(dir + s * kDirEntry + 8, j.size[s]);
      put_u64(dir + s * kDirEntry + 16, j.size[s]);
    }
    if (j.in_place) {
      uint8_t* p = j.section + kHeaderSize;
      std::memcpy(p, dir, size_t(g.dir));
      uint64_t end = g.dir;
      for (int s = 0; s < g.streams; ++s) {
        std::memset(p + end, 0, size_t(j.off[s] - end));
        end = j.off[s] + j.size[s];
      }
      std::memset(p + end, 0, size_t(align64(end) - end));
      uint8_t* h = j.section;
      std::memset(h, 0, kHeaderSize);
      put_u32(h, kTagLayr);
      put_u32(h + 4, kFlagRequired);
      put_u64(h + 8, j.payload);
      put_u64(h + 16, uint64_t(j.l));
      put_u64(h + 48, detail::xxh3_64(p, size_t(align64(end))));
      fill_header_hash(h);
      return;
    }
    Payload p;
    p.add(dir, g.dir);
    for (int s = 0; s < g.streams; ++s) {
      p.pad();
      const std::span<const uint8_t> r = j.raw(s);
      p.add(r.data(), r.size());
    }
    SpanWriter claimed(j.section);
    CountingSink out{j.section ? static_cast<ByteSink&>(claimed) : sink};
    write_section(out, kTagLayr, uint64_t(j.l), p);
  }

  // One (K or V, head) of a layer: fills that head's slice of every tier stream.
  void encode_head(LayerJob& j, int kv, int h) const {
    const int l = j.l;
    const detail::RowKernels& K = detail::row_kernels();
    const int D = g.D;
    const DType dt = c.shape.dtype;
    const uint8_t* map = j.dst[kv ? kVMap : kKMap];
    const int base = kv ? kVBase : kKBase;
    std::vector<float> x(static_cast<size_t>(D));
    const float* centre = nullptr;
    const bool transform = kv == 0 && g.centred;
    const detail::KeyRowKernels& KK = detail::key_row_kernels();
    const detail::RowType rt = dt == DType::F16 ? detail::RowType::f16
                               : dt == DType::BF16 ? detail::RowType::bf16
                                                   : detail::RowType::f32;
    std::vector<float> cs(static_cast<size_t>(D / 2 + 1)), sn(static_cast<size_t>(D / 2 + 1));
    const detail::RopeTable* rope = ropes && kv == 0 ? &ropes->layer(l) : nullptr;  // this layer's
    // RoPE of tokens t, t + 1, ...: the table's cached angles in place, or (a position the table
    // does not hold) computed here, for one row only: `rows` is cut to 1.
    auto rope_run = [&](int t, int& rows) {
      detail::RowRope r;
      if (!rope) return r;
      const int64_t p = c.meta.position_offset + t;
      r.gptj = rope->style() == RopeStyle::gptj;
      r.step = size_t(D / 2);
      r.cs = rope->cached_cos(p);
      r.sn = rope->cached_sin(p);
      if (!r.cs || !rope->cached_cos(p + rows - 1)) {
        rope->angles(p, cs.data(), sn.data());
        r.cs = cs.data();
        r.sn = sn.data();
        rows = 1;
      }
      return r;
    };
    const size_t src_row = size_t(D) * dtype_size(dt);
    const std::byte* src0 = c.row(l, kv == 1, h, 0);
    const size_t src_step = c.layout == Layout::HTD ? src_row : src_row * size_t(g.H);
    if (transform) {
      float* cdst = reinterpret_cast<float*>(j.dst[kKCentre]) + size_t(h) * size_t(D);
      std::vector<double> acc(static_cast<size_t>(D), 0.0);
      const double count = double(j.n[0][1] + j.n[0][2] + j.n[0][4]);
      auto quantized = [&](int t) { return is_quantized(Tier(map[t])); };
      for (int t = 0; t < g.T;) {
        if (!quantized(t)) {
          ++t;
          continue;
        }
        int t2 = t + 1;  // a run of quantized tokens, summed in token order
        while (t2 < g.T && quantized(t2)) ++t2;
        int rows = t2 - t;
        const detail::RowRope rr = rope_run(t, rows);
        KK.accumulate(src0 + size_t(t) * src_step, rt, src_step / dtype_size(dt), rows, D, rr, count, acc.data());
        t += rows;
      }
      for (int d = 0; d < D; ++d) cdst[d] = float(acc[size_t(d)]);
      centre = cdst;
    }
    uint8_t* f16 = j.dst[base + kF16];
    auto* q8 = reinterpret_cast<int8_t*>(j.dst[base + kQ8]);
    auto* s8 = reinterpret_cast<uint16_t*>(j.dst[base + kS8]);
    uint8_t* q4 = j.dst[base + kQ4];
    auto* p4 = reinterpret_cast<uint16_t*>(j.dst[base + kP4]);
    uint8_t* q2 = g.int2 ? j.dst[kv ? kVQ2 : kKQ2] : nullptr;
    auto* p2 = g.int2 ? reinterpret_cast<uint16_t*>(j.dst[kv ? kVP2 : kKP2]) : nullptr;
    const uint64_t H = uint64_t(h);
    const uint64_t(&n)[kNumTiers] = j.n[kv];
    // Source rows of this head: src0 and src_step above (rows of one head are T apart in THD).
    // 16-bit rows without a key transform go through the fused load-and-quantize kernels.
    const bool fused = !transform && dt != DType::F32;
    const bool bf16 = dt == DType::BF16;
    const bool f16_direct = !j.direct[kv].empty();
    const uint32_t* rk = j.rank[kv].data();
    for (int t = 0; t < g.T; ++t) {
      const Tier tier = Tier(map[t]);
      if (tier == Tier::DROP) continue;
      const std::byte* src = src0 + size_t(t) * src_step;
      const uint64_t r = rk[t];
      if (tier == Tier::FP16) {
        if (f16_direct) continue;
        uint8_t* dst = f16 + (H * n[0] + r) * g.rb.values[0];
        if (dt == DType::F32)
          K.f32_to_f16(reinterpret_cast<const float*>(src), D, reinterpret_cast<uint16_t*>(dst));
        else
          std::memcpy(dst, src, size_t(g.rb.values[0]));
        continue;
      }
      const auto* src16 = reinterpret_cast<const uint16_t*>(src);
      if (fused) {
        // A run of tokens at this tier: consecutive rows of its stream, quantized in one call.
        int t2 = t + 1;
        while (t2 < g.T && map[t2] == uint8_t(tier)) ++t2;
        const int rows = t2 - t;
        const size_t stride = src_step / 2;
        int bad;
        if (tier == Tier::INT8) {
          const uint64_t row = H * n[1] + r;
          bad = K.q8_h_rows(src16, stride, rows, bf16, D, g.g8, q8 + row * uint64_t(D), s8 + row * uint64_t(D / g.g8));
        } else if (tier == Tier::INT2) {
          const uint64_t row = H * n[4] + r;
          bad = K.q2_h_rows(src16, stride, rows, bf16, D, g.g2, q2 + row * uint64_t(D / 4),
                            p2 + row * uint64_t(2 * (D / g.g2)));
        } else {
          const uint64_t row = H * n[2] + r;
          bad = K.q4_h_rows(src16, stride, rows, bf16, D, g.g4, q4 + row * uint64_t(D / 2),
                            p4 + row * uint64_t(2 * (D / g.g4)));
        }
        if (bad >= 0) refuse(l, kv, h, t + bad, tier);
        t = t2 - 1;
        continue;
      }
      if (transform) {  // a run of tokens at this tier: the whole key transform and the quantizer
        int t2 = t + 1;
        while (t2 < g.T && map[t2] == uint8_t(tier)) ++t2;
        int rows = t2 - t;
        const detail::RowRope rr = rope_run(t, rows);
        const size_t stride = src_step / dtype_size(dt);
        int bad;
        if (tier == Tier::INT8) {
          const uint64_t row = H * n[1] + r;
          bad = KK.q8(src, rt, stride, rows, D, rr, centre, g.g8, q8 + row * uint64_t(D), s8 + row * uint64_t(D / g.g8));
        } else if (tier == Tier::INT2) {
          const uint64_t row = H * n[4] + r;
          bad = KK.q2(src, rt, stride, rows, D, rr, centre, g.g2, q2 + row * uint64_t(D / 4),
                      p2 + row * uint64_t(2 * (D / g.g2)));
        } else {
          const uint64_t row = H * n[2] + r;
          bad = KK.q4(src, rt, stride, rows, D, rr, centre, g.g4, q4 + row * uint64_t(D / 2),
                      p4 + row * uint64_t(2 * (D / g.g4)));
        }
        if (bad >= 0) refuse(l, kv, h, t + bad, tier);
        t += rows - 1;
        continue;
      }
      bool ok;
      load_row(K, dt, src, D, x.data());
      if (tier == Tier::INT8) {
        const uint64_t row = H * n[1] + r;
        ok = K.q8(x.data(), D, g.g8, q8 + row * uint64_t(D), s8 + row * uint64_t(D / g.g8));
      } else if (tier == Tier::INT2) {
        const uint64_t row = H * n[4] + r;
        ok = K.q2(x.data(), D, g.g2, q2 + row * uint64_t(D / 4), p2 + row * uint64_t(2 * (D / g.g2)));
      } else {
        const uint64_t row = H * n[2] + r;
        ok = K.q4(x.data(), D, g.g4, q4 + row * uint64_t(D / 2), p4 + row * uint64_t(2 * (D / g.g4)));
      }
      if (!ok) refuse(l, kv, h, t, tier);
    }
  }

  [[noreturn]] void refuse(int l, int kv, int h, int t, Tier tier) const {
    fail(Errc::format, c.source,
         "layer " + std::to_string(l) + (kv ? " V" : " K") + " head " + std::to_string(h) + " token " +
             std::to_string(t) + ": a non-finite value (or one beyond FP16 range) cannot be stored at tier " +
             tier_name(tier) + "; use fp16 for it");
  }
};

// Where the bytes of a stream go in the breakdown.
void account(ByteBreakdown& bb, int s, uint64_t stored) {
  if (s <= kVMap) bb.tier_maps += stored;
  else if (s == kKCentre) bb.centres += stored;
  else (is_param_stream(s) ? bb.scales : bb.payload) += stored;
}
uint64_t manifest_section_bytes(const std::string& m) { return kHeaderSize + align64(m.size()); }

uint64_t layer_fixed_bytes(const Geometry& g) {
  return kHeaderSize + g.dir + 2 * align64(uint64_t(g.T)) +
         (g.centred ? align64(4 * uint64_t(g.H) * uint64_t(g.D)) : 0);
}

uint64_t tail_bytes(int layers, bool int2) {  // TRLR + INDX + FOOT sections
  return kHeaderSize + align64(trailer_size(int2)) + kHeaderSize + align64(24 + 8 * uint64_t(layers)) +
         kHeaderSize + align64(kFootSize);
}

Geometry geometry(const KvCache& c, const QuantSettings& q) {
  Geometry g{c.shape.layers, c.shape.kv_heads, c.shape.tokens, c.shape.head_dim, 0, 0, 0, {}, false, false, 0, 0};
  resolve_groups(g.D, q, g.g8, g.g4, g.g2, c.source);
  g.rb = row_bytes(g.D, g.g8, g.g4, g.g2);
  g.centred = q.key_transform != KeyTransform::none;
  g.int2 = q.int2;
  g.streams = stream_count(g.int2);
  g.dir = dir_size(g.int2);
  return g;
}

}  // namespace

uint64_t SizeModel::bound(const Plan& plan) const {
  uint64_t s = fixed_bytes;
  auto cost = [&](Tier t) { return size_t(t) < token_bytes.size() ? token_bytes[size_t(t)] : 0; };
  for (Tier t : plan.k_tiers) s += cost(t);
  for (Tier t : plan.v_tiers) s += cost(t);
  return s;
}

SizeModel size_model(const KvCache& cache, const QuantSettings& quant, const std::string& policy,
                     double requested_budget, const std::string& producer) {
  const Geometry g = geometry(cache, quant);
  SizeModel m;
  const std::string manifest = build_manifest(cache, quant, policy, requested_budget,
                                              producer.empty() ? default_producer() : producer, false);
  // Every tier stream (5 per K/V, 7 with INT2) may need up to 63 bytes of padding.
  const uint64_t worst_pad = 63 * 2 * uint64_t(kTierStreams + (g.int2 ? 2 : 0));
  m.fixed_bytes = kHeaderSize + manifest_section_bytes(manifest) +
                  uint64_t(g.L) * (layer_fixed_bytes(g) + worst_pad) + tail_bytes(g.L, g.int2);
  m.max_padding_slack = uint64_t(g.L) * worst_pad;
  for (int t = 0; t < kNumTiers; ++t)
    m.token_bytes[size_t(t)] = uint64_t(g.H) * (g.rb.values[t] + g.rb.params[t]);
  m.token_bytes[size_t(Tier::DROP)] = 0;
  return m;
}

EncodeResult encode(const KvCache& cache, const Plan& plan, ByteSink& sink, const EncodeOptions& opts) {
  const std::string& ctx = cache.source;
  validate(cache, plan, ctx);
  const Geometry g = geometry(cache, plan.quant);
  const std::string producer = opts.producer.empty() ? default_producer() : opts.producer;
  const bool has_drops =
      std::find(plan.k_tiers.begin(), plan.k_tiers.end(), Tier::DROP) != plan.k_tiers.end() ||
      std::find(plan.v_tiers.begin(), plan.v_tiers.end(), Tier::DROP) != plan.v_tiers.end();
  const std::string manifest =
      build_manifest(cache, plan.quant, plan.policy, plan.requested_budget, producer, has_drops);
  check_readable(manifest, ctx);
  // One table per distinct layer RoPE, positions cached (the manifest's description of it).
  std::unique_ptr<detail::RopeTables> ropes;
  if (plan.quant.key_transform == KeyTransform::prerope_centre)
    ropes = std::make_unique<detail::RopeTables>(manifest_rope(cache), g.L, g.D, g.T);

  EncodeResult res;
  ByteBreakdown& bb = res.bytes;
  CountingSink out{sink};
  uint8_t fh[kHeaderSize] = {};
  std::memcpy(fh, kMagic.data(), 8);
  put_u16(fh + 8, kMajor);
  put_u16(fh + 10, std::max({kMinor, rope_minor(cache), g.int2 ? kMinorInt2 : kMinor}));
  put_u32(fh + 16, uint32_t(kAlign));
  fill_header_hash(fh);
  out.write(fh, kHeaderSize);

  const uint64_t mani_off = out.pos;
  {
    Payload p;
    p.add(manifest.data(), manifest.size());
    write_section(out, kTagMani, 0, p);
  }
  bb.manifest = manifest.size();

  const LayerEncoder enc{cache, plan, g, ropes.get()};
  LayerJob jobs[2];
  LayerStreamViews external;
  std::vector<uint8_t> packed[kMaxStreams];
  std::vector<uint64_t> layer_offsets;
  TierCounts counts;
  uint64_t raw_delta = 0;  // raw size minus stored size, over all layers
  const int level = plan.quant.zstd_level;
  auto tally = [&](const LayerJob& j) {
    for (int kv = 0; kv < 2; ++kv)
      for (int t = 0; t < kNumTiers; ++t) (kv ? counts.v : counts.k)[size_t(t)] += j.n[kv][t];
    bb.header += g.dir;
  };
  auto heads = [&](LayerJob& j, int task) { enc.encode_head(j, task / g.H, task % g.H); };
  if (!opts.layer_streams && level == 0) {
    // Uncompressed: layer l's sizes are known from the plan, so its section is laid out (in the
    // sink's own memory when it hands some out) before it is quantized, and it is hashed and
    // written while layer l + 1 is being quantized.
    bool claims = true;  // once a sink declines, it is only written to (keeps the byte order)
    auto start = [&](LayerJob& j, int l) {
      enc.count(j, l);
      layer_offsets.push_back(out.pos);
      uint8_t* claimed = claims ? reinterpret_cast<uint8_t*>(sink.claim(size_t(j.section_bytes()))) : nullptr;
      claims = claimed != nullptr;
      out.pos += j.section_bytes();
      enc.plan_layer(j, l, claimed);
      for (int s = 0; s < g.streams; ++s) account(bb, s, j.size[s]);
      tally(j);
    };
    start(jobs[0], 0);
    parallel_for(2 * g.H, opts.threads, [&](int task) { heads(jobs[0], task); });
    // Into claimed memory (the whole output is in memory anyway) layer l is hashed while l+1 is
    // quantized. A streaming sink (pipe, file) keeps one set of buffers and the source's pages of
    // one layer at a time instead: a pipe's memory stays bounded by about one layer.
    const bool overlap = claims;
    if (!overlap) {
      for (int l = 0; l < g.L; ++l) {
        if (l > 0) {
          start(jobs[0], l);
          parallel_for(2 * g.H, opts.threads, [&](int task) { heads(jobs[0], task); });
        }
        enc.seal(jobs[0], sink);
        if (opts.layer_done) opts.layer_done(l);
      }
    }
    for (int l = 0; l < g.L && overlap; ++l) {
      LayerJob& cur = jobs[l & 1];
      LayerJob* next = l + 1 < g.L ? &jobs[(l + 1) & 1] : nullptr;
      if (next) start(*next, l + 1);
      parallel_for(next ? 1 + 2 * g.H : 1, opts.threads, [&](int task) {
        if (task == 0) enc.seal(cur, sink);
        else heads(*next, task - 1);
      });
      if (opts.layer_done) opts.layer_done(l);
    }
  }
  for (int l = 0; l < g.L && (opts.layer_streams || level > 0); ++l) {
    LayerJob& j = jobs[0];
    if (opts.layer_streams) {
      external = {};
      opts.layer_streams(l, external);
      enc.use_external(j, l, external);
    } else {
      enc.plan_layer(j, l, nullptr);
      parallel_for(2 * g.H, opts.threads, [&](int task) { heads(j, task); });
    }
    tally(j);
    // Entropy stage: per stream, kept only when smaller.
    bool compressed[kMaxStreams] = {};
    if (level > 0) {
      parallel_for(g.streams, opts.threads, [&](int s) {
        const std::span<const uint8_t> raw = j.raw(s);
        if (raw.empty()) return;
        packed[s].resize(ZSTD_compressBound(raw.size()));
        const size_t z = ZSTD_compress(packed[s].data(), packed[s].size(), raw.data(), raw.size(), level);
        if (ZSTD_isError(z)) fail(Errc::io, ctx, std::string("zstd: ") + ZSTD_getErrorName(z));
        packed[s].resize(z);
        compressed[s] = z < raw.size();
      });
    }
    uint8_t dir[kDirSizeInt2] = {};
    Payload p;
    p.add(dir, g.dir);
    uint64_t raw_payload = g.dir;
    for (int s = 0; s < g.streams; ++s) {
      const std::span<const uint8_t> raw = j.raw(s);
      const std::span<const uint8_t> data = compressed[s] ? std::span<const uint8_t>(packed[s]) : raw;
      put_u32(dir + s * kDirEntry, compressed[s] ? 1 : 0);
      put_u64(dir + s * kDirEntry + 8, data.size());
      put_u64(dir + s * kDirEntry + 16, raw.size());
      p.pad();
      p.add(data.data(), data.size());
      raw_payload = align64(raw_payload) + raw.size();
      account(bb, s, data.size());
    }
    layer_offsets.push_back(out.pos);
    raw_delta += align64(raw_payload) - align64(p.size);
    write_section(out, kTagLayr, uint64_t(l), p);
    if (opts.layer_done) opts.layer_done(l);
  }

  // Trailer: the final numbers.
  const uint64_t trlr_off = out.pos;
  const uint64_t total = trlr_off + tail_bytes(g.L, g.int2);
  uint8_t tr[kTrailerSizeInt2] = {};
  put_u64(tr, total);
  const double achieved = double(total) / double(cache.shape.fp16_bytes());
  put_f64(tr + 8, achieved);
  put_f64(tr + 16, plan.nominal_budget());
  put_u64(tr + 24, total + raw_delta);
  for (int t = 0; t < 4; ++t) {  // codes 0..3 (format 1.0)
    put_u64(tr + 32 + 8 * t, counts.k[size_t(t)]);
    put_u64(tr + 64 + 8 * t, counts.v[size_t(t)]);
  }
  if (g.int2) {  // format 1.1: the INT2 counts follow
    put_u64(tr + 96, counts.k[size_t(Tier::INT2)]);
    put_u64(tr + 104, counts.v[size_t(Tier::INT2)]);
  }
  {
    Payload p;
    p.add(tr, trailer_size(g.int2));
    write_section(out, kTagTrlr, 0, p);
  }
  const uint64_t indx_off = out.pos;
  std::vector<uint8_t> idx(24 + 8 * size_t(g.L));
  put_u64(idx.data(), uint64_t(g.L));
  put_u64(idx.data() + 8, mani_off);
  put_u64(idx.data() + 16, trlr_off);
  for (int l = 0; l < g.L; ++l) put_u64(idx.data() + 24 + 8 * l, layer_offsets[size_t(l)]);
  {
    Payload p;
    p.add(idx.data(), idx.size());
    write_section(out, kTagIndx, 0, p);
  }
  uint8_t foot[kFootSize];
  put_u64(foot, indx_off);
  put_u64(foot + 8, total);
  {
    Payload p;
    p.add(foot, kFootSize);
    write_section(out, kTagFoot, 0, p);
  }
  if (out.pos != total) fail(Errc::io, ctx, "internal: container size mismatch");

  bb.total = total;
  bb.header += kHeaderSize * (2 + uint64_t(g.L) + 3);
  bb.index = trailer_size(g.int2) + idx.size() + kFootSize;
  bb.padding = total - bb.header - bb.manifest - bb.tier_maps - bb.payload - bb.scales - bb.centres - bb.index;

  ContainerInfo& info = res.info;
  info.format_version = kMajor;
  info.format_minor = g.int2 ? kMinorInt2 : kMinor;
  info.shape = cache.shape;
  info.layout = cache.layout;
  info.metadata = cache.metadata;
  for (int l = 0; l < g.L; ++l) {
    const KvLayer& L = cache.layers[size_t(l)];
    info.k_names.push_back(L.k_name);
    info.v_names.push_back(L.v_name);
    info.q_names.emplace_back();
    info.mask_names.push_back(L.mask_name.empty() ? "layers." + std::to_string(l) + ".mask" : L.mask_name);
  }
  info.quant = plan.quant;
  info.quant.int8_group = g.g8;
  info.quant.int4_group = g.g4;
  if (g.int2) info.quant.int2_group = g.g2;
  info.policy = plan.policy;
  info.producer = producer;
  info.requested_budget = plan.requested_budget;
  info.achieved_budget = achieved;
  info.nominal_budget = plan.nominal_budget();
  info.tiers = counts;
  info.total_bytes = total;
  info.raw_bytes = total + raw_delta;
  info.rope = manifest_rope(cache);
  return res;
}

}  // namespace skv
