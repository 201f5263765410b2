#include "dump_input.hpp"

#include "skv/error.hpp"
#include "skv/formats/npy.hpp"

namespace skv::cli {

Layout parse_layout(const std::string& s) {
  if (s == "htd") return Layout::HTD;
  if (s == "thd") return Layout::THD;
  fail(Errc::invalid_argument, "--layout", "expected htd or thd, got '" + s + "'");
}

Dump open_dump(const std::string& path, Layout layout) {
  return open_dump(std::make_shared<InputFile>(InputFile::open(path)), layout);
}

Dump open_dump(std::shared_ptr<InputFile> file, Layout layout) {
  const std::string path = file->path();
  Dump d;
  d.reader = std::make_unique<safetensors::Reader>(safetensors::Reader::open(std::move(file)));
  std::vector<NamedTensor> named;
  for (const auto& t : d.reader->tensors()) named.push_back({t.name, d.reader->view(t)});
  d.cache = kv_from_tensors(named, d.reader->metadata(), layout, path);
  return d;
}

static bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

SideTensor open_side_tensor(const std::string& path, const std::string& preferred) {
  SideTensor out;
  out.path = path;
  if (ends_with(path, ".npy")) {
    auto r = std::make_shared<npy::Reader>(npy::Reader::open(path));
    out.view = r->view();
    out.holder = r;
    return out;
  }
  auto r = std::make_shared<safetensors::Reader>(safetensors::Reader::open(path));
  if (const auto* t = r->find(preferred)) {
    out.view = r->view(*t);
  } else if (r->tensors().size() == 1) {
    out.view = r->view(r->tensors().front());
  } else {
    fail(Errc::format, path,
         "expected one tensor or a tensor named '" + preferred + "', found " +
             std::to_string(r->tensors().size()));
  }
  out.holder = r;
  return out;
}

}  // namespace skv::cli
