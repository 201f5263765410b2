// safetensors reader and writer (https://github.com/huggingface/safetensors, format v0):
// u64 little-endian header length N, N bytes of JSON, then the data. The reader enforces the
// spec's safety rules; every violation is an Errc::format error naming the file and the tensor.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "skv/formats/file_io.hpp"
#include "skv/tensor.hpp"

namespace skv::safetensors {

inline constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // as the reference implementation

using Metadata = std::map<std::string, std::string>;

struct TensorInfo {
  std::string name;
  DType dtype;
  Shape shape;
  uint64_t begin = 0, end = 0;  // offsets into the data section
};

class Reader {
 public:
  // Opens and validates: header size cap, JSON well-formed, known dtypes, offsets inside the file,
  // shape x dtype size == byte span, no overlap, data section covered exactly.
  static Reader open(const std::string& path);
  // Parses bytes the caller keeps alive (tests, fuzzing, inputs already in memory).
  // Over an input already opened (e.g. stdin read once and sniffed by the caller).
  static Reader open(std::shared_ptr<InputFile> file);
  static Reader from_bytes(std::span<const std::byte> bytes, const std::string& name);

  const std::string& path() const noexcept { return path_; }
  const Metadata& metadata() const noexcept { return metadata_; }
  // In the order of their data offsets (zero-sized tensors at equal offsets: by name).
  const std::vector<TensorInfo>& tensors() const noexcept { return tensors_; }
  const TensorInfo* find(const std::string& name) const noexcept;
  TensorView view(const TensorInfo& t) const;
  TensorView view(const std::string& name) const;  // throws Errc::format if absent
  // Drop a tensor's pages from RSS once consumed (mapped inputs only).
  void release(const TensorInfo& t) const noexcept;
  // Same for any byte range inside this file's data (e.g. part of a view); ignored otherwise.
  void release(std::span<const std::byte> bytes) const noexcept;

 private:
  std::string path_;
  std::shared_ptr<InputFile> file_;
  std::span<const std::byte> data_;
  Metadata metadata_;
  std::vector<TensorInfo> tensors_;
};

// Describes what will be written, so the header can be emitted before any data (streaming).
struct WriteSpec {
  std::string name;
  DType dtype;
  Shape shape;
};

// Streaming writer: header first, then each tensor's bytes in the order given.
class Writer {
 public:
  Writer(OutputFile& out, std::vector<WriteSpec> tensors, const Metadata& metadata);
  // Appends the bytes of the next tensor in order; `bytes` may be given in several pieces.
  void write(std::span<const std::byte> bytes);
  void finish();  // checks every byte promised was written

 private:
  OutputFile& out_;
  std::vector<WriteSpec> specs_;
  uint64_t expected_ = 0, written_ = 0;
};

// Convenience: write whole tensors.
void write_file(const std::string& path, const std::vector<NamedTensor>& tensors,
                const Metadata& metadata, const OutputOptions& opts = {});

}  // namespace skv::safetensors
