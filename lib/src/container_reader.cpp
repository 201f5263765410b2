// ContainerReader: verifies and decodes a .skv container front to back, one layer at a time
// (formats/skv.md). Every checksum is verified before the bytes it covers are used.
#include <xxhash.h>
#include <zstd.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <new>

#include "container_format.hpp"
#include "hash.hpp"
#include "key_rows.hpp"
#include "param_check.hpp"
#include "quant_rows.hpp"
#include "rope.hpp"
#include "skv/error.hpp"
#include "skv/half.hpp"
#include "skv/parallel.hpp"

namespace skv {

using namespace fmt;
static_assert(kMaxStreams == kStreamsPerLayer);

namespace {
struct SectionHeader {
  uint32_t tag = 0, flags = 0;
  uint64_t size = 0, number = 0, payload_hash = 0;
};

std::string tag_str(uint32_t t) {
  std::string s;
  for (int i = 0; i < 4; ++i) {
    const char c = char((t >> (8 * i)) & 0xff);
    s += (c >= 0x20 && c < 0x7f) ? c : '?';
  }
  return s;
}
}  // namespace

struct ContainerReader::Impl {
  ByteSource& in;
  std::string name;
  ContainerInfo info;
  std::vector<Shape> k_shapes, v_shapes;
  int threads = 0;
  uint64_t pos = 0;
  int next = 0;
  bool done = false;
  int H = 0, T = 0, D = 0, g8 = 0, g4 = 0, g2 = 0;
  RowBytes rb;
  bool centred = false;
  // prerope_centre: cos/sin tables of every position (4 T D bytes each), one per distinct layer
  // RoPE, built only when a decoded layer holds quantized keys: from the manifest alone, a few
  // hundred bytes claiming 2^24 tokens would allocate gigabytes. At most kMaxRopes are kept.
  static constexpr size_t kMaxRopes = 4;
  std::vector<std::unique_ptr<detail::RopeTable>> ropes;
  const detail::RopeTable* rope = nullptr;  // the layer being decoded: its table, or null
  bool int2 = false;            // the manifest declares quant.int2 (format 1.1)
  int ns = kStreams;            // streams per layer
  uint64_t dir_bytes = kDirSize;
  uint64_t max_layer_payload = 0;
  std::vector<uint8_t> payload_buf;
  const uint8_t* payload = nullptr;  // the current section's payload: payload_buf or span_in
  SpanSource* span_in = nullptr;     // in-memory input: payloads are used where they lie
  // In-memory input: the next layer's payload hash, computed while this layer decodes.
  struct Prehash { const uint8_t* p = nullptr; uint64_t len = 0, hash = 0; } prehash;
  std::vector<uint8_t> unpacked[kMaxStreams];
  struct FreeDctx { void operator()(ZSTD_DCtx* d) const { ZSTD_freeDCtx(d); } };
  std::unique_ptr<ZSTD_DCtx, FreeDctx> dctx;
  const uint8_t* stream[kMaxStreams] = {};
  uint64_t n[2][kNumTiers]{};
  std::vector<uint32_t> rank[2];
  TierCounts seen;
  ByteBreakdown bb;
  uint64_t mani_off = 0, trlr_off = 0;
  std::vector<uint64_t> layer_offs;

  Impl(ByteSource& src, std::string n_)
      : in(src), name(std::move(n_)), span_in(dynamic_cast<SpanSource*>(&src)) {}

  [[noreturn]] void bad(Errc c, const std::string& what) const { fail(c, name, what); }

  void read_exact(void* dst, uint64_t len, const char* what) {
    auto* p = static_cast<uint8_t*>(dst);
    uint64_t got = 0;
    while (got < len) {
      const size_t k = in.read(p + got, size_t(std::min<uint64_t>(len - got, uint64_t(1) << 30)));
      if (k == 0)
        bad(Errc::truncated, std::string("input ends inside ") + what + " at byte " + std::to_string(pos + got));
      got += k;
    }
    pos += len;
  }

  // Reads len bytes into payload_buf without trusting len (a header's claim): a size the input
  // cannot hold is refused before allocating when the input knows its size, else the buffer
  // grows only as bytes arrive (at most doubling what has arrived).
  void read_bounded(uint64_t len, const std::string& what) {
    const std::optional<uint64_t> left = in.remaining();
    if (left && len > *left)
      bad(Errc::truncated, "input ends inside " + what + " (" + std::to_string(len) + " bytes claimed at byte " +
                               std::to_string(pos) + ", " + std::to_string(*left) + " left)");
    constexpr uint64_t kStep = uint64_t(64) << 20;
    for (uint64_t got = 0; got < len;) {
      const uint64_t upto = left ? len : std::min(len, std::max(kStep, 2 * got));
      if (payload_buf.size() < upto) payload_buf.resize(size_t(upto));
      read_exact(payload_buf.data() + got, upto - got, what.c_str());
      got = upto;
    }
  }

  // The next len input bytes in place, when the input is in memory and holds them at an
  // alignment as good as a heap buffer's (streams are read as uint16/float arrays); else null.
  const uint8_t* borrow(uint64_t len) {
    if (!span_in || span_in->pos > span_in->bytes.size() || len > span_in->bytes.size() - span_in->pos)
      return nullptr;
    const auto* p = reinterpret_cast<const uint8_t*>(span_in->bytes.data() + span_in->pos);
    if (reinterpret_cast<uintptr_t>(p) % 16) return nullptr;
    span_in->pos += size_t(len);
    pos += len;
    return p;
  }

  SectionHeader read_header() {
    uint8_t h[kHeaderSize];
    const uint64_t at = pos;
    read_exact(h, kHeaderSize, "a section header");
    if (XXH3_64bits(h, 56) != get_u64(h + 56))
      bad(Errc::checksum, "section header at byte " + std::to_string(at) + ": checksum mismatch");
    SectionHeader s;
    s.tag = get_u32(h);
    s.flags = get_u32(h + 4);
    s.size = get_u64(h + 8);
    s.number = get_u64(h + 16);
    s.payload_hash = get_u64(h + 48);
    for (int i = 24; i < 48; ++i)
      if (h[i]) bad(Errc::format, "section " + tag_str(s.tag) + ": reserved header bytes are not zero");
    if (s.flags & ~kFlagRequired)
      bad(Errc::format, "section " + tag_str(s.tag) + ": reserved flag bits are set");
    const bool known = s.tag == kTagMani || s.tag == kTagLayr || s.tag == kTagTrlr ||
                       s.tag == kTagIndx || s.tag == kTagFoot;
    if (known && s.flags != kFlagRequired)
      bad(Errc::format, "section " + tag_str(s.tag) + ": must be marked required");
    if (known && s.tag != kTagLayr && s.number != 0)
      bad(Errc::format, "section " + tag_str(s.tag) + ": number must be zero");
    bb.header += kHeaderSize;
    return s;
  }

  void read_payload(const SectionHeader& s, uint64_t max) {
    if (s.size > max)
      bad(Errc::format, "section " + tag_str(s.tag) + ": payload of " + std::to_string(s.size) +
                            " bytes exceeds the " + std::to_string(max) + " this container allows");
    const uint64_t padded = align64(s.size);
    payload = borrow(padded);
    if (!payload) {
      read_bounded(padded, "section " + tag_str(s.tag));
      payload = payload_buf.data();
    }
    const bool pre = payload == prehash.p && padded == prehash.len;
    if ((pre ? prehash.hash : detail::xxh3_64(payload, size_t(padded))) != s.payload_hash) {
      std::string what = "section " + tag_str(s.tag);
      if (s.tag == kTagLayr) what += " (layer " + std::to_string(s.number) + ")";
      bad(Errc::checksum, what + ": payload checksum mismatch");
    }
  }

  // In-memory input: hashes the payload of the layer section that follows (when it is one and
  // lies whole in the input), for read_payload() to compare once it gets there. Throws nothing:
  // whatever is wrong there is found and reported when that section is read.
  void hash_ahead() {
    prehash = {};
    if (!span_in || span_in->pos > span_in->bytes.size()) return;
    const size_t left = span_in->bytes.size() - span_in->pos;
    if (left < kHeaderSize) return;
    const auto* h = reinterpret_cast<const uint8_t*>(span_in->bytes.data() + span_in->pos);
    const uint64_t size = get_u64(h + 8);
    if (get_u32(h) != kTagLayr || size > max_layer_payload || align64(size) > left - kHeaderSize) return;
    const uint8_t* p = h + kHeaderSize;
    prehash = {p, align64(size), detail::xxh3_64(p, size_t(align64(size)))};
  }

  // Unknown section: optional ones are verified and skipped, required ones refused.
  void skip_unknown(const SectionHeader& s) {
    if (s.flags & kFlagRequired)
      bad(Errc::unsupported, "required section '" + tag_str(s.tag) + "' is unknown to this reader");
    if (s.size > (uint64_t(1) << 48)) bad(Errc::format, "section " + tag_str(s.tag) + ": absurd size");
    XXH3_state_t* st = XXH3_createState();
    XXH3_64bits_reset(st);
    std::vector<uint8_t> chunk(1 << 16);
    uint64_t left = align64(s.size);
    try {
      while (left) {
        const uint64_t k = std::min<uint64_t>(left, chunk.size());
        read_exact(chunk.data(), k, "an optional section");
        XXH3_64bits_update(st, chunk.data(), size_t(k));
        left -= k;
      }
    } catch (...) {
      XXH3_freeState(st);
      throw;
    }
    const uint64_t h = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    if (h != s.payload_hash) bad(Errc::checksum, "section " + tag_str(s.tag) + ": payload checksum mismatch");
  }

  // Next section that this reader knows (skipping optional unknown ones).
  SectionHeader next_known() {
    for (;;) {
      SectionHeader s = read_header();
      if (s.tag == kTagMani || s.tag == kTagLayr || s.tag == kTagTrlr || s.tag == kTagIndx ||
          s.tag == kTagFoot)
        return s;
      skip_unknown(s);
    }
  }

  void expect_tag(const SectionHeader& s, uint32_t tag, const std::string& what) const {
    if (s.tag != tag) bad(Errc::format, "expected " + what + ", found section " + tag_str(s.tag));
  }

  void open() {
    uint8_t h[kHeaderSize];
    read_exact(h, kHeaderSize, "the file header");
    if (std::memcmp(h, kMagic.data(), 8) != 0) bad(Errc::format, "not an skv container (bad magic)");
    const uint16_t major = get_u16(h + 8);
    if (major != kMajor)
      bad(Errc::unsupported, "format version " + std::to_string(major) + "." +
                                 std::to_string(get_u16(h + 10)) + " is not supported (this reader reads 1.x)");
    if (XXH3_64bits(h, 56) != get_u64(h + 56)) bad(Errc::checksum, "file header: checksum mismatch");
    if (get_u32(h + 12) != 0) bad(Errc::format, "file header: reserved flag bits are set");
    if (get_u32(h + 16) != kAlign) bad(Errc::format, "file header: alignment is not 64");
    for (int i = 20; i < 56; ++i)
      if (h[i]) bad(Errc::format, "file header: reserved bytes are not zero");
    info.format_version = major;
    info.format_minor = get_u16(h + 10);
    bb.header += kHeaderSize;

    mani_off = pos;
    const SectionHeader s = read_header();
    expect_tag(s, kTagMani, "the manifest (MANI) first");
    read_payload(s, kMaxManifest);
    bb.manifest = s.size;
    parse_manifest(std::string(reinterpret_cast<const char*>(payload), size_t(s.size)), name,
                   info, k_shapes, v_shapes, info.rope);
    H = info.shape.kv_heads;
    T = info.shape.tokens;
    D = info.shape.head_dim;
    g8 = info.quant.int8_group;
    g4 = info.quant.int4_group;
    int2 = info.quant.int2;
    g2 = int2 ? info.quant.int2_group : 0;
    if (int2 && info.format_minor < kMinorInt2)
      bad(Errc::format, "manifest declares INT2 (quant.int2), which needs format 1.1, but the header says 1." +
                            std::to_string(info.format_minor));
    ns = stream_count(int2);
    dir_bytes = dir_size(int2);
    rb = row_bytes(D, g8, g4, g2);
    centred = info.quant.key_transform != KeyTransform::none;
    const uint64_t HT = uint64_t(H) * uint64_t(T);
    max_layer_payload = dir_bytes + uint64_t(ns) * kAlign + 2 * uint64_t(T) + 4 * uint64_t(H) * uint64_t(D) +
                        2 * HT * (rb.values[0] + rb.values[1] + rb.params[1] + rb.values[2] + rb.params[2] +
                                  rb.values[4] + rb.params[4]);
  }

  uint64_t expected_raw(int s) const {
    if (s == kKMap || s == kVMap) return uint64_t(T);
    if (s == kKCentre) return centred ? 4 * uint64_t(H) * uint64_t(D) : 0;
    const uint64_t h = uint64_t(H);
    if (s >= kKQ2) {
      if (s >= ns) return 0;
      const int kv = s >= kVQ2 ? 1 : 0;
      return h * n[kv][4] * (s == kKQ2 || s == kVQ2 ? rb.values[4] : rb.params[4]);
    }
    const int kv = s >= kVBase ? 1 : 0;
    switch (s - (kv ? kVBase : kKBase)) {
      case kF16: return h * n[kv][0] * rb.values[0];
      case kQ8: return h * n[kv][1] * rb.values[1];
      case kS8: return h * n[kv][1] * rb.params[1];
      case kQ4: return h * n[kv][2] * rb.values[2];
      default: return h * n[kv][2] * rb.params[2];
    }
  }

  void unpack_stream(int s, uint32_t codec, uint64_t off, uint64_t stored, uint64_t raw, int layer) {
    const std::string where = "layer " + std::to_string(layer) + " stream " + std::to_string(s);
    if (raw != expected_raw(s))
      bad(Errc::format, where + ": holds " + std::to_string(raw) + " bytes, tier maps imply " +
                            std::to_string(expected_raw(s)));
    if (codec == 0) {
      stream[s] = payload + off;
      return;
    }
    if (!inflate(payload + off, stored, raw, unpacked[s]))
      bad(Errc::format, where + ": zstd frame does not decode to its size");
    stream[s] = unpacked[s].data();
  }

  // One zstd frame of exactly raw bytes into out. The tier maps' raw size is a claim: out grows
  // to it only as the frame proves it by decoding (at most doubling what it has produced), so a
  // few bytes claiming gigabytes cost nothing. A buffer that an earlier layer already grew
  // decodes in one pass.
  bool inflate(const uint8_t* src, uint64_t stored, uint64_t raw, std::vector<uint8_t>& out) {
    if (out.size() >= raw) {
      const size_t r = ZSTD_decompress(out.data(), size_t(raw), src, size_t(stored));
      return !ZSTD_isError(r) && r == raw;
    }
    if (!dctx) dctx.reset(ZSTD_createDCtx());
    if (!dctx) throw std::bad_alloc();
    ZSTD_DCtx_reset(dctx.get(), ZSTD_reset_session_only);
    ZSTD_inBuffer ib{src, size_t(stored), 0};
    ZSTD_outBuffer ob{nullptr, 0, 0};
    for (;;) {
      if (ob.pos == ob.size && ob.size < raw) {
        out.resize(size_t(std::min<uint64_t>(raw, std::max<uint64_t>(uint64_t(1) << 20, 2 * ob.pos))));
        ob.dst = out.data();
        ob.size = out.size();
      }
      const size_t in0 = ib.pos, out0 = ob.pos;
      const size_t r = ZSTD_decompressStream(dctx.get(), &ob, &ib);
      if (ZSTD_isError(r)) return false;
      if (r == 0) return ob.pos == raw && ib.pos == ib.size;  // the frame ended
      if (ib.pos == in0 && ob.pos == out0) return false;      // stuck: input ended, or more than raw
    }
  }

  // Decoded numbers a writer never makes (formats/skv.md, "Conformance"): INT8 scales and the
  // scales of INT4/INT2 (scale, min) pairs finite and not negative, the minimums and key centres
  // finite; anything else decodes to NaN, infinity or sign-flipped rows. Returns the first
  // parameter stream of side kv (0 K, 1 V) whose slice for heads [h0, h1) breaks this, or -1:
  // every such stream is [H][...], and each decode task checks its own head's slice
  // (param_check.hpp: a vectorised pass over a few percent of the layer, just before use).
  int bad_params(int kv, int h0, int h1) const {
    const int base = kv ? kVBase : kKBase;
    const int ids[] = {kv ? -1 : int(kKCentre), base + int(kS8), base + int(kP4), kv ? int(kVP2) : int(kKP2)};
    for (int s : ids) {
      if (s < 0 || s >= ns || (s == kKCentre && !centred)) continue;
      const uint64_t per_head = expected_raw(s) / uint64_t(H);
      const uint8_t* p0 = stream[s] + uint64_t(h0) * per_head;
      const uint64_t count = uint64_t(h1 - h0) * per_head / (s == base + int(kS8) ? 2 : 4);
      const bool ok = s == kKCentre ? detail::f32_finite(reinterpret_cast<const uint32_t*>(p0), count)
                      : s == base + int(kS8)
                          ? detail::scales_ok(reinterpret_cast<const uint16_t*>(p0), count)
                          : detail::scale_min_pairs_ok(reinterpret_cast<const uint32_t*>(p0), count);
      if (!ok) return s;
    }
    return -1;
  }

  [[noreturn]] void bad_params_error(int l, int s) const {
    const bool v = (s >= kVBase && s < kKQ2) || s >= kVQ2;
    const char* what = s == kKCentre ? "centres): a centre is NaN or infinite"
                       : (s - kKBase) % kTierStreams == kS8 && s < kKQ2
                           ? "INT8 scales): a scale is NaN, infinite or negative"
                       : s >= kKQ2 ? "INT2 parameters): a scale is NaN, infinite or negative, or a minimum is not finite"
                                   : "INT4 parameters): a scale is NaN, infinite or negative, or a minimum is not finite";
    bad(Errc::format, "layer " + std::to_string(l) + " stream " + std::to_string(s) + " (" + (v ? "V " : "K ") + what);
  }

  void parse_layer(int l, uint64_t size) {
    if (size < dir_bytes) bad(Errc::format, "layer " + std::to_string(l) + ": section too small");
    const uint8_t* dir = payload;
    for (size_t i = size_t(ns) * kDirEntry; i < dir_bytes; ++i)
      if (dir[i]) bad(Errc::format, "layer " + std::to_string(l) + ": directory padding is not zero");
    uint64_t off[kMaxStreams], stored[kMaxStreams], raw[kMaxStreams];
    uint32_t codec[kMaxStreams];
    uint64_t end = dir_bytes;
    for (int s = 0; s < ns; ++s) {
      const uint8_t* e = dir + s * kDirEntry;
      codec[s] = get_u32(e);
      stored[s] = get_u64(e + 8);
      raw[s] = get_u64(e + 16);
      const std::string where = "layer " + std::to_string(l) + " stream " + std::to_string(s);
      if (codec[s] > 1) bad(Errc::unsupported, where + ": unknown stream codec " + std::to_string(codec[s]));
      if (get_u32(e + 4) != 0) bad(Errc::format, where + ": reserved directory field is not zero");
      // A zstd stream may expand past the section (e.g. all-zero centres); its raw size is
      // checked against what the manifest and tier maps imply before anything is allocated.
      if (stored[s] > raw[s] || (codec[s] == 0 && stored[s] != raw[s]))
        bad(Errc::format, where + ": inconsistent sizes");
      off[s] = align64(end);
      if (off[s] > size || stored[s] > size - off[s]) bad(Errc::format, where + ": runs past the section");
      for (uint64_t i = end; i < off[s]; ++i)
        if (payload[i]) bad(Errc::format, where + ": padding is not zero");
      end = off[s] + stored[s];
    }
    if (end != size) bad(Errc::format, "layer " + std::to_string(l) + ": section size does not match its streams");
    for (int kv = 0; kv < 2; ++kv) {
      const int s = kv ? kVMap : kKMap;
      unpack_stream(s, codec[s], off[s], stored[s], raw[s], l);
      std::fill(std::begin(n[kv]), std::end(n[kv]), 0);
      rank[kv].resize(size_t(T));
      for (int t = 0; t < T; ++t) {
        const uint8_t code = stream[s][t];
        if (code == uint8_t(Tier::INT2) && !int2)
          bad(Errc::unsupported, "layer " + std::to_string(l) + (kv ? " V" : " K") + " token " + std::to_string(t) +
                                     ": tier code 4 (INT2) in a file whose manifest does not declare quant.int2");
        if (code >= kNumTiers)
          bad(code < 16 ? Errc::unsupported : Errc::format,
              "layer " + std::to_string(l) + (kv ? " V" : " K") + " token " + std::to_string(t) +
                  ": tier code " + std::to_string(code) + (code < 16 ? " is reserved (a newer format?)" : " is invalid"));
        rank[kv][size_t(t)] = uint32_t(n[kv][code]++);
      }
    }
    for (int s = kKCentre; s < ns; ++s) unpack_stream(s, codec[s], off[s], stored[s], raw[s], l);
    for (int kv = 0; kv < 2; ++kv)
      for (int t = 0; t < kNumTiers; ++t) (kv ? seen.v : seen.k)[size_t(t)] += n[kv][t];
    for (int s = 0; s < ns; ++s) {
      if (s <= kVMap) bb.tier_maps += stored[s];
      else if (s == kKCentre) bb.centres += stored[s];
      else (is_param_stream(s) ? bb.scales : bb.payload) += stored[s];
    }
    bb.header += dir_bytes;
  }

  void store_row(const float* y, DType dt, std::byte* dst, const detail::RowKernels& K) const {
    if (dt == DType::F32) std::memcpy(dst, y, size_t(D) * 4);
    else if (dt == DType::F16) K.f32_to_f16(y, D, reinterpret_cast<uint16_t*>(dst));
    else K.f32_to_bf16(y, D, reinterpret_cast<uint16_t*>(dst));
  }

  void decode_head(int kv, int h, Tensor& out) const {
    const detail::RowKernels& K = detail::row_kernels();
    const DType dt = out.dtype;
    const size_t es = dtype_size(dt), row_bytes_out = size_t(D) * es;
    const DType tier_dt = info.shape.dtype == DType::BF16 ? DType::BF16 : DType::F16;
    const int base = kv ? kVBase : kKBase;
    const uint8_t* map = stream[kv ? kVMap : kKMap];
    const float* centre = kv == 0 && centred
                              ? reinterpret_cast<const float*>(stream[kKCentre]) + size_t(h) * size_t(D)
                              : nullptr;
    const detail::RopeTable* rp = kv == 0 ? rope : nullptr;
    const bool htd = info.layout == Layout::HTD;
    std::byte* dst0 = out.data.data() + (htd ? size_t(h) * size_t(T) : size_t(h)) * row_bytes_out;
    const size_t dst_step = htd ? row_bytes_out : row_bytes_out * size_t(H);
    const uint64_t hh = uint64_t(h);
    const uint8_t* f16 = stream[base + kF16] + hh * n[kv][0] * rb.values[0];
    // All FP16 in HTD order, no conversion: the head's stream slice is its output, byte for byte.
    if (htd && dt == tier_dt && n[kv][0] == uint64_t(T)) {
      std::memcpy(dst0, f16, row_bytes_out * size_t(T));
      return;
    }
    // Without RoPE to re-apply, quantized rows dequantize straight into 16-bit outputs.
    const bool fused = !rp && dt != DType::F32;
    const bool bf16 = dt == DType::BF16;
    const auto* q8 = reinterpret_cast<const int8_t*>(stream[base + kQ8]) + hh * n[kv][1] * uint64_t(D);
    const auto* s8 = reinterpret_cast<const uint16_t*>(stream[base + kS8]) + hh * n[kv][1] * uint64_t(D / g8);
    const uint8_t* q4 = stream[base + kQ4] + hh * n[kv][2] * uint64_t(D / 2);
    const auto* p4 = reinterpret_cast<const uint16_t*>(stream[base + kP4]) + hh * n[kv][2] * uint64_t(2 * (D / g4));
    const uint8_t* q2 = int2 ? stream[kv ? kVQ2 : kKQ2] + hh * n[kv][4] * uint64_t(D / 4) : nullptr;
    const auto* p2 = int2 ? reinterpret_cast<const uint16_t*>(stream[kv ? kVP2 : kKP2]) + hh * n[kv][4] * uint64_t(2 * (D / g2))
                          : nullptr;
    const uint32_t* rk = rank[kv].data();
    std::vector<float> y(static_cast<size_t>(D)), cs(static_cast<size_t>(D / 2 + 1)), sn(static_cast<size_t>(D / 2 + 1));
    // Keys with RoPE: dequantize, re-apply RoPE and store in one kernel call per row, with the
    // table's cached angles in place (computed here only if not cached).
    const detail::KeyRowKernels& KK = detail::key_row_kernels();
    const detail::RowType rt = dt == DType::F16 ? detail::RowType::f16
                               : dt == DType::BF16 ? detail::RowType::bf16
                                                   : detail::RowType::f32;
    auto rope_at = [&](int t) {
      detail::RowRope r;
      const int64_t p = info.rope.position_offset + t;
      r.gptj = rp->style() == RopeStyle::gptj;
      r.step = size_t(D / 2);
      r.cs = rp->cached_cos(p);
      r.sn = rp->cached_sin(p);
      if (!r.cs) {
        rp->angles(p, cs.data(), sn.data());
        r.cs = cs.data();
        r.sn = sn.data();
      }
      return r;
    };
    for (int t = 0; t < T; ++t) {
      std::byte* dst = dst0 + size_t(t) * dst_step;
      auto* dst16 = reinterpret_cast<uint16_t*>(dst);
      const uint64_t r = rk[t];
      switch (Tier(map[t])) {
        case Tier::DROP: std::memset(dst, 0, row_bytes_out); continue;
        case Tier::FP16: {
          const uint8_t* src = f16 + r * rb.values[0];
          if (dt == tier_dt) {
            std::memcpy(dst, src, row_bytes_out);
            continue;
          }
          const auto* s16 = reinterpret_cast<const uint16_t*>(src);
          (tier_dt == DType::F16 ? K.f16_to_f32 : K.bf16_to_f32)(s16, D, y.data());
          break;
        }
        case Tier::INT8: {
          const int8_t* q = q8 + r * uint64_t(D);
          const uint16_t* sc = s8 + r * uint64_t(D / g8);
          if (fused) {
            K.dq8_h(q, D, g8, sc, centre, bf16, dst16);
            continue;
          }
          if (rp) {
            KK.dq8(q, D, g8, sc, centre, rope_at(t), rt, dst);
            continue;
          }
          K.dq8(q, D, g8, sc, centre, y.data());
          break;
        }
        case Tier::INT4: {
          const uint8_t* q = q4 + r * uint64_t(D / 2);
          const uint16_t* pr = p4 + r * uint64_t(2 * (D / g4));
          if (fused) {
            K.dq4_h(q, D, g4, pr, centre, bf16, dst16);
            continue;
          }
          if (rp) {
            KK.dq4(q, D, g4, pr, centre, rope_at(t), rt, dst);
            continue;
          }
          K.dq4(q, D, g4, pr, centre, y.data());
          break;
        }
        case Tier::INT2: {
          const uint8_t* q = q2 + r * uint64_t(D / 4);
          const uint16_t* pr = p2 + r * uint64_t(2 * (D / g2));
          if (fused) {
            K.dq2_h(q, D, g2, pr, centre, bf16, dst16);
            continue;
          }
          if (rp) {
            KK.dq2(q, D, g2, pr, centre, rope_at(t), rt, dst);
            continue;
          }
          K.dq2(q, D, g2, pr, centre, y.data());
          break;
        }
      }
      store_row(y.data(), dt, dst, K);
    }
  }

  void finish() {
    SectionHeader s = next_known();
    trlr_off = pos - kHeaderSize;
    expect_tag(s, kTagTrlr, "the trailer (TRLR) after layer " + std::to_string(info.shape.layers - 1));
    const size_t tsize = trailer_size(int2);
    if (s.size != tsize) bad(Errc::format, "trailer: wrong size");
    read_payload(s, tsize);
    const uint8_t* tr = payload;
    info.total_bytes = get_u64(tr);
    info.achieved_budget = get_f64(tr + 8);
    info.nominal_budget = get_f64(tr + 16);
    info.raw_bytes = get_u64(tr + 24);
    for (int t = 0; t < 4; ++t) {
      info.tiers.k[size_t(t)] = get_u64(tr + 32 + 8 * t);
      info.tiers.v[size_t(t)] = get_u64(tr + 64 + 8 * t);
    }
    if (int2) {
      info.tiers.k[size_t(Tier::INT2)] = get_u64(tr + 96);
      info.tiers.v[size_t(Tier::INT2)] = get_u64(tr + 104);
    }
    if (info.tiers.k != seen.k || info.tiers.v != seen.v)
      bad(Errc::format, "trailer: tier counts disagree with the tier maps");
    // The budgets are what a writer computes (formats/skv.md, "TRLR"); never NaN or negative.
    if (info.achieved_budget != double(info.total_bytes) / double(info.shape.fp16_bytes()))
      bad(Errc::format, "trailer: achieved_budget is not total_bytes / FP16 bytes");
    if (!(info.nominal_budget >= 0 && info.nominal_budget <= 1))
      bad(Errc::format, "trailer: nominal_budget is not a number in 0..1");
    if (info.raw_bytes < info.total_bytes)
      bad(Errc::format, "trailer: raw_bytes is less than total_bytes");
    if (info.has_drops != (seen.k[size_t(Tier::DROP)] + seen.v[size_t(Tier::DROP)] > 0))
      bad(Errc::format, "manifest: 'drops' disagrees with the tier maps");
    s = next_known();
    const uint64_t indx_off = pos - kHeaderSize;
    expect_tag(s, kTagIndx, "the index (INDX)");
    const uint64_t L = uint64_t(info.shape.layers);
    if (s.size != 24 + 8 * L) bad(Errc::format, "index: wrong size");
    read_payload(s, s.size);
    const uint8_t* ix = payload;
    bool ok = get_u64(ix) == L && get_u64(ix + 8) == mani_off && get_u64(ix + 16) == trlr_off;
    for (uint64_t l = 0; l < L; ++l) ok = ok && get_u64(ix + 24 + 8 * l) == layer_offs[size_t(l)];
    if (!ok) bad(Errc::format, "index: offsets disagree with the file");
    s = next_known();
    expect_tag(s, kTagFoot, "the footer (FOOT)");
    if (s.size != kFootSize) bad(Errc::format, "footer: wrong size");
    read_payload(s, kFootSize);
    if (get_u64(payload) != indx_off || get_u64(payload + 8) != pos)
      bad(Errc::format, "footer: offsets disagree with the file");
    if (info.total_bytes != pos) bad(Errc::format, "trailer: total_bytes disagrees with the file size");
    uint8_t extra;
    if (in.read(&extra, 1) != 0) bad(Errc::format, "bytes follow the footer");
    bb.total = pos;
    bb.index = tsize + s.size + 24 + 8 * L;
    bb.padding = bb.total - bb.header - bb.manifest - bb.tier_maps - bb.payload - bb.scales -
                 bb.centres - bb.index;
    done = true;
    payload = nullptr;
    payload_buf.clear();
    payload_buf.shrink_to_fit();
  }

  // Reads, verifies and unpacks the next layer's streams; false (after the trailer) at the end.
  bool advance() {
    if (done) return false;
    if (next == info.shape.layers) {
      finish();
      return false;
    }
    const SectionHeader s = next_known();
    layer_offs.push_back(pos - kHeaderSize);
    expect_tag(s, kTagLayr, "layer " + std::to_string(next));
    if (s.number != uint64_t(next))
      bad(Errc::format, "layer section " + std::to_string(s.number) + " where layer " + std::to_string(next) + " belongs");
    read_payload(s, max_layer_payload);
    parse_layer(next++, s.size);
    return true;
  }

  void layer_tiers(TierCounts& out) const {
    for (int t = 0; t < kNumTiers; ++t) {
      out.k[size_t(t)] = n[0][size_t(t)];
      out.v[size_t(t)] = n[1][size_t(t)];
    }
  }

  bool next_layer_streams(LayerStreams& out) {
    if (!advance()) return false;
    const int l = next - 1;
    const int bk = bad_params(0, 0, H), bv = bad_params(1, 0, H);  // before another decoder uses them
    if (bk >= 0 || bv >= 0) bad_params_error(l, bk < 0 ? bv : bv < 0 ? bk : std::min(bk, bv));
    out.index = l;
    layer_tiers(out.tiers);
    for (int s = 0; s < kMaxStreams; ++s)
      out.streams[size_t(s)] = s < ns ? std::span<const uint8_t>(stream[s], size_t(expected_raw(s))) : std::span<const uint8_t>();
    out.k_shape = k_shapes[size_t(l)];
    out.v_shape = v_shapes[size_t(l)];
    return true;
  }

  // Layer l's RoPE table under prerope_centre (else null), built on first use.
  const detail::RopeTable* rope_for(int l) {
    if (info.quant.key_transform != KeyTransform::prerope_centre) return nullptr;
    const RopeParams p = info.rope.rope_for_layer(l);
    for (const auto& t : ropes)
      if (t->params() == p) return t.get();
    if (ropes.size() == kMaxRopes) ropes.erase(ropes.begin());
    ropes.push_back(std::make_unique<detail::RopeTable>(p, info.rope.rope_style, D, info.rope.position_offset, T));
    return ropes.back().get();
  }

  bool next_layer(DecodedLayer& out, std::optional<DType> want, bool skip) {
    if (done) return false;
    const DType dt = want.value_or(info.shape.dtype);
    if (!is_float(dt)) bad(Errc::invalid_argument, "decode dtype must be F16, BF16 or F32");
    if (!advance()) return false;
    const int l = next - 1;
    out.index = l;
    layer_tiers(out.tiers);
    if (skip) return true;
    // Reuse the caller's tensors when they already fit: no fresh pages to fault in per layer.
    for (int kv = 0; kv < 2; ++kv) {
      Tensor& t = kv ? out.v : out.k;
      const Shape& shape = (kv ? v_shapes : k_shapes)[size_t(l)];
      if (t.dtype != dt || t.shape != shape || !t.data.data()) t = Tensor(dt, shape);
    }
    out.q.reset();
    out.mask.reset();
    rope = n[0][size_t(Tier::INT8)] + n[0][size_t(Tier::INT4)] + n[0][size_t(Tier::INT2)] > 0 ? rope_for(l) : nullptr;
    // Task 0 hashes the next layer's payload (in-memory input) while this one decodes. A head
    // whose parameters are bad is not decoded; the lowest such stream is reported.
    std::vector<int> bad_stream(size_t(2 * H), -1);
    parallel_for(1 + 2 * H, threads, [&](int task) {
      if (task == 0) return hash_ahead();
      const int kv = (task - 1) / H, h = (task - 1) % H;
      bad_stream[size_t(task - 1)] = bad_params(kv, h, h + 1);
      if (bad_stream[size_t(task - 1)] < 0) decode_head(kv, h, kv ? out.v : out.k);
    });
    int first = kMaxStreams;
    for (int b : bad_stream)
      if (b >= 0) first = std::min(first, b);
    if (first < kMaxStreams) bad_params_error(l, first);
    if (info.has_drops) {
      out.mask = Tensor(DType::U8, Shape{int64_t(T)});
      uint8_t* m = out.mask->as<uint8_t>();
      for (int t = 0; t < T; ++t)
        m[t] = stream[kKMap][t] != uint8_t(Tier::DROP) && stream[kVMap][t] != uint8_t(Tier::DROP);
    }
    return true;
  }
};

bool is_container(std::span<const std::byte> head) noexcept {
  return head.size() >= kMagic.size() && std::memcmp(head.data(), kMagic.data(), kMagic.size()) == 0;
}

ContainerReader::ContainerReader(ByteSource& in, std::string name) : impl_(new Impl(in, std::move(name))) {
  try {
    impl_->open();
  } catch (...) {
    delete impl_;
    throw;
  }
}
ContainerReader::~ContainerReader() { delete impl_; }
const ContainerInfo& ContainerReader::info() const noexcept { return impl_->info; }
void ContainerReader::set_threads(int threads) noexcept { impl_->threads = threads; }
bool ContainerReader::next_layer(DecodedLayer& out, std::optional<DType> out_dtype, bool skip) {
  return impl_->next_layer(out, out_dtype, skip);
}
bool ContainerReader::next_layer_streams(LayerStreams& out) { return impl_->next_layer_streams(out); }
ByteBreakdown ContainerReader::breakdown() const { return impl_->bb; }

}  // namespace skv
