// The one JSON parser for untrusted text (safetensors headers, the container manifest, dump
// metadata values, probe results): bounded nesting, unique keys, no BOM.
#pragma once
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>

namespace skv {

// Deepest nesting of arrays and objects accepted. nlohmann's parser is iterative, but copying,
// comparing, dumping and destroying a value recurse on its depth; with this cap nothing does
// deeper than this, whatever the input.
inline constexpr int kMaxJsonDepth = 64;

// Parses text as one JSON value. Errc::format "ctx: WHAT is not valid JSON: REASON" when it is
// not, nests deeper than kMaxJsonDepth, repeats a key within an object (at any depth: which one
// would win is a guess), starts with a UTF-8 byte-order mark, or holds a NUL byte (nlohmann
// would stop there as if the text ended).
nlohmann::json parse_json(std::string_view text, const std::string& ctx, const std::string& what);

}  // namespace skv
