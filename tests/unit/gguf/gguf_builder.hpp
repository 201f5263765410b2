// Builds GGUF byte buffers by hand for the reader tests (valid files and malformed variants).
#pragma once
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace skv::test {

class GgufBuilder {
 public:
  std::vector<std::byte> b;

  template <class T> GgufBuilder& raw(T v) {
    const auto* p = reinterpret_cast<const std::byte*>(&v);
    b.insert(b.end(), p, p + sizeof(T));
    return *this;
  }
  GgufBuilder& str(const std::string& s) {
    raw<uint64_t>(s.size());
    const auto* p = reinterpret_cast<const std::byte*>(s.data());
    b.insert(b.end(), p, p + s.size());
    return *this;
  }
  GgufBuilder& header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
    b.clear();
    const char magic[4] = {'G', 'G', 'U', 'F'};
    for (char c : magic) b.push_back(std::byte(c));
    return raw<uint32_t>(version).raw<uint64_t>(n_tensors).raw<uint64_t>(n_kv);
  }
  GgufBuilder& kv_u32(const std::string& k, uint32_t v) { return str(k).raw<uint32_t>(4).raw<uint32_t>(v); }
  GgufBuilder& kv_str(const std::string& k, const std::string& v) { return str(k).raw<uint32_t>(8).str(v); }
  GgufBuilder& tensor(const std::string& name, std::vector<uint64_t> dims, uint32_t type, uint64_t offset) {
    str(name).raw<uint32_t>(uint32_t(dims.size()));
    for (auto d : dims) raw<uint64_t>(d);
    return raw<uint32_t>(type).raw<uint64_t>(offset);
  }
  GgufBuilder& pad_to(size_t alignment) {
    while (b.size() % alignment) b.push_back(std::byte{0});
    return *this;
  }
  GgufBuilder& bytes(const void* p, size_t n) {
    const auto* q = static_cast<const std::byte*>(p);
    b.insert(b.end(), q, q + n);
    return *this;
  }
};

}  // namespace skv::test
