#!/usr/bin/env bash
# The deterministic simulation outside the test suite: seeds per second,
# coverage counters, violations with their replayable seeds.
#   tools/sim.sh [SEEDS] [KNOB] [FIRST_SEED] [THREADS]
#   tools/sim.sh --trace SEED [KNOB]      one seed's trace
# KNOB: none takeover-without-dead skip-delta-wait no-watchdog
#       clear-without-kill no-kill sanlock-token-check late-writes
#       trust-bad-checksum
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release --example sim
exec "${CARGO_TARGET_DIR:-target}/release/examples/sim" "$@"
