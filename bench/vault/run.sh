#!/usr/bin/env bash
# Vault benchmark: token issue/verify rates per core and secret decrypt latency.
# Usage: bench/vault/run.sh            (prints a Markdown table; see RESULTS.md)
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -p sumun-vault --example bench >&2
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo
target/release/examples/bench
