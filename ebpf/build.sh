#!/usr/bin/env bash
# Builds the BPF object the `ebpf` source embeds (ebpf/tapio.bpf.o) from ebpf/tapio.bpf.c.
# The object is committed, so building Tapio needs no clang; this script is for changing the
# programs, and CI runs `--check` to prove the committed object is what the source gives.
#
#   ebpf/build.sh                 rebuild ebpf/tapio.bpf.o
#   ebpf/build.sh --check         rebuild into a temporary file and compare byte for byte
#   ebpf/build.sh --dump-vmlinux  write this kernel's full BTF as C to ebpf/vmlinux-full.h
#                                 (not committed), to copy new fields into ebpf/vmlinux.h
#
# Needs Debian 12's clang 14, llvm-strip and libbpf-dev (the committed object was built with
# them; another clang version may give different bytes and fail --check).
set -euo pipefail
cd "$(dirname "$0")"

compile() {
  local out=$1 tmp
  tmp=$(mktemp)
  # -fdebug-prefix-map and stripping DWARF keep the bytes independent of the checkout path;
  # .BTF and .BTF.ext (types and CO-RE relocations) stay.
  clang -O2 -g -target bpfel -mcpu=v3 -Wall -Werror \
    -fdebug-prefix-map="$PWD"=. -fno-ident \
    -c tapio.bpf.c -o "$tmp"
  llvm-strip --strip-debug "$tmp" -o "$out"
  rm -f "$tmp"
}

case "${1:-}" in
  "")
    compile tapio.bpf.o
    echo "built ebpf/tapio.bpf.o ($(stat -c %s tapio.bpf.o) bytes)"
    ;;
  --check)
    fresh=$(mktemp)
    trap 'rm -f "$fresh"' EXIT
    compile "$fresh"
    if ! cmp -s "$fresh" tapio.bpf.o; then
      echo "ebpf/tapio.bpf.o differs from what ebpf/tapio.bpf.c builds to; run ebpf/build.sh and commit the result" >&2
      exit 1
    fi
    echo "ebpf/tapio.bpf.o matches its source"
    ;;
  --dump-vmlinux)
    bpftool btf dump file /sys/kernel/btf/vmlinux format c > vmlinux-full.h
    echo "wrote ebpf/vmlinux-full.h"
    ;;
  *)
    echo "usage: ebpf/build.sh [--check | --dump-vmlinux]" >&2
    exit 2
    ;;
esac
