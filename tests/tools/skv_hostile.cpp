// skv_hostile CASE OUT: writes one hostile input of tests/support/hostile.hpp (valid checksums,
// hostile content) for the CLI tests (tests/cli/test_hostile.sh). Cases: base, layer-4g,
// rope-2p24, zstd-4g, claims-256g, names-collide, deep-shape.
#include <cstdio>
#include <fstream>
#include <string>

#include "hostile.hpp"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: skv_hostile CASE OUT\n");
    return 2;
  }
  using namespace skv::test;
  const std::string c = argv[1];
  std::vector<std::byte> f;
  if (c == "base") f = base_container();
  else if (c == "layer-4g") f = layer_claims_4g();
  else if (c == "rope-2p24") f = rope_table_2p24();
  else if (c == "zstd-4g") f = zstd_claims_4g();
  else if (c == "claims-256g") f = claims_tokens(int64_t(1) << 28);  // decodes to 256 GiB
  else if (c == "names-collide") f = with_manifest([](nlohmann::json& m) { m["tensors"][1]["k"] = "layers.0.k"; });
  else if (c == "deep-shape") f = deep_shape_safetensors(100000);
  else {
    std::fprintf(stderr, "skv_hostile: unknown case '%s'\n", c.c_str());
    return 2;
  }
  std::ofstream(argv[2], std::ios::binary).write(reinterpret_cast<const char*>(f.data()), std::streamsize(f.size()));
  return 0;
}
