#include "skv/transfer.hpp"

#include <algorithm>

namespace skv {

TransferResult transfer_time(const TransferInput& in, double link_gbps) {
  TransferResult r;
  r.gbps = link_gbps;
  const double bytes_per_s = link_gbps * 1e9 / 8;
  const double raw_s = double(in.raw_bytes) / bytes_per_s;
  const double wire_s = double(in.encoded_bytes) / bytes_per_s;
  const double seq_s = in.encode_s + wire_s + in.decode_s;
  // L equal layers through a 3-stage pipeline: the first layer passes every stage, then one layer
  // leaves per slowest-stage period.
  const double L = double(std::max(in.layers, 1));
  const double slowest = std::max({in.encode_s, wire_s, in.decode_s});
  const double codec_s = seq_s / L + (L - 1) * slowest / L;
  const double pipe_s = in.plan_s + codec_s;
  r.raw_ms = raw_s * 1e3;
  r.seq_ms = (in.plan_s + seq_s) * 1e3;
  r.pipelined_ms = pipe_s * 1e3;
  r.codec_only_ms = codec_s * 1e3;
  r.saving_pct = raw_s > 0 ? 100 * (1 - pipe_s / raw_s) : 0;
  r.seq_saving_pct = raw_s > 0 ? 100 * (1 - (in.plan_s + seq_s) / raw_s) : 0;
  r.saving_codec_only_pct = raw_s > 0 ? 100 * (1 - codec_s / raw_s) : 0;
  return r;
}

double break_even_gbps(double ratio, double encode_bytes_per_s, double decode_bytes_per_s) {
  if (ratio <= 1 || encode_bytes_per_s <= 0 || decode_bytes_per_s <= 0) return 0;
  const double s = 1 / (1 / encode_bytes_per_s + 1 / decode_bytes_per_s);
  return (1 - 1 / ratio) * s * 8 / 1e9;
}

}  // namespace skv
