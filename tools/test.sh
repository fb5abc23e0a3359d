#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs what the
# tests need (the real sanlock is the oracle), then checks formatting and
# lints and runs every test. Long runs are opt-in:
#   HACTL_FUZZ_SECONDS=N  also run every fuzz target for N seconds each.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
need_pkgs=()
# chromium + chromium-driver: the web views are tested in a real browser;
# prometheus: promtool checks dist/ (rules, dashboard queries, exposition);
# lvm2-lockd: lvmlockd runs over both daemons (tests/lvmlockd.rs);
# fence-agents, ipmitool, openipmi: fence_ipmilan fences a test host
# through OpenIPMI's ipmi_sim (tests/ha_fence.rs); iproute2: `ip netns`
# and veth pairs for the test hosts' own networks (tests/ha_health.rs).
for pkg in sanlock python3-sanlock libsanlock-dev util-linux fuse3 python3-fusepy gcc man-db passwd \
    chromium chromium-driver prometheus lvm2-lockd fence-agents ipmitool openipmi iproute2; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need_pkgs+=("$pkg")
done
# libvirt with its sanlock plugin and busybox (the tiny guests' initramfs):
# tests/libvirt_sanlock.rs, tests/ha_libvirt.rs. Without recommends:
# libvirt-daemon recommends bookworm's qemu-system, which would replace
# the backports qemu below.
libvirt_pkgs=()
for pkg in libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libvirt-sanlock busybox-static; do
    dpkg -s "$pkg" >/dev/null 2>&1 || libvirt_pkgs+=("$pkg")
done
# Real guests: qemu 10 from bookworm-backports (the image's qemu-utils is
# from there; bookworm's qemu-system would make apt remove it).
backports_pkgs=()
for pkg in qemu-system-x86 qemu-system-common qemu-system-data seabios; do
    dpkg -s "$pkg" >/dev/null 2>&1 || backports_pkgs+=("$pkg")
done
if [ ${#need_pkgs[@]} -gt 0 ] || [ ${#libvirt_pkgs[@]} -gt 0 ] || [ ${#backports_pkgs[@]} -gt 0 ]; then
    if [ ${#backports_pkgs[@]} -gt 0 ] && ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
        echo "adding the bookworm-backports source"
        printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' |
            $SUDO tee /etc/apt/sources.list.d/backports.sources >/dev/null
    fi
    echo "installing: ${need_pkgs[*]} ${libvirt_pkgs[*]} ${backports_pkgs[*]}"
    $SUDO apt-get update -q
    # qemu first, from backports, so nothing pulls bookworm's.
    if [ ${#backports_pkgs[@]} -gt 0 ]; then
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends \
            -t bookworm-backports "${backports_pkgs[@]}"
    fi
    if [ ${#libvirt_pkgs[@]} -gt 0 ]; then
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${libvirt_pkgs[@]}"
    fi
    if [ ${#need_pkgs[@]} -gt 0 ]; then
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need_pkgs[@]}"
    fi
fi
# What libvirt-daemon-system would make (it would also pull systemd):
# libvirtd runs qemu as libvirt-qemu.
getent group kvm >/dev/null || $SUDO groupadd --system kvm
getent group libvirt >/dev/null || $SUDO groupadd --system libvirt
getent passwd libvirt-qemu >/dev/null ||
    $SUDO useradd --system --gid kvm --home-dir /var/lib/libvirt --no-create-home \
        --shell /usr/sbin/nologin --comment "Libvirt Qemu" libvirt-qemu
if ! getent group libvirt-qemu >/dev/null; then
    $SUDO groupadd --system libvirt-qemu
    $SUDO usermod -a -G libvirt-qemu libvirt-qemu
fi
# The guests' kernel is fetched with apt-get download: the package lists
# must be there.
if ! apt-cache show linux-image-cloud-amd64 >/dev/null 2>&1; then
    $SUDO apt-get update -q
fi
command -v cargo >/dev/null || { echo "cargo is required (rustup)"; exit 1; }
rustup component add rustfmt clippy >/dev/null 2>&1 || true

# The tests use loop devices with 4K sectors and start sanlock daemons:
# they run as root, each daemon in its own run dir under target/tmp.
if [ "$(id -u)" -ne 0 ]; then
    echo "note: the loop-device tests need root; run as root (CI does)"
fi

cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
# Plain `cargo test`: lib, bins, integration tests and doctests; the
# benches are built by clippy above but run only with `cargo bench`.
tdir="${CARGO_TARGET_DIR:-target}"
mkdir -p "$tdir/tmp"
checks="$tdir/tmp/sanlock-checks.log"
rm -f "$checks"
cargo test 2>&1 | tee "$tdir/test.log"
# The deterministic simulation's 10^6 seeds need an optimised build (the
# debug run above does 20,000); HACTL_SIM_SEEDS=10000000 for a long run.
cargo test --release --test sim 2>&1 | tee -a "$tdir/test.log"
# The HA layer in the simulation: 20,000 seeds (~10 s) in release.
cargo test --release --test ha_sim 2>&1 | tee -a "$tdir/test.log"
# How many checks compared hactl with the real sanlock and found them equal
# (each differential test appends its count).
if [ -f "$checks" ]; then
    awk -F'\t' '{n += $2; printf "  %-40s %6d\n", $1, $2} END {print "checks equal to sanlock (total): " n}' "$checks"
fi

if [ -n "${HACTL_FUZZ_SECONDS:-}" ]; then
    tools/fuzz-all.sh "$HACTL_FUZZ_SECONDS"
fi

if [ -n "${HACTL_SOAK_MINUTES:-}" ]; then
    # Two hosts, hundreds of clients killed at random, failing storage;
    # the figures go to target/soak.log (docs/soak.md has one run's).
    HACTL_SOAK_MINUTES="$HACTL_SOAK_MINUTES" cargo test --release --test soak -- --ignored --nocapture 2>&1 | tee "$tdir/soak.log"
fi
