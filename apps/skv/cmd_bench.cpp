// skv bench: not built yet; says so instead of printing made-up results.
#include "cli.hpp"
#include "skv/error.hpp"

namespace skv::cli {

void setup_bench(CLI::App& app, Context& ctx) {
  auto* sub = app.add_subcommand("bench", "Measure encode/decode speed, achieved budget and the transfer-path saving (not built yet)");
  sub->allow_extras();
  ctx.add(sub, [] () -> int {
    fail(Errc::unsupported, "skv bench", "not built yet in this version");
  });
}

}  // namespace skv::cli
