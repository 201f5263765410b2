#include <fmt/core.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "cli.hpp"
#include "skv/error.hpp"

namespace skv::cli {

std::string human_bytes(uint64_t n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = double(n);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  return u == 0 ? fmt::format("{} B", n) : fmt::format("{:.2f} {}", v, units[u]);
}

void note(const Globals& g, const std::string& line) {
  if (g.verbosity > 0) fmt::print(stderr, "{}\n", line);
}

void print_json(const nlohmann::json& j, bool to_stderr) {
  const std::string s = j.dump(2);
  std::fputs(s.c_str(), to_stderr ? stderr : stdout);
  std::fputc('\n', to_stderr ? stderr : stdout);
}

std::vector<int> parse_layer_list(const std::string& text, int n) {
  std::vector<int> out;
  auto bad = [&](const std::string& why) {
    fail(Errc::invalid_argument, "--layers '" + text + "'", why);
  };
  size_t pos = 0;
  while (pos <= text.size()) {
    const size_t comma = std::min(text.find(',', pos), text.size());
    const std::string part = text.substr(pos, comma - pos);
    if (part.empty()) bad("empty range");
    const size_t dash = part.find('-');
    int a = 0, b = 0;
    try {
      size_t used = 0;
      a = std::stoi(part.substr(0, dash), &used);
      if (used != (dash == std::string::npos ? part.size() : dash)) bad("not a number: " + part);
      b = a;
      if (dash != std::string::npos) {
        const std::string rest = part.substr(dash + 1);
        b = std::stoi(rest, &used);
        if (used != rest.size()) bad("not a number: " + part);
      }
    } catch (const std::logic_error&) {
      bad("not a number: " + part);
    }
    if (a < 0 || b < a) bad("bad range " + part);
    if (b >= n) bad(fmt::format("layer {} out of range (the cache has {} layers)", b, n));
    for (int i = a; i <= b; ++i) out.push_back(i);
    pos = comma + 1;
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

std::string default_output(const std::string& input, const std::string& ext) {
  if (input == "-") return "-";
  std::filesystem::path p(input);
  p.replace_extension(ext);
  if (p.string() == input) p += ext;  // input already had that extension
  return p.string();
}

}  // namespace skv::cli
