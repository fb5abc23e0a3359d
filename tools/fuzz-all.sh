#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a number of seconds each and
# prints a summary: target, executions, crashes.
#
#   tools/fuzz-all.sh [SECONDS_PER_TARGET]     (default 60)
#
# Uses the stable toolchain with RUSTC_BOOTSTRAP=1 (cargo-fuzz needs nightly
# flags such as -Zsanitizer). Installs cargo-fuzz if it is missing. Full
# libFuzzer logs go to fuzz/target/fuzz-logs/<target>.log; crashing inputs
# go to fuzz/artifacts/<target>/. Exits 1 if any target crashed.
set -euo pipefail

secs="${1:-60}"
if ! [[ "$secs" =~ ^[0-9]+$ ]] || [[ "$secs" -eq 0 ]]; then
    echo "usage: $0 [SECONDS_PER_TARGET]" >&2
    exit 2
fi

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root/fuzz"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz not found; installing it" >&2
    cargo install cargo-fuzz
fi

mapfile -t targets < <(cargo fuzz list)
if [[ ${#targets[@]} -eq 0 ]]; then
    echo "no fuzz targets found in $root/fuzz" >&2
    exit 2
fi

logdir="$root/fuzz/target/fuzz-logs"
mkdir -p "$logdir"

echo "building ${#targets[@]} fuzz targets" >&2
cargo fuzz build >&2

declare -A execs crashes status
for t in "${targets[@]}"; do
    log="$logdir/$t.log"
    echo "fuzzing $t for ${secs}s (log: $log)" >&2
    rc=0
    cargo fuzz run "$t" -- -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1 || rc=$?

    # executions: libFuzzer's final stats, else the last "#N" status line
    n="$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -n1)"
    if [[ -z "$n" ]]; then
        n="$(sed -n 's/^#\([0-9][0-9]*\)[[:space:]].*/\1/p' "$log" | tail -n1)"
    fi
    execs[$t]="${n:-?}"

    # crashes: inputs libFuzzer saved as crash-/oom-/timeout-/leak- artifacts
    c="$(grep -cE 'Test unit written to .*(crash|oom|timeout|leak)-' "$log" || true)"
    if [[ "$rc" -ne 0 && "$c" -eq 0 ]]; then
        # failed without saving an input (e.g. a build error): count it
        c=1
    fi
    crashes[$t]="$c"
    if [[ "$c" -eq 0 ]]; then
        status[$t]="ok"
    else
        artifact="$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n1)"
        status[$t]="FAILED (exit $rc${artifact:+, input $artifact})"
    fi
done

total=0
printf '\n%-12s %14s %8s  %s\n' "target" "executions" "crashes" "status"
printf '%-12s %14s %8s  %s\n' "------" "----------" "-------" "------"
for t in "${targets[@]}"; do
    printf '%-12s %14s %8s  %s\n' "$t" "${execs[$t]}" "${crashes[$t]}" "${status[$t]}"
    total=$((total + crashes[$t]))
done

if [[ "$total" -gt 0 ]]; then
    echo "$total crash(es); see $logdir and $root/fuzz/artifacts" >&2
    exit 1
fi
