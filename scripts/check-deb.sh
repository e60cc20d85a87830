#!/usr/bin/env bash
# Builds the .deb with cargo-deb and checks it the way a node would install it: the package's
# metadata and conffiles (dpkg-deb --info), its files unpacked into a scratch root (dpkg -x),
# the installed binary validating the installed config, the tmpfiles entry creating
# /var/lib/tapio, and the unit verified by systemd against that root, sandbox included.
#
# Usage: scripts/check-deb.sh [BINARY]
# BINARY defaults to the debug build CI has just made ($CARGO_TARGET_DIR or target/debug/tapio):
# the package's layout, conffile, unit and maintainer scripts do not depend on the profile, and
# a release build would add a quarter of an hour to CI. For a real package run `cargo deb`.
# Needs cargo-deb in .tools/cargo-deb (scripts/test.sh installs it) and Debian's dpkg and systemd.
set -euo pipefail
cd "$(dirname "$0")/.."

target_dir="${CARGO_TARGET_DIR:-target}"
binary="${1:-$target_dir/debug/tapio}"
[ -x "$binary" ] || { echo "check-deb: no tapio binary at $binary (build it first)" >&2; exit 1; }

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
fail() { echo "check-deb: $*" >&2; exit 1; }

# cargo-deb takes the binary from <target dir>/release; give it a scratch target dir holding the
# chosen binary so that a real release build is neither needed nor overwritten.
# Its debug info is stripped first and the package compressed fast: a debug binary is ~130 MB,
# which xz would take a minute over, and neither changes what is checked.
mkdir -p "$scratch/target/release"
strip --strip-debug -o "$scratch/target/release/tapio" "$binary"
deb="$scratch/tapio.deb"
CARGO_TARGET_DIR="$scratch/target" .tools/cargo-deb/bin/cargo-deb --no-build --fast --quiet \
  --output "$deb" >/dev/null

echo "-- dpkg-deb --info"
dpkg-deb --info "$deb"
[ "$(dpkg-deb --field "$deb" Package)" = tapio ] || fail "the package is not named tapio"
dpkg-deb --field "$deb" Depends | grep -q 'libc6' \
  || fail "Depends does not name libc6: the shared libraries were not detected"
dpkg-deb --field "$deb" Depends | grep -q procps \
  || fail "Depends does not name procps, whose /bin/kill the unit's ExecReload runs"
[ "$(dpkg-deb --info "$deb" conffiles)" = /etc/tapio/tapio.toml ] \
  || fail "the conffiles are not exactly /etc/tapio/tapio.toml"

root="$scratch/root"
dpkg -x "$deb" "$root"
unit="$root/usr/lib/systemd/system/tapio.service"
for path in usr/bin/tapio etc/tapio/tapio.toml usr/lib/systemd/system/tapio.service \
  usr/lib/tmpfiles.d/tapio.conf; do
  [ -e "$root/$path" ] || fail "the package does not install /$path"
done
cmp -s "$root/etc/tapio/tapio.toml" config/examples/default.toml \
  || fail "/etc/tapio/tapio.toml is not config/examples/default.toml"
cmp -s "$unit" distribution/systemd/tapio.service \
  || fail "the installed unit differs from distribution/systemd/tapio.service"
dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./postinst | grep -q 'systemd-tmpfiles' \
  || fail "postinst does not create the tmpfiles.d directories"

echo "-- tapio validate --config <root>/etc/tapio/tapio.toml (the installed binary)"
"$root/usr/bin/tapio" validate --config "$root/etc/tapio/tapio.toml"

echo "-- systemd-tmpfiles --create: /var/lib/tapio"
systemd-tmpfiles --root="$root" --create tapio.conf
[ "$(stat -c %a "$root/var/lib/tapio")" = 750 ] || fail "/var/lib/tapio is not created with mode 0750"

echo "-- systemd-analyze verify --root=<root> tapio.service"
# The unit's default dependencies (sysinit.target, ...) come from systemd itself, which every
# node has: add the host's units to the root without replacing any the package installed.
cp -an /usr/lib/systemd/system/. "$root/usr/lib/systemd/system/"
# ExecReload runs /bin/kill, which the package's dependency procps installs on a node.
mkdir -p "$root/bin"
cp -n /bin/kill "$root/bin/kill"
# verify exits 0 on unknown keys and bad values, printing a warning: any output is a failure.
verify_output="$(systemd-analyze verify --root="$root" "$unit" 2>&1)" \
  || fail "systemd-analyze verify failed: $verify_output"
[ -z "$verify_output" ] || fail "systemd-analyze verify warned: $verify_output"
grep -qx 'CapabilityBoundingSet=CAP_BPF CAP_PERFMON CAP_SYS_RESOURCE CAP_DAC_READ_SEARCH' "$unit" \
  || fail "the unit's CapabilityBoundingSet is not exactly the ebpf source's capabilities"
echo "-- systemd-analyze security: exposure at most 3.0 (of 10)"
# The unit scores 2.9; any weakening of its sandbox fails here.
security_status=0
security_output="$(systemd-analyze security --offline=yes --root="$root" --threshold=30 \
  --no-pager tapio.service 2>&1)" || security_status=$?
echo "${security_output##*$'\n'}"
[ "$security_status" -eq 0 ] || fail "the unit's sandbox is weaker than an exposure of 3.0"
echo "check-deb: ok"
