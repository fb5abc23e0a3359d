#!/usr/bin/env bash
# Opt-in cross-check against vdsm's own xleases code, run by hand (not by
# tools/test.sh: it needs a vdsm source tree, which CI does not fetch).
#
#   tools/vdsm-xlease/run.sh /path/to/vdsm        # a checkout of oVirt/vdsm
#
# vdsm's lib/vdsm/storage/xlease.py is copied into a scratch dir beside the
# minimal stand-ins for the vdsm modules it imports (./vdsm, ours); nothing
# of vdsm is kept. A sanlock daemon runs in its own run dir for vdsm's
# sanlock.write_resource calls and is stopped by its pid.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
src="${1:?usage: $0 VDSM_CHECKOUT}"
[ -f "$src/lib/vdsm/storage/xlease.py" ] || { echo "no lib/vdsm/storage/xlease.py in $src"; exit 1; }
cd "$root"
cargo build -q
work="$root/target/tmp/vdsm-xlease"   # a real file system: O_DIRECT
rm -rf "$work"; mkdir -p "$work/run" "$work/py"
cp -r "$here/vdsm" "$work/py/"
cp "$src/lib/vdsm/storage/xlease.py" "$work/py/vdsm/storage/"
cp "$here/check.py" "$work/py/"
SANLOCK_RUN_DIR="$work/run" SANLOCK_PRIVILEGED=0 \
    sanlock daemon -D -w 0 -l 0 -h 0 -U root -G root >"$work/run/daemon.log" 2>&1 &
daemon=$!
trap 'kill "$daemon" 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -S "$work/run/sanlock.sock" ] && break; sleep 0.1; done
SANLOCK_RUN_DIR="$work/run" /usr/bin/python3 "$work/py/check.py" "$root/target/debug/hactl" "$work"
