# Global conventions: --version, --help, usage errors exit 2, unknown subcommands.
source "$(dirname "$0")/lib.sh" "$@"

run --version; expect_rc 0 "--version"; expect_out '^skv [0-9]+\.[0-9]+\.[0-9]+'
run --help; expect_rc 0 "--help"; expect_out 'encode'; expect_out 'decode'; expect_out 'inspect'
run; expect_rc 2 "no subcommand"
run frobnicate; expect_rc 2 "unknown subcommand"
run encode --no-such-option; expect_rc 2 "unknown option"
run decode --dtype f8; expect_rc 2 "bad --dtype value"
for sub in probe score encode decode inspect bench dump eval; do
  run "$sub" --help; expect_rc 0 "$sub --help"; expect_out 'Usage|Options|OPTIONS' "$sub --help"
done
finish
