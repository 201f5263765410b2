// Typed errors. The library never prints; it throws skv::Error, whose message is one line that
// names the file (or tensor, or section) and what is wrong. The CLI prints what() and exits 1.
#pragma once
#include <stdexcept>
#include <string>

namespace skv {

enum class Errc {
  io,           // open/read/write/rename failed
  format,       // malformed input: bad header, wrong shape, overlap, unknown dtype...
  checksum,     // a section's xxh3-64 does not match
  truncated,    // input ended early
  unsupported,  // valid but not handled (e.g. a required section this reader does not know)
  invalid_argument,  // caller asked for something impossible (bad plan, bad option value)
  budget,       // even the cheapest allowed plan does not fit the byte budget
  cuda,         // a CUDA call failed
};

const char* errc_name(Errc c) noexcept;

class Error : public std::runtime_error {
 public:
  Error(Errc code, const std::string& message) : std::runtime_error(message), code_(code) {}
  Errc code() const noexcept { return code_; }

 private:
  Errc code_;
};

// Prefixes context (usually the file name): "ctx: what".
[[noreturn]] void fail(Errc code, const std::string& context, const std::string& what);

}  // namespace skv
