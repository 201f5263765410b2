// skv score: not built yet; says so instead of printing made-up results.
#include "cli.hpp"
#include "skv/error.hpp"

namespace skv::cli {

void setup_score(CLI::App& app, Context& ctx) {
  auto* sub = app.add_subcommand("score", "Score token importance and show the tier each token would get (not built yet)");
  sub->allow_extras();
  ctx.add(sub, [] () -> int {
    fail(Errc::unsupported, "skv score", "not built yet in this version");
  });
}

}  // namespace skv::cli
