#include "skv/error.hpp"

namespace skv {

const char* errc_name(Errc c) noexcept {
  switch (c) {
    case Errc::io: return "io";
    case Errc::format: return "format";
    case Errc::checksum: return "checksum";
    case Errc::truncated: return "truncated";
    case Errc::unsupported: return "unsupported";
    case Errc::invalid_argument: return "invalid_argument";
    case Errc::budget: return "budget";
    case Errc::cuda: return "cuda";
  }
  return "unknown";
}

void fail(Errc code, const std::string& context, const std::string& what) {
  throw Error(code, context.empty() ? what : context + ": " + what);
}

}  // namespace skv
