// skv inspect: not built yet; says so instead of printing made-up results.
#include "cli.hpp"
#include "skv/error.hpp"

namespace skv::cli {

void setup_inspect(CLI::App& app, Context& ctx) {
  auto* sub = app.add_subcommand("inspect", "Describe a KV dump (.safetensors) or an .skv container (not built yet)");
  sub->allow_extras();
  ctx.add(sub, [] () -> int {
    fail(Errc::unsupported, "skv inspect", "not built yet in this version");
  });
}

}  // namespace skv::cli
