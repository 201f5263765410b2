# Per-layer and scaled RoPE in a dump's metadata: inspect shows it, prerope uses it, and RoPE skv
# cannot describe makes an explicit prerope a one-line error naming the file and the cause.
source "$(dirname "$0")/lib.sh" "$@"

# st FILE HEADER_JSON DATA_BYTES: writes a safetensors file (u64 LE header length, header, data).
st() {
  local n=${#2}
  { printf "$(printf '\\x%02x\\x%02x\\x%02x\\x%02x\\x00\\x00\\x00\\x00' \
      $((n & 255)) $(((n >> 8) & 255)) $(((n >> 16) & 255)) $(((n >> 24) & 255)))"
    printf '%s' "$2"
    head -c "$3" /dev/zero; } >"$1"
}
# Two layers of [1 head, 2 tokens, 4 dims] F16, and METADATA_JSON.
dump() {
  st "$1" '{"__metadata__":'"$2"',"layers.0.k":{"dtype":"F16","shape":[1,2,4],"data_offsets":[0,16]},"layers.0.v":{"dtype":"F16","shape":[1,2,4],"data_offsets":[16,32]},"layers.1.k":{"dtype":"F16","shape":[1,2,4],"data_offsets":[32,48]},"layers.1.v":{"dtype":"F16","shape":[1,2,4],"data_offsets":[48,64]}}' 64
}

dump "$T/gemma.safetensors" '{"rope_theta":"1000000","rope_local_base_freq":"10000","layer_types":"[\"sliding_attention\", \"full_attention\"]","rope_style":"neox"}'
run inspect "$T/gemma.safetensors"; expect_rc 0 "inspect per-layer theta"
expect_out '^rope: theta 10000 \(layers 0\), 1000000 \(layers 1\) style neox offset 0$' "per-layer rope line"
run encode "$T/gemma.safetensors" --policy int8 --key-transform prerope -o "$T/gemma.skv"; expect_rc 0 "encode per-layer prerope"
run inspect "$T/gemma.skv"; expect_rc 0 "inspect container"
expect_out '^rope: theta 10000 \(layers 0\), 1000000 \(layers 1\) style neox offset 0$' "container rope line"

dump "$T/llama3.safetensors" '{"rope_theta":"500000","rope_scaling":"{\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 8192}","rope_style":"gptj"}'
run encode "$T/llama3.safetensors" --policy int8 --key-transform prerope -o "$T/llama3.skv"; expect_rc 0 "encode llama3 prerope"
run inspect "$T/llama3.skv"; expect_rc 0 "inspect llama3 container"
expect_out '^rope: theta 500000 scaling llama3 factor 8 low_freq_factor 1 high_freq_factor 4 original_max_position_embeddings 8192 style gptj' "scaling in the rope line"
run decode "$T/llama3.skv" -o "$T/llama3.out.safetensors"; expect_rc 0 "decode llama3"

dump "$T/yarn.safetensors" '{"rope_theta":"10000","rope_scaling":"{\"rope_type\": \"yarn\", \"factor\": 4}","rope_style":"neox"}'
run inspect "$T/yarn.safetensors"; expect_rc 0 "inspect unsupported rope"
expect_out 'prerope unavailable: rope_scaling type .yarn.' "inspect says prerope is unavailable"
run encode "$T/yarn.safetensors" --policy int8 --key-transform prerope -o "$T/yarn.skv"; expect_rc 1 "explicit prerope with yarn"
expect_one_line_error "explicit prerope with yarn"
expect_err 'yarn\.safetensors' "error names the file"
expect_err "rope_scaling type 'yarn'" "error names the cause"
expect_no_file "$T/yarn.skv" "no output"
run encode "$T/yarn.safetensors" --policy int8 -o "$T/yarn.skv"; expect_rc 0 "automatic transform without prerope"

dump "$T/badlist.safetensors" '{"rope_theta":"[10000, 1e6, 1e6]","rope_style":"neox"}'
run inspect "$T/badlist.safetensors"; expect_rc 1 "theta list of the wrong length"
expect_one_line_error "theta list of the wrong length"; expect_err 'badlist\.safetensors.*rope_theta' "names file and key"
finish
