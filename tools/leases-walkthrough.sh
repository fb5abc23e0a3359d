#!/usr/bin/env bash
# A tour of the lease layer: build hactl, then on a local file
# make a lockspace, a resource lease and a resource index the way an admin
# would, and show them with hactl's sanlock-compatible commands.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "cargo is required (rustup)"; exit 1; }
cargo build --release -q
H="$PWD/target/release/hactl"

dir="$PWD/target/walkthrough"
rm -rf "$dir" && mkdir -p "$dir"
img="$dir/leases.img"
truncate -s 8M "$img"

say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
say "$H" direct init -s "demo-ls:0:$img:0" -o 1
say "$H" direct init -r "demo-ls:vm-1:$img:1M"
say "$H" direct init -r "demo-ls:vm-2:$img:2M" -n 8
say "$H" direct format -x "demo-ls:$img:3M"
say "$H" direct update -x "demo-ls:$img:3M" -e "vm-3:5M"
say "$H" direct init -r "demo-ls:vm-3:$img:5M"
say "$H" direct dump "$img" -f 1
say "$H" direct read_leader -s "demo-ls:1:$img:0"
say "$H" direct read_leader -r "demo-ls:vm-1:$img:1M"
say "$H" direct lookup -x "demo-ls:$img:3M" -e vm-3
say "$H" direct next_free "$img" -Z 512 -A 1M
say "$H" direct read_leader -r "demo-ls:vm-1:$img:1M" --json
echo
echo "A damaged record is refused with a reason (one bit flipped in vm-1's leader):"
printf '\x01' | dd of="$img" bs=1 seek=$((1048576 + 48)) conv=notrunc status=none
say "$H" direct read_leader -r "demo-ls:vm-1:$img:1M" || true
