#!/usr/bin/env bash
# Runs sanlock's own test suite (tests/ of sanlock 3.8.5's repository:
# daemon_test.py, direct_test.py, python_test.py) against a daemon binary:
#
#   tools/upstream-suite.sh SANLOCK_CHECKOUT [BINARY]     (root)
#
# SANLOCK_CHECKOUT: a checkout of https://github.com/nirs/sanlock at 3.8.5
# (its files are read, never copied into this repository). BINARY defaults to
# target/release/hactl; pass /usr/sbin/sanlock for sanlock's own count.
# The suite runs BINARY as `src/sanlock` of a scratch copy of the checkout's
# tests, with python3-sanlock and pytest from Debian, userstorage from PyPI
# for its 4K loop devices (made once under /var/tmp/sanlock-storage), and
# its daemons unprivileged in their own run dir.
set -euo pipefail
src="${1:?usage: $0 SANLOCK_CHECKOUT [BINARY]}"
bin="$(realpath "${2:-target/release/hactl}")"
[ -x "$bin" ] || { echo "no binary $bin" >&2; exit 2; }
[ -f "$src/tests/daemon_test.py" ] || { echo "$src has no tests/daemon_test.py" >&2; exit 2; }
for pkg in python3-pytest python3-sanlock; do
    dpkg -s "$pkg" >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$pkg"
done
/usr/bin/python3 -c 'import userstorage' 2>/dev/null ||
    /usr/bin/python3 -m pip install --break-system-packages -q userstorage 2>/dev/null ||
    /usr/bin/python3 -m pip install -q userstorage
work="$(mktemp -d /var/tmp/sanlock-upstream.XXXXXX)"
trap 'rm -rf "$work"' EXIT
cp -a "$src/tests" "$work/tests"
mkdir -p "$work/src"
ln -s "$bin" "$work/src/sanlock"
cd "$work"
# userstorage calls sudo and udevadm; as root neither is needed.
mkdir -p shims
printf '#!/bin/sh\nexec "$@"\n' >shims/sudo
printf '#!/bin/sh\nexit 0\n' >shims/udevadm
chmod +x shims/*
export PATH="$work/shims:$PATH"
[ -e /var/tmp/sanlock-storage/loop-loop ] || /usr/bin/python3 -m userstorage create tests/storage.py
# The C helpers (tests/Makefile) are built by the suite's own fixtures.
run_dir="$work/run"
mkdir -p "$run_dir"
USER=root SANLOCK_PRIVILEGED=0 SANLOCK_RUN_DIR="$run_dir" \
    /usr/bin/python3 -m pytest -q -p no:cacheprovider --basetemp="$work/tmp" tests -rfxX
