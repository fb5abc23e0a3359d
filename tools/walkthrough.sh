#!/usr/bin/env bash
# The main job: build hactl and run `hactl demo`, a three-host HA cluster on
# this machine (a daemon and an HA agent per host, four demo VMs writing to
# their own disk files). One host is crashed; the demo shows it go FAIL then
# DEAD, its VMs restarted on the survivors with the reasons, and ends by
# checking every VM disk: no VM was ever written by two hosts at once (exit 1
# otherwise). About two minutes; everything lives in a temporary directory
# under /var/tmp and every process is stopped at the end, also on Ctrl-C.
# Needs no root. tools/leases-walkthrough.sh tours the lease layer instead.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "cargo is required (rustup)"; exit 1; }
cargo build --release -q
exec target/release/hactl demo "$@"
