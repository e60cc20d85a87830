#!/usr/bin/env bash
# Runs every check CI runs, on a fresh Debian machine with only Rust installed:
# formatting, lints, every example config, and the whole test suite (unit + integration tests
# that run the real `tapio` binary). Usage: ./scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== build"
cargo build --workspace --locked --bins

echo "== tapio validate config/examples/*.toml"
for example in config/examples/*.toml; do
  ./target/debug/tapio validate --config "$example"
done

echo "== cargo test"
cargo test --workspace --locked --no-fail-fast
