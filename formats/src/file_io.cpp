// POSIX implementation of the shared I/O rules (see file_io.hpp). Every size and offset is 64-bit
// (size_t/off_t on LP64), so inputs and outputs over 4 GiB need nothing special.
#include "skv/formats/file_io.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <utility>

#include "skv/error.hpp"

namespace skv {
namespace {

constexpr size_t kWriteBuffer = size_t(1) << 20;

std::string errno_text(int e) { return std::strerror(e); }

std::string display(const std::string& path, bool out) {
  return path == "-" ? (out ? "<stdout>" : "<stdin>") : path;
}

// Reads everything from fd into a growing buffer (pipes, stdin, character devices).
void read_all(int fd, const std::string& name, std::unique_ptr<std::byte[]>& owned, size_t& size) {
  size_t cap = size_t(1) << 16, n = 0;
  owned.reset(new std::byte[cap]);
  for (;;) {
    if (n == cap) {
      std::unique_ptr<std::byte[]> bigger(new std::byte[cap * 2]);
      std::memcpy(bigger.get(), owned.get(), n);
      owned = std::move(bigger);
      cap *= 2;
    }
    const ssize_t r = ::read(fd, owned.get() + n, cap - n);
    if (r < 0) {
      if (errno == EINTR) continue;
      fail(Errc::io, name, "read failed: " + errno_text(errno));
    }
    if (r == 0) break;
    n += size_t(r);
  }
  size = n;
}

// The process umask, read without changing it (umask(2) would race with other threads).
mode_t current_umask() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("Umask:", 0) == 0) return mode_t(std::strtoul(line.c_str() + 6, nullptr, 8));
  return 022;
}

}  // namespace

// ---------------------------------------------------------------- InputFile

InputFile InputFile::open(const std::string& path) {
  InputFile f;
  f.path_ = path;
  if (path == "-") {
    read_all(STDIN_FILENO, "<stdin>", f.owned_, f.size_);
    f.data_ = f.owned_.get();
    return f;
  }
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(Errc::io, path, "cannot open: " + errno_text(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    fail(Errc::io, path, "cannot stat: " + errno_text(e));
  }
  if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    fail(Errc::io, path, "is a directory");
  }
  if (S_ISREG(st.st_mode)) {
    f.size_ = size_t(st.st_size);
    if (f.size_ > 0) {
      void* p = ::mmap(nullptr, f.size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) {
        const int e = errno;
        ::close(fd);
        fail(Errc::io, path, "cannot mmap: " + errno_text(e));
      }
      f.data_ = static_cast<const std::byte*>(p);
      f.mapped_ = true;
    }
  } else {
    try {
      read_all(fd, path, f.owned_, f.size_);
    } catch (...) {
      ::close(fd);
      throw;
    }
    f.data_ = f.owned_.get();
  }
  ::close(fd);
  return f;
}

InputFile::InputFile(InputFile&& o) noexcept
    : path_(std::move(o.path_)), data_(std::exchange(o.data_, nullptr)),
      size_(std::exchange(o.size_, 0)), mapped_(std::exchange(o.mapped_, false)),
      owned_(std::move(o.owned_)) {}

InputFile& InputFile::operator=(InputFile&& o) noexcept {
  if (this != &o) {
    if (mapped_) ::munmap(const_cast<std::byte*>(data_), size_);
    path_ = std::move(o.path_);
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
    mapped_ = std::exchange(o.mapped_, false);
    owned_ = std::move(o.owned_);
  }
  return *this;
}

InputFile::~InputFile() {
  if (mapped_) ::munmap(const_cast<std::byte*>(data_), size_);
}

void InputFile::release(size_t offset, size_t length) const noexcept {
  if (!mapped_ || offset >= size_ || length == 0) return;
  if (length > size_ - offset) length = size_ - offset;
  // The mapping is read-only and private, so dropping a page only discards clean page-cache
  // references: touching it again simply faults it back in. Rounding outward is therefore safe and
  // keeps RSS bounded even for ranges smaller than a page.
  static const size_t page = size_t(::sysconf(_SC_PAGESIZE));
  const size_t begin = offset / page * page;
  size_t end = (offset + length + page - 1) / page * page;
  const size_t mapped_end = (size_ + page - 1) / page * page;
  if (end > mapped_end) end = mapped_end;
  ::madvise(const_cast<std::byte*>(data_) + begin, end - begin, MADV_DONTNEED);
}

// ---------------------------------------------------------------- InputStream

InputStream InputStream::open(const std::string& path) {
  InputStream s;
  s.path_ = path;
  int fd = STDIN_FILENO;
  if (path != "-") {
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail(Errc::io, path, "cannot open: " + errno_text(errno));
    s.owns_fd_ = true;
  }
  s.fd_ = fd;
  struct stat st {};
  if (::fstat(fd, &st) == 0) {
    if (S_ISDIR(st.st_mode)) fail(Errc::io, path, "is a directory");
    s.seekable_ = S_ISREG(st.st_mode);
    s.size_ = s.seekable_ ? uint64_t(st.st_size) : 0;
  }
  return s;
}

InputStream::InputStream(InputStream&& o) noexcept
    : path_(std::move(o.path_)), fd_(std::exchange(o.fd_, -1)),
      owns_fd_(std::exchange(o.owns_fd_, false)), seekable_(o.seekable_), size_(o.size_), pos_(o.pos_) {}

InputStream& InputStream::operator=(InputStream&& o) noexcept {
  if (this != &o) {
    if (owns_fd_ && fd_ >= 0) ::close(fd_);
    path_ = std::move(o.path_);
    fd_ = std::exchange(o.fd_, -1);
    owns_fd_ = std::exchange(o.owns_fd_, false);
    seekable_ = o.seekable_;
    size_ = o.size_;
    pos_ = o.pos_;
  }
  return *this;
}

InputStream::~InputStream() {
  if (owns_fd_ && fd_ >= 0) ::close(fd_);
}

size_t InputStream::read(void* dst, size_t n) {
  auto* p = static_cast<std::byte*>(dst);
  size_t got = 0;
  while (got < n) {
    const ssize_t r = ::read(fd_, p + got, n - got);
    if (r < 0) {
      if (errno == EINTR) continue;
      fail(Errc::io, display(path_, false), "read failed: " + errno_text(errno));
    }
    if (r == 0) break;
    got += size_t(r);
  }
  pos_ += got;
  return got;
}

void InputStream::read_exact(void* dst, size_t n, const char* what) {
  const uint64_t start = pos_;
  const size_t got = read(dst, n);
  if (got != n)
    fail(Errc::truncated, display(path_, false),
         "input ended at byte " + std::to_string(start + got) + " while reading " + what + " (" +
             std::to_string(n) + " bytes needed, " + std::to_string(got) + " available)");
}

// ---------------------------------------------------------------- OutputFile

OutputFile::OutputFile(const std::string& path, const OutputOptions& opts)
    : path_(path), buf_(new std::byte[kWriteBuffer]) {
  if (path == "-") {
    if (!opts.allow_terminal && ::isatty(STDOUT_FILENO))
      fail(Errc::io, "<stdout>",
           "refusing to write binary data to a terminal; redirect stdout or use -o FILE");
    fd_ = STDOUT_FILENO;
    return;
  }
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) fail(Errc::io, path, "is a directory");
    if (!S_ISREG(st.st_mode)) {
      // /dev/null, a FIFO, a terminal device: write straight into it, there is nothing to replace.
      fd_ = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
      if (fd_ < 0) fail(Errc::io, path, "cannot open for writing: " + errno_text(errno));
      return;
    }
    if (!opts.force) fail(Errc::io, path, "already exists; use -f to overwrite");
  }
  tmp_ = path + ".skv-tmp-XXXXXX";
  fd_ = ::mkostemp(tmp_.data(), O_CLOEXEC);
  if (fd_ < 0) {
    const int e = errno;
    tmp_.clear();
    fail(Errc::io, path, "cannot create a temporary file beside it: " + errno_text(e));
  }
  // mkstemp creates 0600; give the result the mode a plain open(O_CREAT, 0666) would have.
  ::fchmod(fd_, 0666 & ~current_umask());
}

OutputFile::~OutputFile() {
  if (!tmp_.empty() && !committed_) {
    if (fd_ >= 0) ::close(fd_);
    ::unlink(tmp_.c_str());
  } else if (fd_ > STDERR_FILENO && !committed_) {
    ::close(fd_);
  }
}

static void write_fully(int fd, const std::byte* p, size_t n, const std::string& name) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      const int e = errno;
      if (e == EPIPE) fail(Errc::io, name, "write failed: broken pipe (the reader went away)");
      if (e == ENOSPC) fail(Errc::io, name, "write failed: no space left on device");
      fail(Errc::io, name, "write failed: " + errno_text(e));
    }
    p += w;
    n -= size_t(w);
  }
}

void OutputFile::flush_buffer() {
  if (buf_used_ == 0) return;
  const size_t n = buf_used_;
  buf_used_ = 0;  // a failed write is fatal for this output either way
  write_fully(fd_, buf_.get(), n, display(path_, true));
}

void OutputFile::write(const void* src, size_t n) {
  if (committed_) fail(Errc::invalid_argument, display(path_, true), "write after commit");
  const auto* p = static_cast<const std::byte*>(src);
  written_ += n;
  if (buf_used_ + n <= kWriteBuffer) {
    if (n) std::memcpy(buf_.get() + buf_used_, p, n);
    buf_used_ += n;
    return;
  }
  flush_buffer();
  if (n >= kWriteBuffer) {
    write_fully(fd_, p, n, display(path_, true));
  } else {
    std::memcpy(buf_.get(), p, n);
    buf_used_ = n;
  }
}

void OutputFile::commit() {
  if (committed_) return;
  flush_buffer();
  if (!tmp_.empty()) {
    const int fd = std::exchange(fd_, -1);
    if (::close(fd) != 0) fail(Errc::io, path_, "write failed: " + errno_text(errno));
    if (::rename(tmp_.c_str(), path_.c_str()) != 0)
      fail(Errc::io, path_, "cannot rename the temporary file into place: " + errno_text(errno));
  } else if (fd_ > STDERR_FILENO) {
    if (::close(std::exchange(fd_, -1)) != 0)
      fail(Errc::io, path_, "write failed: " + errno_text(errno));
  }
  committed_ = true;
}

}  // namespace skv
