#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ and prints, per target, the
# executions, executions per second and crashes, then a total line:
#
#   total executions: N, crashes: M
#
#   tools/fuzz-all.sh [SECONDS_PER_TARGET] [TARGET...]     (default 60 s each)
#   tools/fuzz-all.sh --total SECONDS [TARGET...]          (budget split evenly)
#
# With no TARGET, every target `cargo fuzz list` knows is run, one after the
# other (one libFuzzer process at a time). Uses the stable toolchain with
# RUSTC_BOOTSTRAP=1 (cargo-fuzz needs nightly flags such as -Zsanitizer).
# Installs cargo-fuzz if it is missing. Full libFuzzer logs go to
# fuzz/target/fuzz-logs/<target>.log; crashing inputs go to
# fuzz/artifacts/<target>/ (libFuzzer stops a target at its first crash, so
# a target counts at most one). Exits 1 if any target crashed, 2 on usage.
set -euo pipefail

usage() {
    echo "usage: $0 [SECONDS_PER_TARGET] [TARGET...] | --total SECONDS [TARGET...]" >&2
    exit 2
}
num() { [[ "$1" =~ ^[0-9]+$ ]] && [[ "$1" -gt 0 ]]; }

total_budget=""
secs=60
if [[ "${1:-}" == "--total" ]]; then
    num "${2:-}" || usage
    total_budget="$2"
    shift 2
elif [[ $# -gt 0 ]] && [[ "$1" =~ ^[0-9]+$ ]]; then
    num "$1" || usage
    secs="$1"
    shift
fi
[[ "${1:-}" == -* ]] && usage

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root/fuzz"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz not found; installing it" >&2
    cargo install cargo-fuzz
fi

mapfile -t known < <(cargo fuzz list)
if [[ $# -gt 0 ]]; then
    targets=("$@")
    for t in "${targets[@]}"; do
        printf '%s\n' "${known[@]}" | grep -qx -- "$t" || {
            echo "unknown fuzz target $t (known: ${known[*]})" >&2
            exit 2
        }
    done
else
    targets=("${known[@]}")
fi
if [[ ${#targets[@]} -eq 0 ]]; then
    echo "no fuzz targets found in $root/fuzz" >&2
    exit 2
fi
if [[ -n "$total_budget" ]]; then
    secs=$((total_budget / ${#targets[@]}))
    [[ "$secs" -ge 1 ]] || secs=1
fi

logdir="$root/fuzz/target/fuzz-logs"
mkdir -p "$logdir"

echo "building ${#targets[@]} fuzz targets" >&2
cargo fuzz build >&2

declare -A execs rate crashes status
for t in "${targets[@]}"; do
    log="$logdir/$t.log"
    echo "fuzzing $t for ${secs}s (log: $log)" >&2
    rc=0
    extra=()
    if [[ "$t" == daemon ]]; then
        # A live daemon's threads outlive each input (a connection being
        # closed, an I/O thread parking): LeakSanitizer's per-input check
        # takes what they hold for leaks.
        extra=(-detect_leaks=0)
    fi
    cargo fuzz run "$t" -- -max_total_time="$secs" -print_final_stats=1 "${extra[@]}" >"$log" 2>&1 || rc=$?

    # executions: libFuzzer's final stats, else the last "#N" status line
    n="$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -n1)"
    if [[ -z "$n" ]]; then
        n="$(sed -n 's/^#\([0-9][0-9]*\)[[:space:]].*/\1/p' "$log" | tail -n1)"
    fi
    execs[$t]="${n:-0}"
    r="$(sed -n 's/^stat::average_exec_per_sec: *\([0-9]*\).*/\1/p' "$log" | tail -n1)"
    rate[$t]="${r:-?}"

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

total_execs=0
total_crashes=0
printf '\n%-14s %14s %10s %8s  %s\n' "target" "executions" "exec/s" "crashes" "status"
printf '%-14s %14s %10s %8s  %s\n' "------" "----------" "------" "-------" "------"
for t in "${targets[@]}"; do
    printf '%-14s %14s %10s %8s  %s\n' "$t" "${execs[$t]}" "${rate[$t]}" "${crashes[$t]}" "${status[$t]}"
    total_execs=$((total_execs + execs[$t]))
    total_crashes=$((total_crashes + crashes[$t]))
done
echo "total executions: $total_execs, crashes: $total_crashes"

if [[ "$total_crashes" -gt 0 ]]; then
    echo "$total_crashes crash(es); see $logdir and $root/fuzz/artifacts" >&2
    exit 1
fi
