# Hostile inputs with valid checksums (issue 15; built by tests/tools/skv_hostile): one line on
# stderr naming the file and the field, exit 1, no output file, and no allocation of what the
# file merely claims (peak RSS checked with /usr/bin/time when it is installed).
source "$(dirname "$0")/lib.sh" "$@"
H=${SKV_HOSTILE:-}
[[ -x $H ]] || { echo "SKIP: SKV_HOSTILE (tests/tools/skv_hostile) not set"; exit 77; }

# rejected CASE_FILE PATTERN CMD...: the command fails with one line matching PATTERN.
rejected() {
  local what=$1 pat=$2; shift 2
  run "$@"; expect_rc 1 "$what"; expect_one_line_error "$what"; expect_err "$pat" "$what"
}
# small_rss WHAT CMD...: the command's peak RSS stays under 200 MiB.
small_rss() {
  local what=$1; shift
  [[ -x /usr/bin/time ]] || return 0
  checks=$((checks + 1))
  /usr/bin/time -f %M -o "$T/rss" "$SKV" "$@" >/dev/null 2>&1
  local kb; kb=$(tail -1 "$T/rss")
  [[ $kb -lt 204800 ]] || fail_check "$what: peak RSS ${kb} KiB"
}

"$H" base "$T/base.skv"
run decode "$T/base.skv" -o "$T/base.safetensors"; expect_rc 0 "base container decodes"

# A safetensors header whose shape nests 100000 deep (was SIGSEGV).
"$H" deep-shape "$T/deep.safetensors"
pat='deep\.safetensors: header is not valid JSON: nested deeper than 64'
rejected "inspect deep shape" "$pat" inspect "$T/deep.safetensors"
rejected "encode deep shape" "$pat" encode "$T/deep.safetensors" -o "$T/deep.skv"
expect_no_file "$T/deep.skv" "deep shape"

# Amplification: each claims gigabytes in a few KB.
"$H" layer-4g "$T/layer4g.skv"
"$H" rope-2p24 "$T/rope.skv"
"$H" zstd-4g "$T/zstd.skv"
rejected "4 GiB layer claim" 'layer4g\.skv: input ends inside section LAYR' decode "$T/layer4g.skv" -o "$T/l.out" --max-output-bytes 1T
expect_no_file "$T/l.out" "4 GiB layer claim"
small_rss "4 GiB layer claim" decode "$T/layer4g.skv" -o "$T/l.out" --max-output-bytes 1T
small_rss "4 GiB layer claim, piped" decode - -o "$T/l.out" --max-output-bytes 1T <"$T/layer4g.skv"
run decode - -o "$T/l.out" --max-output-bytes 1T < <(cat "$T/layer4g.skv"); expect_rc 1 "4 GiB layer claim from a pipe"
expect_err 'input ends inside section LAYR' "4 GiB layer claim from a pipe"
rejected "2^24-token RoPE" 'rope\.skv: layer 0 stream 0: holds 16 bytes, tier maps imply 16777216' inspect "$T/rope.skv"
small_rss "2^24-token RoPE" inspect "$T/rope.skv"
rejected "4 GiB zstd claim" 'zstd\.skv: layer 0 stream 3: zstd frame does not decode to its size' inspect "$T/zstd.skv"
small_rss "4 GiB zstd claim" inspect "$T/zstd.skv"

# The decoded size is bounded before any output exists.
rejected "default output cap" 'rope\.skv: decodes to [0-9]+ bytes, more than the [0-9]+ allowed by the default --max-output-bytes \(64 x the' \
  decode "$T/rope.skv" -o "$T/r.out"
expect_no_file "$T/r.out" "default output cap"
rejected "explicit output cap" 'base\.skv: decodes to 16416 bytes, more than the 16000 allowed by --max-output-bytes' \
  decode "$T/base.skv" -o "$T/b.out" --max-output-bytes 16000
expect_no_file "$T/b.out" "explicit output cap"
run decode "$T/base.skv" -o "$T/b.out" --max-output-bytes 16416; expect_rc 0 "output exactly at the cap"
run decode "$T/base.skv" -o "$T/b2.out" --max-output-bytes 1G; expect_rc 0 "a size suffix"
"$H" claims-256g "$T/256g.skv"
rejected "pipe output cap" '-: decodes to 275414777856 bytes, more than the 68719476736 allowed by the default --max-output-bytes for an input of unknown size' \
  decode - -o "$T/r.out" < <(cat "$T/256g.skv")
expect_no_file "$T/r.out" "pipe output cap"

# Tensor names that collide: rejected by decode and inspect, not left to the writer.
"$H" names-collide "$T/names.skv"
pat="names\.skv: manifest: layer 1 k name 'layers\.0\.k' is also the name of layer 0 k"
rejected "inspect colliding names" "$pat" inspect "$T/names.skv"
rejected "decode colliding names" "$pat" decode "$T/names.skv" -o "$T/n.out"
expect_no_file "$T/n.out" "colliding names"
expect_no_tmp "$T"
finish
