// safetensors reader (validating, zero-copy over an mmap) and streaming writer.
// Validation follows the reference Rust crate: header length cap, JSON object header,
// `__metadata__` string -> string, offsets sorted, contiguous, covering the data exactly, and
// shape x dtype size == span. Two deliberate differences: duplicate tensor names are an error
// (the reference silently keeps the last), and dtypes skv has no use for are rejected; the header
// JSON goes through skv::parse_json (nesting capped, no duplicate keys, no BOM).
#include "skv/formats/safetensors.hpp"

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>
#include <utility>

#include "skv/error.hpp"
#include "skv/json.hpp"

namespace skv::safetensors {
namespace {

using json = nlohmann::json;

std::string in_quotes(const std::string& s) { return "'" + s + "'"; }

uint64_t read_u64le(const std::byte* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | uint64_t(p[i]);
  return v;
}

uint64_t offset_value(const json& v, const std::string& file, const std::string& name) {
  if (!v.is_number_unsigned())
    fail(Errc::format, file, "tensor " + in_quotes(name) + ": data_offsets must be non-negative integers");
  return v.get<uint64_t>();
}

TensorInfo parse_tensor(const std::string& name, const json& v, const std::string& file) {
  const std::string t = "tensor " + in_quotes(name) + ": ";
  if (!v.is_object()) fail(Errc::format, file, t + "entry is not a JSON object");
  TensorInfo info;
  info.name = name;
  auto dt = v.find("dtype");
  if (dt == v.end() || !dt->is_string()) fail(Errc::format, file, t + "missing string 'dtype'");
  const auto& dname = dt->get_ref<const std::string&>();
  auto dtype = dtype_from_name(dname);
  if (!dtype) fail(Errc::format, file, t + "unknown dtype " + in_quotes(dname));
  info.dtype = *dtype;
  auto sh = v.find("shape");
  if (sh == v.end() || !sh->is_array()) fail(Errc::format, file, t + "missing array 'shape'");
  for (const auto& d : *sh) {
    if (!d.is_number_unsigned() || d.get<uint64_t>() > (uint64_t(1) << 62))
      fail(Errc::format, file, t + "shape " + sh->dump() + " has a dimension that is not a size");
    info.shape.push_back(int64_t(d.get<uint64_t>()));
  }
  auto off = v.find("data_offsets");
  if (off == v.end() || !off->is_array() || off->size() != 2)
    fail(Errc::format, file, t + "missing 'data_offsets' [begin, end]");
  info.begin = offset_value((*off)[0], file, name);
  info.end = offset_value((*off)[1], file, name);
  if (info.begin > info.end)
    fail(Errc::format, file,
         t + "data_offsets [" + std::to_string(info.begin) + ", " + std::to_string(info.end) +
             "] end before they begin");
  const int64_t numel = checked_numel(info.shape, file + ": " + t.substr(0, t.size() - 2));
  const uint64_t es = dtype_size(info.dtype);
  if (uint64_t(numel) > UINT64_MAX / es) fail(Errc::format, file, t + "shape too large");
  const uint64_t need = uint64_t(numel) * es;
  if (info.end - info.begin != need)
    fail(Errc::format, file,
         t + "shape " + shape_str(info.shape) + " of " + std::string(dtype_name(info.dtype)) +
             " needs " + std::to_string(need) + " bytes but data_offsets span " +
             std::to_string(info.end - info.begin));
  return info;
}

}  // namespace

Reader Reader::open(const std::string& path) {
  return open(std::make_shared<InputFile>(InputFile::open(path)));
}

Reader Reader::open(std::shared_ptr<InputFile> file) {
  Reader r = from_bytes(file->bytes(), file->path());
  r.file_ = std::move(file);
  return r;
}

Reader Reader::from_bytes(std::span<const std::byte> bytes, const std::string& name) {
  Reader r;
  r.path_ = name;
  if (bytes.size() < 8)
    fail(Errc::truncated, name,
         "file is " + std::to_string(bytes.size()) + " bytes, shorter than the 8-byte header length");
  const uint64_t n = read_u64le(bytes.data());
  if (n > kMaxHeaderBytes)
    fail(Errc::format, name,
         "header length " + std::to_string(n) + " exceeds the " + std::to_string(kMaxHeaderBytes) +
             "-byte limit (not a safetensors file?)");
  if (n > bytes.size() - 8)
    fail(Errc::truncated, name,
         "header length " + std::to_string(n) + " is larger than the rest of the file (" +
             std::to_string(bytes.size() - 8) + " bytes)");
  const std::string_view text(reinterpret_cast<const char*>(bytes.data() + 8), size_t(n));
  // Bounded depth, unique keys at every depth, no BOM (skv/json.hpp).
  const json header = parse_json(text, name, "header");
  if (!header.is_object()) fail(Errc::format, name, "header is not a JSON object");
  r.data_ = bytes.subspan(8 + size_t(n));

  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__") {
      if (value.is_null()) continue;  // the reference reader accepts null as "no metadata"
      if (!value.is_object()) fail(Errc::format, name, "__metadata__ is not a JSON object");
      for (const auto& [mk, mv] : value.items()) {
        if (!mv.is_string())
          fail(Errc::format, name, "__metadata__ value of " + in_quotes(mk) + " is not a string");
        r.metadata_[mk] = mv.get<std::string>();
      }
      continue;
    }
    r.tensors_.push_back(parse_tensor(key, value, name));
  }

  std::sort(r.tensors_.begin(), r.tensors_.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  uint64_t pos = 0;
  const TensorInfo* prev = nullptr;
  for (const auto& t : r.tensors_) {
    if (t.begin < pos)
      fail(Errc::format, name,
           "tensor " + in_quotes(t.name) + " (bytes " + std::to_string(t.begin) + ".." +
               std::to_string(t.end) + ") overlaps tensor " + in_quotes(prev->name) + " (bytes " +
               std::to_string(prev->begin) + ".." + std::to_string(prev->end) + ")");
    if (t.begin > pos)
      fail(Errc::format, name,
           "data bytes " + std::to_string(pos) + ".." + std::to_string(t.begin) +
               " belong to no tensor (hole before tensor " + in_quotes(t.name) + ")");
    if (t.end > r.data_.size())
      fail(Errc::truncated, name,
           "tensor " + in_quotes(t.name) + " ends at data byte " + std::to_string(t.end) +
               " but the data section has only " + std::to_string(r.data_.size()) + " bytes");
    pos = t.end;
    prev = &t;
  }
  if (pos != r.data_.size())
    fail(Errc::format, name,
         "data section has " + std::to_string(r.data_.size()) + " bytes but the tensors cover " +
             std::to_string(pos) + " (trailing bytes)");
  return r;
}

const TensorInfo* Reader::find(const std::string& name) const noexcept {
  for (const auto& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

TensorView Reader::view(const TensorInfo& t) const {
  return {t.dtype, t.shape, data_.subspan(size_t(t.begin), size_t(t.end - t.begin))};
}

TensorView Reader::view(const std::string& name) const {
  const TensorInfo* t = find(name);
  if (!t) fail(Errc::format, path_, "no tensor named " + in_quotes(name));
  return view(*t);
}

void Reader::release(const TensorInfo& t) const noexcept {
  release(data_.subspan(size_t(t.begin), size_t(t.end - t.begin)));
}

void Reader::release(std::span<const std::byte> bytes) const noexcept {
  if (!file_ || bytes.empty()) return;
  const auto all = file_->bytes();
  if (bytes.data() < all.data() || bytes.data() + bytes.size() > all.data() + all.size()) return;
  file_->release(size_t(bytes.data() - all.data()), bytes.size());
}

// ---------------------------------------------------------------- Writer

Writer::Writer(OutputFile& out, std::vector<WriteSpec> tensors, const Metadata& metadata)
    : out_(out), specs_(std::move(tensors)) {
  const std::string& file = out_.path();
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    auto& m = h["__metadata__"] = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
  }
  std::set<std::string> names;
  uint64_t offset = 0;
  for (const auto& s : specs_) {
    if (s.name == "__metadata__" || s.name.empty())
      fail(Errc::invalid_argument, file, "invalid tensor name " + in_quotes(s.name));
    if (!names.insert(s.name).second)
      fail(Errc::invalid_argument, file, "duplicate tensor name " + in_quotes(s.name));
    const uint64_t bytes =
        uint64_t(checked_numel(s.shape, file + ": tensor " + in_quotes(s.name))) * dtype_size(s.dtype);
    auto& e = h[s.name] = nlohmann::ordered_json::object();
    e["dtype"] = std::string(dtype_name(s.dtype));
    e["shape"] = s.shape;
    e["data_offsets"] = {offset, offset + bytes};
    offset += bytes;
  }
  expected_ = offset;
  std::string text;
  try {
    text = h.dump();
  } catch (const nlohmann::json::exception& e) {  // names or metadata that are not UTF-8
    fail(Errc::invalid_argument, file, std::string("cannot encode the header: ") + e.what());
  }
  // Pad with spaces so the data starts 8-byte aligned, as the Python library does.
  text.append((8 - text.size() % 8) % 8, ' ');
  std::byte len[8];
  for (int i = 0; i < 8; ++i) len[i] = std::byte((uint64_t(text.size()) >> (8 * i)) & 0xff);
  out_.write(len, 8);
  out_.write(text.data(), text.size());
}

void Writer::write(std::span<const std::byte> bytes) {
  if (bytes.size() > expected_ - written_)
    fail(Errc::invalid_argument, out_.path(),
         "more tensor bytes written than the header promised (" + std::to_string(expected_) + ")");
  out_.write(bytes);
  written_ += bytes.size();
}

void Writer::finish() {
  if (written_ != expected_)
    fail(Errc::invalid_argument, out_.path(),
         "header promised " + std::to_string(expected_) + " tensor bytes but only " +
             std::to_string(written_) + " were written");
}

void write_file(const std::string& path, const std::vector<NamedTensor>& tensors,
                const Metadata& metadata, const OutputOptions& opts) {
  std::vector<WriteSpec> specs;
  specs.reserve(tensors.size());
  for (const auto& t : tensors) {
    const uint64_t need =
        uint64_t(checked_numel(t.view.shape, "tensor " + in_quotes(t.name))) * dtype_size(t.view.dtype);
    if (t.view.bytes.size() != need)
      fail(Errc::invalid_argument, path,
           "tensor " + in_quotes(t.name) + " has " + std::to_string(t.view.bytes.size()) +
               " bytes but its shape needs " + std::to_string(need));
    specs.push_back({t.name, t.view.dtype, t.view.shape});
  }
  OutputFile out(path, opts);
  Writer w(out, std::move(specs), metadata);
  for (const auto& t : tensors) w.write(t.view.bytes);
  w.finish();
  out.commit();
}

}  // namespace skv::safetensors
