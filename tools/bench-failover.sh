#!/usr/bin/env bash
# Failover time of the HA layer for 1, 10 and 100 VMs (or the counts given):
# a three-host cluster on this machine, host 1 crashed with all the VMs, the
# time until each VM's disk shows writes from a survivor, beside the time the
# survivors called host 1 DEAD and, as root with sanlock installed, the time
# a real sanlock daemon joined to the same lockspace as host 4 (an observer:
# no agent, no VMs) called it FAIL and DEAD. Each count takes ~1.5-2.5 min.
# --fence: host 1 hangs instead and is fenced (hactl ha fence-test) and
# declared dead; --io-timeout N: the lockspace's io_timeout (default 1).
# `--guests [N...]` (root; libvirt, libvirt-sanlock, qemu as tools/test.sh
# installs them; default 1 10 30) runs each count twice in the same run:
# demo VMs, then tiny real guests under libvirt (runner "libvirt").
# `--gateway [N...]` (root, iproute2; default 1 10): host health instead of
# a crash: each host's agent in its own network namespace, host 1's gateway
# cut, the time until each of its VMs writes from a healthy host.
# Results go into docs/bench-failover.md by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q --bin hactl --example bench_failover
exec target/release/examples/bench_failover "$@"
