// The transfer-path model skv bench reports: moving a KV cache from a prefill node to a decode
// node over a link of B Gbit/s, raw versus encode + bytes/link + decode. Layer-pipelined means
// the three stages overlap layer by layer (encode L+1 while L is on the wire while L-1 decodes).
#pragma once
#include <cstdint>

namespace skv {

struct TransferInput {
  uint64_t raw_bytes = 0;      // FP16 bytes of the cache (what is sent without skv)
  uint64_t encoded_bytes = 0;  // container bytes
  double encode_s = 0, decode_s = 0;  // whole-cache codec times
  int layers = 1;              // pipeline depth
};

struct TransferResult {
  double gbps = 0;
  double raw_ms = 0;           // raw_bytes over the link
  double seq_ms = 0;           // encode + encoded bytes over the link + decode, one after another
  double pipelined_ms = 0;     // the same, overlapped layer by layer
  double saving_pct = 0;       // 100 * (1 - pipelined / raw)
  double seq_saving_pct = 0;   // 100 * (1 - seq / raw)
};

TransferResult transfer_time(const TransferInput& in, double link_gbps);

// KVServe's break-even link speed: compression pays only below B* = (1 - 1/ratio) * S, with S the
// codec's end-to-end speed (1/S = 1/S_encode + 1/S_decode, bytes of FP16 input per second).
// Returned in Gbit/s; 0 when the ratio is <= 1.
double break_even_gbps(double ratio, double encode_bytes_per_s, double decode_bytes_per_s);

}  // namespace skv
