// skv: the command-line front end. Parses arguments, dispatches to one subcommand, turns every
// error into one line on stderr and an exit code (0 ok, 1 failure, 2 usage).
#include <fmt/core.h>

#include <csignal>
#include <exception>

#include "cli.hpp"
#include "skv/error.hpp"

#ifndef SKV_VERSION
#define SKV_VERSION "0.0.0"
#endif

namespace {
// An error is one line whatever it quotes: names and values from the input (a tensor named
// "a\nb", an escape sequence) are printed with control characters as \xNN.
void print_error(const char* what) {
  std::string s;
  for (const char* p = what; *p; ++p) {
    const auto c = static_cast<unsigned char>(*p);
    if (c < 0x20 || c == 0x7f) s += fmt::format("\\x{:02x}", c);
    else s += *p;
  }
  fmt::print(stderr, "skv: {}\n", s);
}
}  // namespace

int main(int argc, char** argv) {
  using namespace skv::cli;
  // A closed pipe (skv encode ... | head) must surface as a write error, not kill us silently
  // with a partial temp file left behind.
  std::signal(SIGPIPE, SIG_IGN);

  CLI::App app{"skv: per-token mixed-precision KV-cache container (encode, decode, inspect)", "skv"};
  app.set_version_flag("-V,--version", std::string("skv ") + SKV_VERSION);
  app.require_subcommand(1);
  app.fallthrough();
  Context ctx;
  int quiet = 0, verbose = 0;
  app.add_flag("-q,--quiet", quiet, "Print less (repeatable); errors are always printed");
  app.add_flag("-v,--verbose", verbose, "Print more (repeatable)");
  app.footer("Run 'skv SUBCOMMAND --help' for a subcommand's options; man skv for the full story.");

  setup_probe(app, ctx);
  setup_score(app, ctx);
  setup_encode(app, ctx);
  setup_decode(app, ctx);
  setup_inspect(app, ctx);
  setup_bench(app, ctx);
  setup_dump(app, ctx);
  setup_eval(app, ctx);

  try {
    app.parse(argc, argv);
    ctx.globals.verbosity = 1 + verbose - quiet;
    for (auto& [sub, run] : ctx.runners)
      if (sub->parsed()) return run();
    return kExitUsage;
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);  // help on stdout, exit 0
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);  // message (and usage hint) on stderr
    return kExitUsage;
  } catch (const skv::Error& e) {
    print_error(e.what());
    return kExitFail;
  } catch (const std::bad_alloc&) {
    fmt::print(stderr, "skv: out of memory\n");
    return kExitFail;
  } catch (const std::exception& e) {
    print_error(e.what());
    return kExitFail;
  }
}
