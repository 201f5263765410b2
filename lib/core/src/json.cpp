#include "skv/json.hpp"

#include <nlohmann/json.hpp>

#include <set>
#include <vector>

#include "skv/error.hpp"

namespace skv {

nlohmann::json parse_json(std::string_view text, const std::string& ctx, const std::string& what) {
  using json = nlohmann::json;
  const std::string bad = what + " is not valid JSON: ";
  if (text.starts_with("\xEF\xBB\xBF")) fail(Errc::format, ctx, bad + "it starts with a UTF-8 byte-order mark");
  if (text.find('\0') != std::string_view::npos) fail(Errc::format, ctx, bad + "it contains a NUL byte");
  std::vector<std::set<std::string>> keys;  // one key set per open object, innermost last
  std::string err;                          // set by the callback, which then stops the parse
  auto cb = [&](int depth, json::parse_event_t ev, json& parsed) {
    if (!err.empty()) return false;
    switch (ev) {
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start:
        if (depth >= kMaxJsonDepth) {
          err = "nested deeper than " + std::to_string(kMaxJsonDepth) + " levels";
          return false;
        }
        if (ev == json::parse_event_t::object_start) keys.emplace_back();
        return true;
      case json::parse_event_t::key:
        if (!keys.back().insert(parsed.get_ref<const std::string&>()).second) {
          err = "duplicate key '" + parsed.get<std::string>() + "'";
          return false;
        }
        return true;
      case json::parse_event_t::object_end:
        keys.pop_back();
        return true;
      default:
        return true;
    }
  };
  json j;
  try {
    j = json::parse(text.begin(), text.end(), cb);
  } catch (const json::exception& e) {
    if (err.empty()) fail(Errc::format, ctx, bad + e.what());
  }
  if (!err.empty()) fail(Errc::format, ctx, bad + err);
  return j;
}

}  // namespace skv
