// The transfer-path model skv bench reports: moving a KV cache from a prefill node to a decode
// node over a link of B Gbit/s, raw versus plan + encode + bytes/link + decode. Layer-pipelined
// means encode, wire and decode overlap layer by layer (encode L+1 while L is on the wire while
// L-1 decodes); the plan comes first and overlaps nothing (a distortion-aware plan needs every
// layer's tables before it can give layer 0 its tiers).
#pragma once
#include <cstdint>

namespace skv {

struct TransferInput {
  uint64_t raw_bytes = 0;      // FP16 bytes of the cache (what is sent without skv)
  uint64_t encoded_bytes = 0;  // container bytes
  double encode_s = 0, decode_s = 0;  // whole-cache codec times
  double plan_s = 0;           // planning, before the first layer is encoded
  int layers = 1;              // pipeline depth
};

struct TransferResult {
  double gbps = 0;
  double raw_ms = 0;           // raw_bytes over the link
  double seq_ms = 0;           // plan + encode + encoded bytes over the link + decode, one after another
  double pipelined_ms = 0;     // plan, then encode / link / decode overlapped layer by layer
  double saving_pct = 0;       // 100 * (1 - pipelined / raw): the headline, plan counted
  double seq_saving_pct = 0;   // 100 * (1 - seq / raw)
  double codec_only_ms = 0;    // pipelined without the plan
  double saving_codec_only_pct = 0;  // 100 * (1 - codec_only / raw): what the codec alone saves
};

TransferResult transfer_time(const TransferInput& in, double link_gbps);

// KVServe's break-even link speed: compression pays only below B* = (1 - 1/ratio) * S, with S the
// codec's end-to-end speed (1/S = 1/S_encode + 1/S_decode, bytes of FP16 input per second).
// Returned in Gbit/s; 0 when the ratio is <= 1.
double break_even_gbps(double ratio, double encode_bytes_per_s, double decode_bytes_per_s);

}  // namespace skv
