# Malformed inputs: each is one line on stderr naming the file, exit 1, and no output left behind.
source "$(dirname "$0")/lib.sh" "$@"

# st FILE HEADER_JSON DATA_BYTES: writes a safetensors file (u64 LE header length, header, data).
st() {
  local LC_ALL=C  # ${#2} in bytes
  local n=${#2}
  { printf "$(printf '\\x%02x\\x%02x\\x%02x\\x%02x\\x00\\x00\\x00\\x00' \
      $((n & 255)) $(((n >> 8) & 255)) $(((n >> 16) & 255)) $(((n >> 24) & 255)))"
    printf '%s' "$2"
    head -c "$3" /dev/zero; } >"$1"
}
ok_header='{"layers.0.k":{"dtype":"F16","shape":[1,2,4],"data_offsets":[0,16]},"layers.0.v":{"dtype":"F16","shape":[1,2,4],"data_offsets":[16,32]}}'
st "$T/good.safetensors" "$ok_header" 32
run inspect "$T/good.safetensors"; expect_rc 0 "well-formed dump"

# Truncated: the data section is shorter than the offsets say.
st "$T/trunc.safetensors" "$ok_header" 20
# Header length larger than the file.
printf '\xff\xff\x00\x00\x00\x00\x00\x00{}' >"$T/hlen.safetensors"
# Overlapping offsets.
st "$T/overlap.safetensors" '{"layers.0.k":{"dtype":"F16","shape":[1,2,4],"data_offsets":[0,16]},"layers.0.v":{"dtype":"F16","shape":[1,2,4],"data_offsets":[8,24]}}' 24
# Shape x dtype size != byte span.
st "$T/shape.safetensors" '{"layers.0.k":{"dtype":"F16","shape":[1,2,5],"data_offsets":[0,16]},"layers.0.v":{"dtype":"F16","shape":[1,2,4],"data_offsets":[16,32]}}' 32
# Unknown dtype.
st "$T/dtype.safetensors" '{"layers.0.k":{"dtype":"F8_E9M9","shape":[1,2,4],"data_offsets":[0,16]},"layers.0.v":{"dtype":"F16","shape":[1,2,4],"data_offsets":[16,32]}}' 32
# Not JSON at all.
st "$T/json.safetensors" '{"layers.0.k":' 0
# K without V.
st "$T/nov.safetensors" '{"layers.0.k":{"dtype":"F16","shape":[1,2,4],"data_offsets":[0,16]}}' 16

# A UTF-8 byte-order mark before the header; a key repeated inside a tensor entry; a near-miss
# KV name (would be silently left out); a tensor name holding a newline (the error stays one line).
st "$T/bom.safetensors" $'\xef\xbb\xbf'"$ok_header" 32
st "$T/dupkey.safetensors" '{"layers.0.k":{"dtype":"F16","dtype":"F32","shape":[1,2,4],"data_offsets":[0,16]},"layers.0.v":{"dtype":"F16","shape":[1,2,4],"data_offsets":[16,32]}}' 32
st "$T/nearmiss.safetensors" '{"layers.0.k":{"dtype":"F16","shape":[1,2,4],"data_offsets":[0,16]},"layers.0.v":{"dtype":"F16","shape":[1,2,4],"data_offsets":[16,32]},"layers.01.k":{"dtype":"F16","shape":[1,2,4],"data_offsets":[32,48]}}' 48
st "$T/newline.safetensors" '{"layers.0.k":{"dtype":"F16","shape":[1,2,4],"data_offsets":[0,16]},"layers.0.v":{"dtype":"F16","shape":[1,2,4],"data_offsets":[16,32]},"bad\nname":{"dtype":"F16","shape":[1,2,5],"data_offsets":[32,48]}}' 48

for f in trunc hlen overlap shape dtype json nov bom dupkey nearmiss newline; do
  run inspect "$T/$f.safetensors"; expect_rc 1 "inspect $f"; expect_one_line_error "inspect $f"
  expect_err "$f.safetensors" "error names the file ($f)"
  run encode "$T/$f.safetensors" -o "$T/$f.skv"; expect_rc 1 "encode $f"; expect_one_line_error "encode $f"
  expect_no_file "$T/$f.skv" "encode $f"
done
run inspect "$T/bom.safetensors"; expect_err 'header is not valid JSON: it starts with a UTF-8 byte-order mark' "BOM"
run inspect "$T/dupkey.safetensors"; expect_err "header is not valid JSON: duplicate key 'dtype'" "nested duplicate key"
run inspect "$T/nearmiss.safetensors"; expect_err "tensor 'layers.01.k' is named like a KV tensor" "near-miss name"
run inspect "$T/newline.safetensors"; expect_err "tensor 'bad.x0aname'" "newline escaped"
run inspect "$T/missing.safetensors"; expect_rc 1 "missing file"; expect_one_line_error "missing file"

# A container cut short, or with one byte changed, is rejected by decode, leaving no output.
run encode "$T/good.safetensors" --policy int8 -o "$T/good.skv"; expect_rc 0 "encode good"
size=$(stat -c %s "$T/good.skv")
head -c $((size - 100)) "$T/good.skv" >"$T/cut.skv"
run decode "$T/cut.skv" -o "$T/cut.out"; expect_rc 1 "truncated container"; expect_one_line_error "truncated container"
expect_no_file "$T/cut.out" "truncated container"
cp "$T/good.skv" "$T/flip.skv"
printf '\x5a' | dd of="$T/flip.skv" bs=1 seek=700 conv=notrunc status=none
run decode "$T/flip.skv" -o "$T/flip.out"; expect_rc 1 "corrupted container"; expect_one_line_error "corrupted container"
expect_no_file "$T/flip.out" "corrupted container"
expect_no_tmp "$T"
finish
