// Hostile inputs with valid checksums (issue 15): what each reader rule must reject. Built from
// small valid files with container_edit.hpp; shared by the unit tests and tests/tools/skv_hostile.
#pragma once
#include <cstddef>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "container_edit.hpp"

namespace skv::test {

// A valid 2-layer container (H 2, T 16, D 64, F16) holding every tier: FP16, INT8, INT4, DROP,
// and INT2 when int2; key transform prerope_centre (RoPE theta 10000, neox) when prerope, else
// centre. zstd 0, so every stream is raw and editable.
std::vector<std::byte> base_container(bool prerope = false, bool int2 = false);

// base_container() with its manifest changed by `edit`, re-sealed.
std::vector<std::byte> with_manifest(const std::function<void(nlohmann::json&)>& edit, bool prerope = false);

// Manifest claims 2^24 tokens; the LAYR 0 header that follows claims a payload of ~4 GiB, and
// the file ends there (about 1 KB in all).
std::vector<std::byte> layer_claims_4g();
// base_container() whose manifest claims `tokens` tokens (shapes to match); the layers are the
// base's, so the first layer is rejected.
std::vector<std::byte> claims_tokens(int64_t tokens, bool prerope = false);
// Manifest with prerope_centre and 2^24 tokens (a 4 GiB RoPE table if built from the manifest);
// the layers are the base's, so the first layer is rejected.
std::vector<std::byte> rope_table_2p24();
// One layer whose tier maps (zstd) imply a 4 GiB K FP16 stream (zstd), which holds a frame
// of a few hundred bytes (a few KB in all).
std::vector<std::byte> zstd_claims_4g();

// A safetensors file whose layers.0.k shape is an array nested `depth` deep.
std::vector<std::byte> deep_shape_safetensors(int depth);
// "[[[...]]]" nested depth deep.
std::string deep_json_array(int depth);

}  // namespace skv::test
