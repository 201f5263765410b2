// GgufFile::open: a private read-only mmap. (skv::InputFile is implemented in parallel by the
// formats work; this reader keeps its own small mapping so it does not depend on that landing.)
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "skv/error.hpp"
#include "skv/formats/gguf.hpp"

namespace skv::gguf {

File File::open(const std::string& path, const Limits& limits) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(Errc::io, path, std::string("cannot open: ") + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(Errc::io, path, "not a regular file");
  }
  const size_t size = size_t(st.st_size);
  if (size == 0) {
    ::close(fd);
    fail(Errc::truncated, path, "file is empty");
  }
  void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int err = errno;
  ::close(fd);
  if (p == MAP_FAILED) fail(Errc::io, path, std::string("mmap failed: ") + std::strerror(err));
  std::shared_ptr<const void> keep(p, [size](const void* q) { ::munmap(const_cast<void*>(q), size); });
  File f = parse({static_cast<const std::byte*>(p), size}, path, limits);
  f.keepalive_ = std::move(keep);
  return f;
}

}  // namespace skv::gguf
