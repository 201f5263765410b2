// A container taken apart into sections and put back together with every checksum, size and
// offset recomputed: what a hostile writer does. Tests (and fuzzers) mutate the manifest, tier
// maps, stream directory or section headers, then seal(), so the reader's rules, not its
// checksums, are what rejects the result.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

namespace skv::test {

// One stream of a LAYR payload: its directory entry and stored bytes.
struct EditStream {
  uint32_t codec = 0;      // 0 raw, 1 zstd
  uint64_t raw_size = 0;   // the directory's raw_size (equal to bytes.size() when raw)
  std::vector<uint8_t> bytes;
};

struct EditSection {
  uint32_t tag = 0, flags = 1;
  uint64_t number = 0;
  std::vector<uint8_t> payload;

  bool is(const char (&t)[5]) const;
  // LAYR only: the stream directory split into its ns streams (13, or 17 with INT2), and back.
  std::vector<EditStream> streams(int ns) const;
  void set_streams(const std::vector<EditStream>& s);
};

struct EditableContainer {
  uint8_t header[64]{};
  std::vector<EditSection> sections;  // file order: MANI, LAYR..., TRLR, INDX, FOOT

  // Splits a container that is well formed at the section level (throws std::runtime_error).
  static EditableContainer parse(std::span<const std::byte> bytes);

  EditSection& section(const char (&tag)[5]);  // the first with this tag
  EditSection& layer(int l);
  nlohmann::json manifest() const;
  int streams_per_layer() const;  // 17 when the manifest declares quant.int2, else 13
  std::vector<EditStream> streams(int l) { return layer(l).streams(streams_per_layer()); }
  void set_streams(int l, const std::vector<EditStream>& s) { layer(l).set_streams(s); }
  void set_manifest(const nlohmann::json& j) { set_manifest_text(j.dump()); }
  void set_manifest_text(const std::string& text);

  // The file: file header, every section header and payload hashed, INDX and FOOT offsets
  // recomputed. With fix_trailer, the trailer's total_bytes, achieved_budget and tier counts
  // (from the tier maps, which must then be raw) are recomputed too and raw_bytes raised to at
  // least total_bytes; without, the trailer payload is written as it is.
  std::vector<std::byte> seal(bool fix_trailer = true) const;

 private:
  void fill_trailer(std::vector<uint8_t>& trailer, uint64_t total) const;
};

// Recomputes the header hash of the 64-byte header (file or section) at `at`.
void rehash_header(std::vector<std::byte>& file, size_t at);

}  // namespace skv::test
