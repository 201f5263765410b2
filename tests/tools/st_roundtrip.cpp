// st_roundtrip IN OUT: reads a safetensors file with skv's Reader and writes it again with skv's
// Writer (same tensor order, same metadata). Used by tests/python/safetensors_crosscheck.py.
#include <cstdio>

#include "skv/error.hpp"
#include "skv/formats/safetensors.hpp"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: st_roundtrip IN OUT\n");
    return 2;
  }
  try {
    const auto r = skv::safetensors::Reader::open(argv[1]);
    std::vector<skv::NamedTensor> tensors;
    for (const auto& t : r.tensors()) tensors.push_back({t.name, r.view(t)});
    skv::safetensors::write_file(argv[2], tensors, r.metadata(), {.force = true});
  } catch (const skv::Error& e) {
    std::fprintf(stderr, "st_roundtrip: %s\n", e.what());
    return 1;
  }
  return 0;
}
