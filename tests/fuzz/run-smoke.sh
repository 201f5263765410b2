#!/bin/sh
# Fuzz smoke test: builds every libFuzzer target in a separate clang build directory and runs
# each one for SKV_FUZZ_SECONDS (default 30) from its seed corpus in tests/fuzz/corpus/<target>/.
# Fails if any target crashes, leaks or trips a sanitizer. Crash inputs land in the build dir.
#   usage: tests/fuzz/run-smoke.sh [BUILD_DIR]   (default: build-fuzz)
set -eu
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-"$src/build-fuzz"}
seconds=${SKV_FUZZ_SECONDS:-30}
jobs=${SKV_FUZZ_JOBS:-2}

cmake -S "$src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DSKV_FUZZ=ON -DSKV_CUDA=OFF -DSKV_BUILD_BENCH=OFF >/dev/null
targets=$(cd "$src/tests/fuzz" && ls fuzz_*.cpp | sed 's/\.cpp$//')
# shellcheck disable=SC2086
ninja -C "$build" -j"$jobs" $targets

status=0
for t in $targets; do
  corpus="$build/fuzz-corpus/$t"   # grows here; the committed seeds stay untouched
  mkdir -p "$corpus" "$build/fuzz-artifacts/$t"
  seeds="$src/tests/fuzz/corpus/$t"
  [ -d "$seeds" ] || seeds=""
  echo "== $t: ${seconds}s"
  # shellcheck disable=SC2086
  if "$build/fuzz/$t" -max_total_time="$seconds" -print_final_stats=1 -max_len=65536 \
      -artifact_prefix="$build/fuzz-artifacts/$t/" "$corpus" $seeds \
      >"$build/fuzz-artifacts/$t.log" 2>&1; then
    grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "$build/fuzz-artifacts/$t.log" || true
  else
    echo "FAIL: $t crashed; see $build/fuzz-artifacts/$t.log and the inputs in $build/fuzz-artifacts/$t/"
    tail -n 30 "$build/fuzz-artifacts/$t.log"
    status=1
  fi
done
exit $status
