# Issue 4's acceptance on the bundled real dumps (SmolLM2-135M, with window queries): at b = 0.5
# spectrum's attention-output error is at most 1/5 of pdtrim's with top-1 agreement >= 0.95; at
# b = 0.3 it beats pdtrim and snapkv on both error and top-1 agreement.
source "$(dirname "$0")/lib.sh" "$@"

for dump in "$SRC"/samples/smollm2-135m-512.safetensors "$SRC"/samples/smollm2-135m-256-needle.safetensors; do
  name=$(basename "$dump")
  run bench "$dump" --runs 1 --threads 2 --policy spectrum,pdtrim,snapkv --budget 0.3,0.5 --link 25 --csv "$T/q.csv" -f
  expect_rc 0 "bench $name"
  # CSV columns: 2 policy, 3 budget, 13 attn_err, 14 top1.
  val() { awk -F, -v p="$1" -v b="$2" -v c="$3" 'NR > 1 && $2 == p && $3 + 0 == b + 0 { print $c; exit }' "$T/q.csv"; }
  holds() {  # holds AWK-EXPR WHAT
    checks=$((checks + 1))
    awk "BEGIN { exit !($1) }" || fail_check "$name: $2"
  }
  holds "$(val spectrum 0.5 13) <= 0.2 * $(val pdtrim 0.5 13)" "b=0.5 error <= 1/5 of pdtrim's"
  holds "$(val spectrum 0.5 14) >= 0.95" "b=0.5 top-1 >= 0.95"
  for base in pdtrim snapkv; do
    holds "$(val spectrum 0.3 13) < $(val $base 0.3 13)" "b=0.3 error below $base"
    holds "$(val spectrum 0.3 14) > $(val $base 0.3 14)" "b=0.3 top-1 above $base"
  done
done
finish
