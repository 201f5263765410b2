# skv dump / eval / probe on the real sample model; skipped (77) when the model is absent
# (samples/fetch-model gets it). Inputs stay tiny so the whole file runs in seconds.
source "$(dirname "$0")/lib.sh" "$@"

MODEL="$SRC/samples/models/SmolLM2-135M-Instruct.Q4_1.gguf"

# Errors that need no model first.
run dump --model "$T/no-such.gguf" --prompt "hi" -o "$T/x.safetensors"
expect_rc 1 "missing model"; expect_one_line_error "missing model"; expect_err 'no-such\.gguf'
expect_no_file "$T/x.safetensors" "missing model"
run dump --model "$T/no-such.gguf" -o "$T/x.safetensors"
expect_rc 2 "dump without --text or --prompt"
run eval ppl --model "$T/no-such.gguf" --text /dev/null --policy spectrum
expect_rc 1 "budgeted policy without --budget"; expect_one_line_error "no budget"; expect_err 'needs --budget'
run probe
expect_rc 1 "probe with neither model nor dump"; expect_one_line_error "probe without input"

if [[ ! -f $MODEL ]]; then
  echo "skipped: $MODEL is absent (run samples/fetch-model)"
  exit 77
fi

PROMPT="The quick brown fox jumps over the lazy dog. It was a bright cold day in April, and the clocks were striking thirteen."
run dump --model "$MODEL" --prompt "$PROMPT" --window 8 -o "$T/p.safetensors"
expect_rc 0 "dump a short prompt"
run inspect --json --brief "$T/p.safetensors"
expect_rc 0 "inspect the dump"
checks=$((checks + 1))
python_free_check() {
  # Shape and metadata from inspect's JSON (no Python: grep the pretty-printed keys).
  local j="$T/out"
  grep -q '"layers": 30' "$j" && grep -q '"kv_heads": 3' "$j" && grep -q '"head_dim": 64' "$j" &&
    grep -q '"q_heads": 9' "$j" && grep -q '"window": 8' "$j" && grep -q '"dtype": "F16"' "$j" &&
    grep -q '"name": "layers.29.q"' "$j" && grep -q '"rope_style": "gptj"' "$j" &&
    grep -q '"rope_theta": "100000"' "$j" && grep -q '"architecture": "llama"' "$j" &&
    grep -q '"position_offset": "0"' "$j" && grep -q '"token_ids": "[0-9,]*"' "$j"
}
python_free_check || fail_check "dump tensors/metadata"
tokens=$(grep -oE '"tokens": [0-9]+' "$T/out" | head -1 | grep -oE '[0-9]+$')
ids=$(grep -oE '"token_ids": "[0-9,]*"' "$T/out" | grep -oE '[0-9,]+' | tr ',' '\n' | wc -l)
checks=$((checks + 1))
[[ -n $tokens && $tokens -gt 10 && $tokens -eq $ids ]] || fail_check "token count $tokens vs $ids token ids"

# Refuses to overwrite without -f, before loading the model; -f overwrites.
before=$(cksum <"$T/p.safetensors")
run dump --model "$MODEL" --prompt "other text" -o "$T/p.safetensors"
expect_rc 1 "overwrite refused"; expect_one_line_error "overwrite"; expect_err 'already exists'
checks=$((checks + 1)); [[ $(cksum <"$T/p.safetensors") == "$before" ]] || fail_check "refused dump changed the file"
run dump --model "$MODEL" --prompt "other text" -o "$T/p.safetensors" -f
expect_rc 0 "overwrite with -f"; expect_no_tmp "$T"

# --tokens longer than the text is an error naming the text.
run dump --model "$MODEL" --prompt "two words" --tokens 50 -o "$T/long.safetensors"
expect_rc 1 "--tokens beyond the text"; expect_one_line_error "--tokens"; expect_no_file "$T/long.safetensors"

# Needle dump: span recorded and inside the tokens.
printf '%s\n' "$PROMPT" >"$T/filler.txt"
run dump --model "$MODEL" --text "$T/filler.txt" --tokens 96 --needle --needle-depth 0.5 --window 4 --json -o "$T/n.safetensors"
expect_rc 0 "needle dump"; expect_out '"needle_start": "[0-9]+"'; expect_out '"needle_len": "[0-9]+"'
expect_out '"tokens": 96'

# eval ppl: the lossless policy gives exactly the baseline, lossy ones do not (and tiers add up).
head -c 3000 /usr/share/common-licenses/GPL-3 >"$T/prose.txt" 2>/dev/null || cp "$SRC/README.md" "$T/prose.txt"
run eval ppl --model "$MODEL" --text "$T/prose.txt" --context 48 --target 16 --policy fp16,int4,snapkv --budget 0.5
expect_rc 0 "eval ppl"
expect_out '^fp16 +- +1\.0[0-9]* +0?1\.0+ +[0-9.]+ +\+0\.00 '
expect_out '^snapkv +0\.50 '
run eval ppl --model "$MODEL" --text "$T/prose.txt" --context 48 --target 16 --policy fp16 --json
expect_rc 0 "eval ppl --json"
expect_out '"delta_ppl_pct": 0\.0,?$'; expect_out '"baseline_ppl"'
run eval ppl --model "$MODEL" --text "$T/prose.txt" --context 4000 --target 16 --policy fp16
expect_rc 1 "text too short"; expect_one_line_error "text too short"; expect_err 'need'

# Bootstrap intervals: the lossless policy's interval is exactly zero wide; a lossy one's contains
# its point estimate; the same seed gives the same numbers.
run eval ppl --model "$MODEL" --text "$T/prose.txt" --context 48 --target 16 --policy fp16,int4 --bootstrap 200 --seed 3
expect_rc 0 "eval ppl with a bootstrap"
expect_out '^fp16 +- +1\.0[0-9]* +0?1\.0+ +[0-9.]+ +\+0\.00 +\+0\.00 +\+0\.00 '
checks=$((checks + 1))
awk '$1 == "int4" { if (!($7 + 0 <= $6 + 0 && $6 + 0 <= $8 + 0 && $7 < $8)) bad = 1; seen = 1 } END { exit !(seen && !bad) }' "$T/out" ||
  fail_check "int4 interval does not bracket its dPPL%"
cp "$T/out" "$T/boot1"
run eval ppl --model "$MODEL" --text "$T/prose.txt" --context 48 --target 16 --policy fp16,int4 --bootstrap 200 --seed 3
checks=$((checks + 1)); cmp -s "$T/out" "$T/boot1" || fail_check "same seed, different output"

# Several texts (comma-separated and repeated): one table per text, then the pooled means.
tail -c 3000 /usr/share/common-licenses/GPL-3 >"$T/prose2.txt" 2>/dev/null || cp "$SRC/man/skv.1" "$T/prose2.txt"
cp "$SRC/README.md" "$T/prose3.txt"
run eval ppl --model "$MODEL" --text "$T/prose.txt,$T/prose2.txt" --text "$T/prose3.txt" --context 48 --target 16 \
  --policy fp16,int4 --bootstrap 100 --json
expect_rc 0 "eval ppl over three texts"
expect_out '"texts": \['; expect_out '"pooled": \{'; expect_out '"ci_lo":'; expect_out '"ci_hi":'; expect_out '"mean":'
checks=$((checks + 1)); ! grep -q '"baseline_ppl": [0-9.]*,$' <(grep -v '^    ' "$T/out") || fail_check "single-text keys with three texts"
checks=$((checks + 1))
[[ $(grep -c '"text": ' "$T/out") -eq 3 ]] || fail_check "three texts in the JSON"
run eval ppl --model "$MODEL" --text "$T/prose.txt,$T/prose2.txt" --context 48 --target 16 --policy fp16,int4
expect_rc 0 "eval ppl over two texts, human"
expect_out '^pooled over 2 texts'; expect_out '^int4 +- +[-+][0-9.]+ +[-+][0-9.]+ +[-+][0-9.]+$'
run eval ppl --model "$MODEL" --text "$T/prose.txt,$T/missing.txt" --context 48 --target 16 --policy fp16
expect_rc 1 "a missing second text"; expect_one_line_error "missing text"; expect_err 'missing\.txt'

# --holdout half: the planner sees half the window; in-sample and held-out attention errors shown.
run eval ppl --model "$MODEL" --text "$T/prose.txt" --context 48 --target 16 --window 8 --policy fp16,spectrum \
  --budget 0.5 --holdout half --json
expect_rc 0 "eval ppl --holdout half"
expect_out '"holdout": "half"'; expect_out '"planner_window": 4,?$'; expect_out '"attn_in_sample": \{'
expect_out '"attn_held_out": \{'
run eval ppl --model "$MODEL" --text "$T/prose.txt" --context 48 --target 16 --window 8 --policy spectrum \
  --budget 0.5 --holdout half
expect_rc 0 "eval ppl --holdout half, human"; expect_out 'attn_fit +attn_held'; expect_out '^holdout half'
run eval ppl --model "$MODEL" --text "$T/prose.txt" --context 48 --target 16 --window 1 --policy fp16 --holdout half
expect_rc 1 "--holdout half with a window of 1"; expect_one_line_error "holdout window"; expect_err 'at least 2'
run eval ppl --model "$MODEL" --text "$T/prose.txt" --policy fp16 --holdout third
expect_rc 2 "--holdout third"

# Cache-only probe on the needle dump: labelled as the heuristic, writes the file encode reads.
run probe "$T/n.safetensors" -o "$T/probe.json" --json
expect_rc 0 "cache-only probe"; expect_out '"kind": "cache-only"'; expect_out '"int4_safe": (true|false)'
checks=$((checks + 1)); grep -q '"int4_safe"' "$T/probe.json" || fail_check "probe result file"
run encode "$T/n.safetensors" --budget 0.5 --probe "$T/probe.json" -o "$T/n.skv"
expect_rc 0 "encode reads the probe result"
run probe "$T/n.safetensors" -o "$T/probe.json"
expect_rc 1 "probe result overwrite refused"; expect_one_line_error "probe overwrite"
finish
