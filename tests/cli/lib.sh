# Shared helpers for CLI tests. Usage in a test: source "$(dirname "$0")/lib.sh" "$@"
set -u
SKV=${1:?skv binary}
SRC=${2:?source dir}
T=$(mktemp -d "${TMPDIR:-/tmp}/skv-cli.XXXXXX")
trap 'rm -rf "$T"' EXIT
failures=0
checks=0

# run CMD...: runs skv with the arguments, capturing $T/out, $T/err and $rc.
run() { "$SKV" "$@" >"$T/out" 2>"$T/err"; rc=$?; }

fail_check() { echo "FAIL: $*" >&2; echo "  stdout: $(head -c 400 "$T/out")" >&2; echo "  stderr: $(head -c 400 "$T/err")" >&2; failures=$((failures + 1)); }
expect_rc() { checks=$((checks + 1)); [[ $rc -eq $1 ]] || fail_check "exit $rc, expected $1 (${2:-})"; }
expect_err() { checks=$((checks + 1)); grep -qE -- "$1" "$T/err" || fail_check "stderr lacks /$1/ (${2:-})"; }
expect_out() { checks=$((checks + 1)); grep -qE -- "$1" "$T/out" || fail_check "stdout lacks /$1/ (${2:-})"; }
# An error is one line on stderr, starting "skv: ".
expect_one_line_error() {
  checks=$((checks + 1))
  local n; n=$(wc -l <"$T/err")
  [[ $n -eq 1 ]] && grep -q '^skv: ' "$T/err" || fail_check "error is not one 'skv: ...' line (${1:-})"
}
expect_no_file() { checks=$((checks + 1)); [[ ! -e $1 ]] || fail_check "file $1 should not exist (${2:-})"; }
# No temporary left behind in a directory.
expect_no_tmp() { checks=$((checks + 1)); ! ls "$1" 2>/dev/null | grep -q 'skv-tmp' || fail_check "temp file left in $1"; }

finish() {
  if [[ $failures -gt 0 ]]; then echo "$failures of $checks checks failed" >&2; exit 1; fi
  echo "$checks checks passed"
  exit 0
}
