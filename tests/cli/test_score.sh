# skv score: scores and tiers of a policy, -o driving encode --tiers, --compare quality metrics.
source "$(dirname "$0")/lib.sh" "$@"

# json_num KEY: the first numeric value of "KEY" in $T/out.
json_num() { grep -oE "\"$1\": -?[0-9.eE+-]+" "$T/out" | head -1 | awk '{print $2}'; }
# le A B: A <= B numerically.
le() { [[ -n $1 && -n $2 ]] && awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 <= b + 0) }'; }
check() { checks=$((checks + 1)); "$@" || fail_check "$*"; }

run bench --synthetic tiny:64 --needle --save-dump "$T/d.safetensors"; expect_rc 0 "make a dump with queries"
run bench --synthetic 2x2x64:64 --window 0 --save-dump "$T/noq.safetensors"; expect_rc 0 "make a dump without queries"
run bench --synthetic 2x2x64:32 --save-dump "$T/short.safetensors"; expect_rc 0 "make a shorter dump"

# Summary and JSON.
run score "$T/d.safetensors" --budget 0.5; expect_rc 0 "score summary"
expect_out 'scorer +attention'; expect_out 'pinned +4 tokens: 0-3'; expect_out 'key transform'
expect_out 'predicted +budget'; expect_out 'top 10 tokens'
run score "$T/d.safetensors" --budget 0.5 --json; expect_rc 0 "score --json"
for key in input scorer pinned pinned_tokens top_tokens policy budget key_transform key_error \
           predicted_budget nominal_budget tier_shares plan; do expect_out "\"$key\":" "score --json key $key"; done
expect_out '"scorer": "attention"'
check le "$(json_num predicted_budget)" 0.5
run score "$T/noq.safetensors" --json; expect_rc 0 "score without queries or budget"
expect_out '"scorer": "keynorm"'
checks=$((checks + 1)); ! grep -q '"tier_shares"' "$T/out" || fail_check "tiers without a budget"
run score "$T/noq.safetensors" --scorer attention; expect_rc 1 "attention scoring without queries"; expect_one_line_error

# -o drives encode --tiers: same tiers, hence the same container size as the policy's own encode.
run score "$T/d.safetensors" --budget 0.4 -o "$T/plan.safetensors"; expect_rc 0 "score -o"
run score "$T/d.safetensors" --budget 0.4 -o "$T/plan.safetensors"; expect_rc 1 "score -o refuses to overwrite"
run encode "$T/d.safetensors" --tiers "$T/plan.safetensors" -o "$T/t.skv" --json; expect_rc 0 "encode --tiers from score -o"
tiers_bytes=$(json_num bytes)
run encode "$T/d.safetensors" --budget 0.4 -o "$T/p.skv" --json; expect_rc 0 "encode with the policy"
check test "$tiers_bytes" = "$(json_num bytes)"
run inspect "$T/t.skv" --json; expect_rc 0 "inspect the tiers container"
check le "$(json_num achieved_budget)" 0.4
# External scores from score -o feed the policy back.
run encode "$T/d.safetensors" --scores "$T/plan.safetensors" --budget 0.5 -o "$T/s.skv"; expect_rc 0 "encode --scores from score -o"
run score "$T/d.safetensors" --budget 0.5 --granularity layer -o "$T/layer.safetensors" --json
expect_rc 0 "per-layer scores"; expect_out '"score_rows": 2'

# --compare.
run score --compare "$T/d.safetensors" "$T/d.safetensors" --json; expect_rc 0 "compare identical"
expect_out '"attn_rel_err": 0.0,'; expect_out '"top1_agree": 1.0'; expect_out '"needle_top1":'
run decode "$T/t.skv" -o "$T/back.safetensors"; expect_rc 0 "decode"
run score --compare "$T/d.safetensors" "$T/back.safetensors" --json; expect_rc 0 "compare decoded"
err=$(json_num attn_rel_err); top1=$(json_num top1_agree)
check awk -v e="$err" 'BEGIN { exit !(e > 0 && e < 1) }'
check le "$top1" 1
run score --compare "$T/d.safetensors" "$T/back.safetensors"; expect_rc 0 "compare, human"
expect_out 'top-1 agreement'; expect_out 'needle top-1 share'
# --holdout half: plan on the fitting half of the window, measure on the other half as well.
run score "$T/d.safetensors" --budget 0.4 --holdout half --json; expect_rc 0 "score --holdout half"
expect_out '"holdout": "half"'; expect_out '"planner_window": 16,'
run score "$T/d.safetensors" --budget 0.4 --holdout half -o "$T/half.safetensors"; expect_rc 0 "score --holdout half -o"
expect_out 'holdout +half: planned on 16 of the 32 window queries'
checks=$((checks + 1))  # the safetensors header (JSON) records the holdout
head -c 4096 "$T/half.safetensors" | grep -aq '"skv_holdout":"half"' || fail_check "skv_holdout in the plan's metadata"
run encode "$T/d.safetensors" --tiers "$T/half.safetensors" -o "$T/h.skv"; expect_rc 0 "encode the half plan"
run decode "$T/h.skv" -o "$T/hback.safetensors"; expect_rc 0 "decode the half plan"
run score --compare "$T/d.safetensors" "$T/hback.safetensors" --holdout half --json; expect_rc 0 "compare --holdout half"
expect_out '"in_sample": \{'; expect_out '"held_out": \{'; expect_out '"holdout": "half"'
checks=$((checks + 1))
awk '/"queries":/ { gsub(/,/, "", $2); q[n++] = $2 } END { exit !(n == 3 && q[0] + q[1] == q[2] && q[0] == q[1]) }' "$T/out" ||
  fail_check "held-out + in-sample queries = all queries"
run score --compare "$T/d.safetensors" "$T/hback.safetensors" --holdout half; expect_rc 0 "compare --holdout half, human"
expect_out 'all +in-sample +held-out'; expect_out 'in-sample = the 16 window positions'
run score --compare "$T/d.safetensors" "$T/d.safetensors" --holdout half --json; expect_rc 0 "compare identical, halves"
checks=$((checks + 1)); [[ $(grep -c '"attn_rel_err": 0.0,' "$T/out") -eq 3 ]] || fail_check "zero error in every half"
run score "$T/noq.safetensors" --budget 0.5 --holdout half; expect_rc 1 "holdout without queries"; expect_one_line_error
run score --compare "$T/d.safetensors" "$T/d.safetensors" --holdout third; expect_rc 2 "--holdout third"

run score --compare "$T/noq.safetensors" "$T/noq.safetensors"; expect_rc 1 "original without queries"
expect_one_line_error; expect_err 'queries'
run score --compare "$T/d.safetensors" "$T/short.safetensors"; expect_rc 1 "shape mismatch"
expect_one_line_error; expect_err 'differs'
run score --compare "$T/d.safetensors"; expect_rc 2 "--compare needs two files"
run score "$T/d.safetensors" --compare "$T/d.safetensors" "$T/d.safetensors"; expect_rc 1 "DUMP and --compare"
expect_one_line_error
run score; expect_rc 1 "no dump"; expect_one_line_error
run score "$T/missing.safetensors"; expect_rc 1 "missing dump"; expect_one_line_error
finish
