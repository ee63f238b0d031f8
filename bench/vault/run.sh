#!/usr/bin/env bash
# Vault benchmark: token issue/verify rates per core and secret decrypt latency, and, as the
# yardstick for "verification must not limit the connection rate", the server-side CPU cost of
# a full TLS 1.3 handshake on the same machine (openssl s_server + s_time).
# Usage: bench/vault/run.sh            (prints Markdown tables; see RESULTS.md)
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -p sumun-vault --example bench >&2
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo
target/release/examples/bench
echo

# TLS 1.3 handshake reference: every new client connection to a TLS listener pays one.
d=$(mktemp -d)
trap 'kill "$srv" 2>/dev/null || true; rm -rf "$d"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$d/k.pem" \
    -out "$d/c.pem" -days 1 -subj /CN=localhost 2>/dev/null
port=$((20000 + RANDOM % 20000))
openssl s_server -quiet -tls1_3 -accept "127.0.0.1:$port" -cert "$d/c.pem" -key "$d/k.pem" \
    >/dev/null 2>&1 &
srv=$!
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done
cpu() { awk '{print $14 + $15}' "/proc/$srv/stat"; }
c0=$(cpu)
n=$(openssl s_time -connect "127.0.0.1:$port" -new -time 5 2>/dev/null |
    awk '/connections in .* real seconds/ {print $1}')
[ -n "$n" ] && [ "$n" -gt 0 ] || { echo "openssl s_time made no connection" >&2; exit 1; }
c1=$(cpu)
awk -v n="$n" -v t="$((c1 - c0))" -v hz="$(getconf CLK_TCK)" -v v="$(openssl version | cut -d' ' -f1-2)" 'BEGIN {
  us = t / hz * 1e6 / n
  printf "| TLS 1.3 full handshake, server CPU (%s s_server, X25519, ECDSA P-256; %d handshakes) | %.0f µs (%.0f /s per core) |\n", v, n, us, 1e6 / us }'
