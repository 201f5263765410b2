// The I/O rules every reader and writer shares: "-" is stdin/stdout; inputs are mmap'd when they
// are regular files (no copy, files over 4 GiB fine) and read into memory otherwise; outputs go
// to a temporary file beside the target and are renamed into place only on commit(), so a failed
// run never leaves a partial file.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "skv/io.hpp"

namespace skv {

// A whole input, addressable as bytes. Regular files are mmap'd read-only; "-" and pipes are
// read fully into an anonymous buffer.
class InputFile {
 public:
  static InputFile open(const std::string& path);  // throws Errc::io naming the path
  InputFile(InputFile&&) noexcept;
  InputFile& operator=(InputFile&&) noexcept;
  ~InputFile();

  const std::string& path() const noexcept { return path_; }
  std::span<const std::byte> bytes() const noexcept { return {data_, size_}; }
  bool mapped() const noexcept { return mapped_; }
  // Tell the kernel a byte range is no longer needed, so that RSS stays bounded while streaming
  // through a large mapped file. No-op for unmapped inputs.
  void release(size_t offset, size_t length) const noexcept;

 private:
  InputFile() = default;
  std::string path_;
  const std::byte* data_ = nullptr;
  size_t size_ = 0;
  bool mapped_ = false;
  std::unique_ptr<std::byte[]> owned_;
};

// Sequential reads from a file or "-" (stdin), for front-to-back streaming formats.
class InputStream final : public ByteSource {
 public:
  static InputStream open(const std::string& path);
  InputStream(InputStream&&) noexcept;
  InputStream& operator=(InputStream&&) noexcept;
  ~InputStream();
  const std::string& path() const noexcept { return path_; }
  // Reads up to n bytes; returns fewer only at end of input.
  size_t read(void* dst, size_t n) override;
  // Reads exactly n bytes or throws Errc::truncated naming the path and `what`.
  void read_exact(void* dst, size_t n, const char* what);
  uint64_t position() const noexcept { return pos_; }
  bool seekable() const noexcept { return seekable_; }
  // A regular file's size (also stdin redirected from one), else nullopt.
  std::optional<uint64_t> size() const noexcept { return seekable_ ? std::optional(size_) : std::nullopt; }
  std::optional<uint64_t> remaining() const override {
    return seekable_ ? std::optional(pos_ < size_ ? size_ - pos_ : 0) : std::nullopt;
  }

 private:
  InputStream() = default;
  std::string path_;
  int fd_ = -1;
  bool owns_fd_ = false;
  bool seekable_ = false;
  uint64_t size_ = 0;
  uint64_t pos_ = 0;
};

struct OutputOptions {
  bool force = false;            // overwrite an existing file
  bool allow_terminal = false;   // permit binary output to a TTY on "-"
};

// Sequential writer. For a path: writes "<path>.skv-tmp-XXXXXX" and renames on commit(); the
// destructor removes the temporary if commit() was never reached. For "-": writes stdout.
class OutputFile final : public ByteSink {
 public:
  OutputFile(const std::string& path, const OutputOptions& opts = {});
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;
  ~OutputFile();

  void write(const void* src, size_t n) override;
  void write(std::span<const std::byte> s) { write(s.data(), s.size()); }
  uint64_t bytes_written() const noexcept { return written_; }
  void commit();  // flush, fsync-free rename into place; throws on failure
  const std::string& path() const noexcept { return path_; }

 private:
  void flush_buffer();
  std::string path_, tmp_;
  int fd_ = -1;
  bool committed_ = false;
  uint64_t written_ = 0;
  std::unique_ptr<std::byte[]> buf_;
  size_t buf_used_ = 0;
};

}  // namespace skv
