#include <zstd.h>

#include <string>

#include "skv/bench.hpp"
#include "skv/error.hpp"

namespace skv {

struct ZstdCoder::Impl {
  ZSTD_CCtx* c = nullptr;
  ZSTD_DCtx* d = nullptr;
};

namespace {
void check(size_t r, const char* what) {
  if (ZSTD_isError(r)) fail(Errc::io, "zstd", std::string(what) + ": " + ZSTD_getErrorName(r));
}
}  // namespace

ZstdCoder::ZstdCoder(int level, int threads) : impl_(std::make_unique<Impl>()) {
  if (level < ZSTD_minCLevel() || level > ZSTD_maxCLevel())
    fail(Errc::invalid_argument, "zstd", "level " + std::to_string(level) + " out of range");
  impl_->c = ZSTD_createCCtx();
  impl_->d = ZSTD_createDCtx();
  if (!impl_->c || !impl_->d) {
    ZSTD_freeCCtx(impl_->c);
    ZSTD_freeDCtx(impl_->d);
    fail(Errc::io, "zstd", "cannot create contexts");
  }
  check(ZSTD_CCtx_setParameter(impl_->c, ZSTD_c_compressionLevel, level), "level");
  // A libzstd built without multithreading refuses workers; single-threaded is then the honest answer.
  if (threads > 1) (void)ZSTD_CCtx_setParameter(impl_->c, ZSTD_c_nbWorkers, threads);
}

ZstdCoder::~ZstdCoder() {
  ZSTD_freeCCtx(impl_->c);
  ZSTD_freeDCtx(impl_->d);
}

size_t ZstdCoder::bound(size_t n) noexcept { return ZSTD_compressBound(n); }

size_t ZstdCoder::compress(std::span<const std::byte> src, std::span<std::byte> dst) {
  const size_t r = ZSTD_compress2(impl_->c, dst.data(), dst.size(), src.data(), src.size());
  check(r, "compress");
  return r;
}

void ZstdCoder::decompress(std::span<const std::byte> src, std::span<std::byte> dst) {
  const size_t r = ZSTD_decompressDCtx(impl_->d, dst.data(), dst.size(), src.data(), src.size());
  check(r, "decompress");
  if (r != dst.size())
    fail(Errc::format, "zstd", "frame decompressed to " + std::to_string(r) + " bytes, expected " + std::to_string(dst.size()));
}

}  // namespace skv
