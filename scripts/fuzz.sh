#!/usr/bin/env bash
# Runs every libFuzzer binary of a fuzz build for a bounded time.
#
#   scripts/fuzz.sh BUILD_DIR SECONDS
#
# Each fuzz-<target> in BUILD_DIR/tests/fuzz runs for SECONDS over its seed
# folders (listed in fuzz-<target>.seeds by CMake: tests/fuzz/corpus/<target>,
# tests/data where it has such inputs, tests/fuzz/regressions/<target>). What
# it learns goes to BUILD_DIR/fuzz-corpus/<target>, never into the tree, and
# is reused by the next run. A crash, leak, timeout or broken invariant stops
# the run: the input is saved under BUILD_DIR/fuzz-crashes/ and the script
# exits 1; keep that input in tests/fuzz/regressions/<target>/ with the fix.
set -euo pipefail

build=${1:?usage: scripts/fuzz.sh BUILD_DIR SECONDS}
seconds=${2:?usage: scripts/fuzz.sh BUILD_DIR SECONDS}
shopt -s nullglob
bins=("$build"/tests/fuzz/fuzz-*)
bins=("${bins[@]/*.seeds/}")
ran=0
for bin in "${bins[@]}"; do
    [[ -n $bin && -x $bin ]] || continue
    target=${bin##*/fuzz-}
    mapfile -t seeds <"$bin.seeds"
    mkdir -p "$build/fuzz-corpus/$target" "$build/fuzz-crashes"
    log="$build/fuzz-$target.log"
    # -timeout: one input taking 10 s is a hang; -rss_limit_mb: a leak or a
    # runaway allocation; -max_len: jobs and answers a few KiB long reach
    # every branch, and longer inputs only slow the search down.
    if ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=16384 \
        -print_final_stats=1 -artifact_prefix="$build/fuzz-crashes/$target-" \
        "$build/fuzz-corpus/$target" "${seeds[@]}" >"$log" 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        echo "fuzz $target: ok, ${runs:-?} inputs in ${seconds}s"
    else
        echo "fuzz $target: FAILED (log: $log)" >&2
        grep -E 'ERROR|broken invariant|SUMMARY|Test unit written' "$log" >&2 || tail -20 "$log" >&2
        exit 1
    fi
    ran=$((ran + 1))
done
if ((ran == 0)); then
    echo "fuzz.sh: no fuzz binaries in $build/tests/fuzz (build with -DSHOAL_FUZZ=ON)" >&2
    exit 1
fi
