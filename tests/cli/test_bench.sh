# skv bench on small inputs: JSON keys, CSV values that make sense, baselines, errors.
source "$(dirname "$0")/lib.sh" "$@"

check() { checks=$((checks + 1)); "$@" || fail_check "$*"; }
# csv_check AWK-CONDITION WHAT: the condition holds on every data line of $T/b.csv
# (columns: 1 source 2 policy 3 budget 4 device 5 threads 6 achieved 7 nominal 8 bytes 9 enc_gbps
#  10 dec_gbps 11 plan_ms 12 first_byte_ms 13 attn_err 14 top1 15 break_even 16 link 17 raw_ms
#  18 skv_ms 19 seq_ms 20 saving_pct 21 saving_codec_only_pct 22 error).
csv_check() {
  checks=$((checks + 1))
  awk -F, -v what="$2" "NR > 1 && !($1) { print \"FAIL: \" what \": \" \$0 > \"/dev/stderr\"; bad = 1 } END { exit bad }" "$T/b.csv" ||
    failures=$((failures + 1))
}

run bench --synthetic tiny:64 --needle --save-dump "$T/d.safetensors"; expect_rc 0 "make a dump"
expect_err 'wrote synthetic tiny:64'
run bench --synthetic tiny:64 --save-dump "$T/d.safetensors"; expect_rc 1 "--save-dump refuses to overwrite"
expect_one_line_error
run bench --synthetic 2x2x64:64 --window 0 --dtype bf16 --save-dump "$T/noq.safetensors"; expect_rc 0 "dump without queries"

P=raw,zstd-1,zstd-3,spectrum,pdtrim,snapkv,int8,int4
run bench "$T/d.safetensors" --runs 1 --threads 1 --policy $P --budget 0.3,0.5 --link 10,25 --json --csv "$T/b.csv"
expect_rc 0 "bench --json --csv"
for key in rows sources links_gbps source policy budget device achieved_budget nominal_budget encode_gbps \
           decode_gbps plan_ms first_byte_ms attn_rel_err top1_agree needle_top1 links gbps raw_ms skv_ms seq_ms \
           saving_pct saving_codec_only_pct codec_only_ms break_even_gbps; do
  expect_out "\"$key\":" "bench --json key $key"
done
# 5 unbudgeted rows + 3 budgeted policies x 2 budgets, 2 links each.
check test "$(grep -c '"policy":' "$T/out")" -eq 11
check test "$(wc -l <"$T/b.csv")" -eq 23
csv_check '$22 == ""' "no row failed"
csv_check '$3 == "" || $6 <= $3 + 1e-9' "achieved budget within the budget"
csv_check '$2 == "raw" || ($9 > 0 && $10 > 0)' "codec rows have throughput"
csv_check '$13 >= 0 && $14 >= 0 && $14 <= 1' "quality in range"
csv_check '$2 != "raw" || ($6 == 1 && $20 == 0)' "raw row: budget 1, no saving"
csv_check '$2 !~ /^zstd/ || ($6 < 1 && $13 == 0 && $14 == 1)' "zstd: smaller, lossless"
csv_check '$2 !~ /^(int8|int4|spectrum|pdtrim|snapkv)$/ || ($13 > 0)' "lossy rows have an error"
csv_check '$17 > 0 && $18 > 0 && $19 >= $18 - 1e-9' "pipelined never slower than sequential"
csv_check '$2 !~ /^(int8|int4|spectrum|pdtrim|snapkv)$/ || ($11 > 0 && $12 >= $11 && $21 > $20)' \
  "skv rows: the plan costs time, the first byte comes after it, and the saving counts it"
int8=$(awk -F, '$2 == "int8" { print $6; exit }' "$T/b.csv"); int4=$(awk -F, '$2 == "int4" { print $6; exit }' "$T/b.csv")
check awk -v a="$int4" -v b="$int8" 'BEGIN { exit !(a > 0 && a < b && b < 0.6) }'

run bench "$T/d.safetensors" --runs 1 --policy spectrum --budget 0.5 --link 25; expect_rc 0 "table"
expect_out 'save@25G'; expect_out '^spectrum +0.500'
run bench "$T/noq.safetensors" --runs 1 --policy int8 --json; expect_rc 0 "no queries"
checks=$((checks + 1)); ! grep -q '"attn_rel_err"' "$T/out" || fail_check "quality without queries"
expect_out '"dtype": "BF16"'
run bench --synthetic 2x2x64:48 --dtype f32 --runs 1 --policy zstd-1,int4 --json; expect_rc 0 "synthetic f32"
expect_out '"policy": "int4"'
run bench "$T/d.safetensors" --runs 1 --policy pdtrim --budget 0.0001 --json; expect_rc 0 "infeasible budget is a row error"
expect_out '"error":'
run bench "$T/d.safetensors" --runs 1 --policy int8 --csv "$T/b.csv"; expect_rc 1 "--csv refuses to overwrite"
expect_one_line_error

# Errors: one line, before any work.
for bad in 0 -5 abc 25Mbps inf; do
  run bench "$T/d.safetensors" --link "10,$bad"; expect_rc 1 "--link '$bad'"; expect_one_line_error "--link '$bad'"
  expect_err 'link'
done
run bench "$T/d.safetensors" --policy frob; expect_rc 1 "unknown policy"; expect_one_line_error
run bench "$T/d.safetensors" --policy zstd-99; expect_rc 1 "bad zstd level"; expect_one_line_error
run bench "$T/d.safetensors" --budget 1.5; expect_rc 1 "budget out of range"; expect_one_line_error
run bench "$T/d.safetensors" --runs 0; expect_rc 1 "--runs 0"; expect_one_line_error
run bench "$T/d.safetensors" --device cuda; expect_rc 1 "--device cuda"; expect_one_line_error
expect_err 'CUDA path not available: '
run bench "$T/d.safetensors" --device auto --runs 1 --policy int8; expect_rc 0 "--device auto falls back"
expect_err 'measuring on cpu'
run bench --save-dump "$T/x.safetensors"; expect_rc 1 "--save-dump without --synthetic"; expect_one_line_error
run bench --synthetic nosuchmodel:64; expect_rc 1 "unknown synthetic shape"; expect_one_line_error
run bench --device gpu; expect_rc 2 "bad --device value"
finish
