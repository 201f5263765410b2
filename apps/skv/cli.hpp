// Shared CLI plumbing: global flags, subcommand registration, output helpers.
// The library never prints; everything a user sees is written from apps/skv/.
#pragma once
#include <CLI/CLI.hpp>
#include <cstdint>
#include <functional>
#include <utility>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace skv::cli {

// Flags every subcommand sees (-q / -v move one display level, as in zstd).
struct Globals {
  int verbosity = 1;  // 0 quiet, 1 normal, 2 verbose
};

// Exit codes: 0 ok, 1 bad input or failure, 2 usage error.
inline constexpr int kExitOk = 0, kExitFail = 1, kExitUsage = 2;

// Each subcommand registers its options and a runner; main runs the one that was chosen after
// parsing has finished (so global flags given anywhere on the line are already applied).
struct Context {
  Globals globals;
  std::vector<std::pair<CLI::App*, std::function<int()>>> runners;
  void add(CLI::App* sub, std::function<int()> run) { runners.emplace_back(sub, std::move(run)); }
};

void setup_probe(CLI::App& app, Context& ctx);
void setup_score(CLI::App& app, Context& ctx);
void setup_encode(CLI::App& app, Context& ctx);
void setup_decode(CLI::App& app, Context& ctx);
void setup_inspect(CLI::App& app, Context& ctx);
void setup_bench(CLI::App& app, Context& ctx);
void setup_dump(CLI::App& app, Context& ctx);
void setup_eval(CLI::App& app, Context& ctx);

// "12.3 MiB"
std::string human_bytes(uint64_t n);
// Prints to stderr unless quiet.
void note(const Globals& g, const std::string& line);
// JSON to stdout (or stderr when stdout carries binary data), pretty-printed, one object.
void print_json(const nlohmann::json& j, bool to_stderr = false);
// "0-3,7" -> sorted unique layer indices < n; throws skv::Error(invalid_argument) naming the text.
std::vector<int> parse_layer_list(const std::string& text, int n);
// Output path rule when -o is not given: stdin input -> "-", else input with its extension
// replaced by `ext`.
std::string default_output(const std::string& input, const std::string& ext);

}  // namespace skv::cli
