// Opening a KV dump (safetensors) as a KvCache, and small side files (--tiers, --scores).
#pragma once
#include <memory>
#include <string>

#include "skv/formats/safetensors.hpp"
#include "skv/kvcache.hpp"

namespace skv::cli {

struct Dump {
  std::unique_ptr<safetensors::Reader> reader;  // owns the mapping the views point into
  KvCache cache;
};

Layout parse_layout(const std::string& s);  // "htd" | "thd"
Dump open_dump(const std::string& path, Layout layout);
Dump open_dump(std::shared_ptr<InputFile> file, Layout layout);

// A single tensor from a .npy file, or from a safetensors file (the tensor named `preferred` if
// present, else the only tensor). The holder keeps the file mapped.
struct SideTensor {
  std::shared_ptr<void> holder;
  TensorView view;
  std::string path;
};
SideTensor open_side_tensor(const std::string& path, const std::string& preferred);

}  // namespace skv::cli
