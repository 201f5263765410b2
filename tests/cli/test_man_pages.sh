# Every long option a subcommand's --help lists is documented in its man page.
source "$(dirname "$0")/lib.sh" "$@"

# "eval ppl" / "eval niah": nested subcommands documented in the parent's page.
for sub in probe score encode decode inspect bench dump eval "eval ppl" "eval niah"; do
  page="$SRC/man/skv-${sub%% *}.1"
  checks=$((checks + 1))
  if [[ ! -f $page ]]; then echo "FAIL: missing $page" >&2; failures=$((failures + 1)); continue; fi
  # shellcheck disable=SC2086  # split "eval ppl" into its words
  "$SKV" $sub --help >"$T/help" 2>&1
  for opt in $(grep -oE -- '--[a-z][a-z0-9-]+' "$T/help" | sort -u); do
    [[ $opt == --help ]] && continue
    checks=$((checks + 1))
    # roff escapes '-' as '\-'; accept either spelling.
    esc=$(printf '%s' "$opt" | sed 's/-/\\-/g')
    grep -qF -- "$opt" "$page" || grep -qF -- "$esc" "$page" ||
      { echo "FAIL: $sub: $opt is in --help but not in man/skv-${sub%% *}.1" >&2; failures=$((failures + 1)); }
  done
done
checks=$((checks + 1))
[[ -f $SRC/man/skv.1 && -f $SRC/man/skv.5 ]] || { echo "FAIL: man/skv.1 or man/skv.5 missing" >&2; failures=$((failures + 1)); }
finish
