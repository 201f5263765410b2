#include "container_edit.hpp"

#include <xxhash.h>

#include <cstring>
#include <stdexcept>

namespace skv::test {
namespace {

uint64_t get64(const uint8_t* p) { uint64_t v; std::memcpy(&v, p, 8); return v; }
uint32_t get32(const uint8_t* p) { uint32_t v; std::memcpy(&v, p, 4); return v; }
void put64(uint8_t* p, uint64_t v) { std::memcpy(p, &v, 8); }
void put32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, 4); }
uint64_t align64(uint64_t n) { return (n + 63) / 64 * 64; }
uint32_t tag_of(const char (&t)[5]) { uint32_t v; std::memcpy(&v, t, 4); return v; }

}  // namespace

bool EditSection::is(const char (&t)[5]) const { return tag == tag_of(t); }

std::vector<EditStream> EditSection::streams(int ns) const {
  const uint64_t dir = align64(24 * uint64_t(ns));
  std::vector<EditStream> out;
  uint64_t end = dir;
  for (int s = 0; s < ns; ++s) {
    const uint8_t* e = payload.data() + 24 * s;
    EditStream st;
    st.codec = get32(e);
    const uint64_t stored = get64(e + 8);
    st.raw_size = get64(e + 16);
    const uint64_t off = align64(end);
    if (off + stored > payload.size()) throw std::runtime_error("stream runs past the section");
    st.bytes.assign(payload.begin() + long(off), payload.begin() + long(off + stored));
    end = off + stored;
    out.push_back(std::move(st));
  }
  return out;
}

void EditSection::set_streams(const std::vector<EditStream>& s) {
  const uint64_t dir = align64(24 * s.size());
  std::vector<uint8_t> p(dir, 0);
  for (size_t i = 0; i < s.size(); ++i) {
    p.resize(align64(p.size()), 0);
    uint8_t* e = p.data() + 24 * i;
    put32(e, s[i].codec);
    put64(e + 8, s[i].bytes.size());
    put64(e + 16, s[i].raw_size);
    p.insert(p.end(), s[i].bytes.begin(), s[i].bytes.end());
  }
  payload = std::move(p);
}

EditableContainer EditableContainer::parse(std::span<const std::byte> bytes) {
  const auto* b = reinterpret_cast<const uint8_t*>(bytes.data());
  EditableContainer c;
  if (bytes.size() < 64) throw std::runtime_error("no file header");
  std::memcpy(c.header, b, 64);
  for (uint64_t at = 64; at < bytes.size();) {
    if (bytes.size() - at < 64) throw std::runtime_error("section header cut short");
    EditSection s;
    s.tag = get32(b + at);
    s.flags = get32(b + at + 4);
    const uint64_t size = get64(b + at + 8);
    s.number = get64(b + at + 16);
    if (size > bytes.size() - at - 64) throw std::runtime_error("section payload cut short");
    s.payload.assign(b + at + 64, b + at + 64 + size);
    at += 64 + align64(size);
    c.sections.push_back(std::move(s));
  }
  return c;
}

EditSection& EditableContainer::section(const char (&tag)[5]) {
  for (auto& s : sections)
    if (s.is(tag)) return s;
  throw std::runtime_error(std::string("no section ") + tag);
}

EditSection& EditableContainer::layer(int l) {
  for (auto& s : sections)
    if (s.is("LAYR") && s.number == uint64_t(l)) return s;
  throw std::runtime_error("no layer " + std::to_string(l));
}

nlohmann::json EditableContainer::manifest() const {
  for (const auto& s : sections)
    if (s.is("MANI")) return nlohmann::json::parse(s.payload.begin(), s.payload.end());
  throw std::runtime_error("no manifest");
}

int EditableContainer::streams_per_layer() const {
  return manifest().at("quant").contains("int2") ? 17 : 13;
}

void EditableContainer::set_manifest_text(const std::string& text) {
  section("MANI").payload.assign(text.begin(), text.end());
}

std::vector<std::byte> EditableContainer::seal(bool fix_trailer) const {
  // Offsets first: INDX and FOOT hold them, and the trailer holds the total size.
  std::vector<uint64_t> offs;
  uint64_t total = 64;
  for (const auto& s : sections) {
    offs.push_back(total);
    total += 64 + align64(s.payload.size());
  }
  uint64_t mani = 0, trlr = 0, indx = 0;
  std::vector<uint64_t> layers;
  for (size_t i = 0; i < sections.size(); ++i) {
    if (sections[i].is("MANI")) mani = offs[i];
    if (sections[i].is("TRLR")) trlr = offs[i];
    if (sections[i].is("INDX")) indx = offs[i];
    if (sections[i].is("LAYR")) layers.push_back(offs[i]);
  }
  std::vector<std::byte> out(total);
  auto* o = reinterpret_cast<uint8_t*>(out.data());
  std::memcpy(o, header, 64);
  put64(o + 56, XXH3_64bits(o, 56));
  for (size_t i = 0; i < sections.size(); ++i) {
    const EditSection& s = sections[i];
    std::vector<uint8_t> p = s.payload;
    if (s.is("TRLR") && fix_trailer && p.size() >= 96) fill_trailer(p, total);
    if (s.is("INDX")) {
      p.assign(24 + 8 * layers.size(), 0);
      put64(p.data(), layers.size());
      put64(p.data() + 8, mani);
      put64(p.data() + 16, trlr);
      for (size_t l = 0; l < layers.size(); ++l) put64(p.data() + 24 + 8 * l, layers[l]);
    }
    if (s.is("FOOT")) {
      p.assign(16, 0);
      put64(p.data(), indx);
      put64(p.data() + 8, total);
    }
    uint8_t* h = o + offs[i];
    put32(h, s.tag);
    put32(h + 4, s.flags);
    put64(h + 8, p.size());
    put64(h + 16, s.number);
    std::memcpy(h + 64, p.data(), p.size());
    put64(h + 48, XXH3_64bits(h + 64, align64(p.size())));
    put64(h + 56, XXH3_64bits(h, 56));
  }
  return out;
}

void EditableContainer::fill_trailer(std::vector<uint8_t>& p, uint64_t total) const {
  const nlohmann::json m = manifest();
  const int ns = streams_per_layer();
  uint64_t counts[2][5]{};
  for (const auto& s : sections) {
    if (!s.is("LAYR")) continue;
    const std::vector<EditStream> st = s.streams(ns);
    for (int kv = 0; kv < 2; ++kv)
      for (uint8_t code : st[size_t(kv)].bytes)
        if (code < 5) ++counts[kv][code];
  }
  put64(p.data(), total);
  for (int t = 0; t < 4; ++t) {
    put64(p.data() + 32 + 8 * t, counts[0][t]);
    put64(p.data() + 64 + 8 * t, counts[1][t]);
  }
  if (p.size() >= 112) {
    put64(p.data() + 96, counts[0][4]);
    put64(p.data() + 104, counts[1][4]);
  }
  const auto& sh = m.at("shape");
  const uint64_t fp16 = sh.at("layers").get<uint64_t>() * 2 * sh.at("kv_heads").get<uint64_t>() *
                        sh.at("tokens").get<uint64_t>() * sh.at("head_dim").get<uint64_t>() * 2;
  const double achieved = double(total) / double(fp16);
  std::memcpy(p.data() + 8, &achieved, 8);
  if (get64(p.data() + 24) < total) put64(p.data() + 24, total);  // raw_bytes >= total_bytes
}

void rehash_header(std::vector<std::byte>& file, size_t at) {
  auto* h = reinterpret_cast<uint8_t*>(file.data() + at);
  put64(h + 56, XXH3_64bits(h, 56));
}

}  // namespace skv::test
