// skv probe: not built yet; says so instead of printing made-up results.
#include "cli.hpp"
#include "skv/error.hpp"

namespace skv::cli {

void setup_probe(CLI::App& app, Context& ctx) {
  auto* sub = app.add_subcommand("probe", "Test once whether a model tolerates INT4 keys/values (needle retrieval at b=0.3) (not built yet)");
  sub->allow_extras();
  ctx.add(sub, [] () -> int {
    fail(Errc::unsupported, "skv probe", "not built yet in this version");
  });
}

}  // namespace skv::cli
