#!/usr/bin/env bash
# Side-by-side benchmark of Sumun's `tcp` and `tls` listeners against HAProxy (mode tcp, and
# with TLS termination), and against connecting directly. Everything runs on loopback in one
# run: a private PostgreSQL and Redis, the proxies, and the load generators (pgbench,
# redis-benchmark). Writes bench/gateway/RESULTS.md.
#
#   bench/gateway/run.sh            # full run (about 5 minutes)
#   DURATION=5 bench/gateway/run.sh # shorter pgbench runs
#
# Needs (installed with apt-get when run as root): postgresql, redis-server, redis-tools,
# haproxy, stunnel4 (pgbench 15 cannot speak raw TLS, so its TLS rows go through a stunnel
# client, the same for both proxies).
set -euo pipefail
ulimit -n 65536 2>/dev/null || true
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
DURATION=${DURATION:-15}
PG_CLIENTS=${PG_CLIENTS:-32}
REDIS_N1=${REDIS_N1:-200000}
REDIS_N16=${REDIS_N16:-1000000}
OUT=${OUT:-$ROOT/bench/gateway/RESULTS.md}

need=()
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-benchmark >/dev/null || need+=(redis-tools)
command -v haproxy >/dev/null || need+=(haproxy)
command -v stunnel4 >/dev/null || command -v stunnel >/dev/null || need+=(stunnel4)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "missing: sudo apt-get install -y ${need[*]}" >&2; exit 1
  fi
fi
STUNNEL=$(command -v stunnel4 || command -v stunnel)
PGBIN=$(dirname "$(ls /usr/lib/postgresql/*/bin/postgres | sort -V | tail -1)")

cargo build --release -p sumun >/dev/null
SUMUN=$ROOT/target/release/sumun

W=$(mktemp -d /tmp/sumun-bench.XXXXXX)
chmod 755 "$W"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "${PGDATA:-}" ] && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$W"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
wait_port() { for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 not up" >&2; tail -n 5 "$W"/*.log "$PGDATA/log" >&2 2>/dev/null; return 1; }

# --- servers ------------------------------------------------------------------------------
PG_PORT=$(free_port); REDIS_PORT=$(free_port)
PGDATA=$W/pg; mkdir -p "$PGDATA"; chown postgres "$PGDATA" 2>/dev/null || true
as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres -A trust >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/log" -o "-p $PG_PORT -k $PGDATA -c listen_addresses=127.0.0.1 -c max_connections=300 -c shared_buffers=256MB -c fsync=off" -w start >/dev/null
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize no >/dev/null &
pids+=($!)
wait_port "$REDIS_PORT"
pgbench -i -s 10 -q -h 127.0.0.1 -p "$PG_PORT" -U postgres postgres >/dev/null 2>&1

# --- certificates --------------------------------------------------------------------------
"$SUMUN" cert dev --out "$W/certs" >/dev/null
cat "$W/certs/server.pem" "$W/certs/server-key.pem" > "$W/certs/haproxy.pem"
CA=$W/certs/ca.pem

# --- Sumun ---------------------------------------------------------------------------------
S_PG=$(free_port); S_REDIS=$(free_port); S_PGTLS=$(free_port); S_REDISTLS=$(free_port)
cat > "$W/sumun.toml" <<TOML
[gateway]
name = "bench"
[tls.default]
cert = "$W/certs/server.pem"
key = "$W/certs/server-key.pem"
[[security_groups]]
name = "local"
ingress = [{ cidr = "127.0.0.0/8" }]
[[listeners]]
name = "pg"
bind = "127.0.0.1:$S_PG"
protocol = "tcp"
target_group = "pg"
security_groups = ["local"]
[[listeners]]
name = "redis"
bind = "127.0.0.1:$S_REDIS"
protocol = "tcp"
target_group = "redis"
security_groups = ["local"]
[[listeners]]
name = "pg-tls"
bind = "127.0.0.1:$S_PGTLS"
protocol = "tls"
tls_config = "default"
target_group = "pg"
security_groups = ["local"]
[[listeners]]
name = "redis-tls"
bind = "127.0.0.1:$S_REDISTLS"
protocol = "tls"
tls_config = "default"
target_group = "redis"
security_groups = ["local"]
[[target_groups]]
name = "pg"
targets = [{ address = "127.0.0.1:$PG_PORT" }]
[[target_groups]]
name = "redis"
targets = [{ address = "127.0.0.1:$REDIS_PORT" }]
[flow_logs]
path = "$W/flows.log"
TOML
SUMUN_LOG=warn "$SUMUN" serve --config "$W/sumun.toml" 2>"$W/sumun.log" &
SUMUN_PID=$!; pids+=($SUMUN_PID)
wait_port "$S_PG"

# --- HAProxy -------------------------------------------------------------------------------
H_PG=$(free_port); H_REDIS=$(free_port); H_PGTLS=$(free_port); H_REDISTLS=$(free_port)
cat > "$W/haproxy.cfg" <<CFG
global
  maxconn 8000
  ssl-default-bind-options ssl-min-ver TLSv1.3
defaults
  mode tcp
  timeout connect 5s
  timeout client 350s
  timeout server 350s
frontend pg
  bind 127.0.0.1:$H_PG
  default_backend pg
frontend redis
  bind 127.0.0.1:$H_REDIS
  default_backend redis
frontend pgtls
  bind 127.0.0.1:$H_PGTLS ssl crt $W/certs/haproxy.pem
  default_backend pg
frontend redistls
  bind 127.0.0.1:$H_REDISTLS ssl crt $W/certs/haproxy.pem
  default_backend redis
backend pg
  server s1 127.0.0.1:$PG_PORT
backend redis
  server s1 127.0.0.1:$REDIS_PORT
CFG
haproxy -f "$W/haproxy.cfg" -db >"$W/haproxy.log" 2>&1 &
HAPROXY_PID=$!; pids+=($HAPROXY_PID)
wait_port "$H_PG"

# --- stunnel clients for pgbench over TLS ----------------------------------------------------
T_SUMUN=$(free_port); T_HAPROXY=$(free_port)
cat > "$W/stunnel.conf" <<ST
foreground = yes
pid =
[sumun]
client = yes
accept = 127.0.0.1:$T_SUMUN
connect = 127.0.0.1:$S_PGTLS
CAfile = $CA
verifyChain = yes
[haproxy]
client = yes
accept = 127.0.0.1:$T_HAPROXY
connect = 127.0.0.1:$H_PGTLS
CAfile = $CA
verifyChain = yes
ST
"$STUNNEL" "$W/stunnel.conf" >"$W/stunnel.log" 2>&1 &
pids+=($!)
wait_port "$T_SUMUN"

# --- measurement helpers -------------------------------------------------------------------
TCK=$(getconf CLK_TCK)
cpu_ticks() { [ -z "$1" ] && { echo 0; return; }; awk '{print $14+$15}' "/proc/$1/stat"; }
ROWS=()
row() { ROWS+=("| $1 | $2 | $3 | $4 | $5 | $6 |"); echo "  $1 | $2 | $3 | $4 | $5 | $6"; }
declare -A BASE

# bench_pg LABEL PORT PID KEY
bench_pg() {
  local label=$1 port=$2 pid=$3 key=$4 t0 t1 out tps lat txns cpu
  t0=$(cpu_ticks "$pid")
  out=$(pgbench -S -c "$PG_CLIENTS" -j 2 -T "$DURATION" -h 127.0.0.1 -p "$port" -U postgres postgres 2>&1)
  t1=$(cpu_ticks "$pid")
  tps=$(echo "$out" | awk '/^tps/ {printf "%.0f", $3; exit}')
  lat=$(echo "$out" | awk '/latency average/ {print $4; exit}')
  txns=$(echo "$out" | awk -F': ' '/actually processed/ {split($2,a,"/"); print a[1]}')
  cpu=$(awk -v d=$((t1 - t0)) -v n="$txns" -v t="$TCK" 'BEGIN { if (n > 0 && d > 0) printf "%.1f", d * 1e6 / t / n; else print "-" }')
  BASE[$key]=$tps
  row "pgbench -S -c $PG_CLIENTS -j 2" "$label" "$tps tps" "$lat ms" "$cpu" "$(ratio "$key" "$tps")"
}

# bench_redis LABEL PORT PID PIPELINE N KEY [extra args]
bench_redis() {
  local label=$1 port=$2 pid=$3 p=$4 n=$5 key=$6; shift 6
  local t0 t1 out get set avg cpu
  t0=$(cpu_ticks "$pid")
  out=$(redis-benchmark -h 127.0.0.1 -p "$port" -t get,set -P "$p" -n "$n" -c 50 -q "$@" 2>/dev/null | tr '\r' '\n')
  t1=$(cpu_ticks "$pid")
  set=$(echo "$out" | awk '/^SET:.*requests per second/ {printf "%.0f", $2; exit}')
  get=$(echo "$out" | awk '/^GET:.*requests per second/ {printf "%.0f", $2; exit}')
  avg=$(awk -v a="$get" -v b="$set" 'BEGIN { printf "%.0f", (a + b) / 2 }')
  lat=$(echo "$out" | grep -o 'p50=[0-9.]*' | head -1 | cut -d= -f2)
  cpu=$(awk -v d=$((t1 - t0)) -v n=$((2 * n)) -v t="$TCK" 'BEGIN { if (d > 0) printf "%.2f", d * 1e6 / t / n; else print "-" }')
  BASE[$key]=$avg
  row "redis-benchmark -t get,set -P $p" "$label" "$avg req/s (get $get, set $set)" "p50 ${lat:-?} ms" "$cpu" "$(ratio "$key" "$avg")"
}

# Ratio of this row to HAProxy's row of the same test (Sumun rows only).
ratio() {
  local key=$1 v=$2
  case $key in
    sumun-*) local h=${BASE[haproxy-${key#sumun-}]:-}; [ -n "$h" ] && awk -v a="$v" -v b="$h" 'BEGIN { printf "%.2f", a / b }' || echo "-";;
    *) echo "";;
  esac
}

echo "running (pgbench ${DURATION}s per row)..."
# Order: direct, HAProxy, Sumun, so Sumun's ratio against HAProxy can be printed in the same row.
bench_pg "direct" "$PG_PORT" "" direct-pg
bench_pg "HAProxy tcp" "$H_PG" "$HAPROXY_PID" haproxy-pg
bench_pg "Sumun tcp" "$S_PG" "$SUMUN_PID" sumun-pg
bench_redis "direct" "$REDIS_PORT" "" 1 "$REDIS_N1" direct-r1
bench_redis "HAProxy tcp" "$H_REDIS" "$HAPROXY_PID" 1 "$REDIS_N1" haproxy-r1
bench_redis "Sumun tcp" "$S_REDIS" "$SUMUN_PID" 1 "$REDIS_N1" sumun-r1
bench_redis "direct" "$REDIS_PORT" "" 16 "$REDIS_N16" direct-r16
bench_redis "HAProxy tcp" "$H_REDIS" "$HAPROXY_PID" 16 "$REDIS_N16" haproxy-r16
bench_redis "Sumun tcp" "$S_REDIS" "$SUMUN_PID" 16 "$REDIS_N16" sumun-r16
bench_pg "HAProxy tls (stunnel client)" "$T_HAPROXY" "$HAPROXY_PID" haproxy-pgtls
bench_pg "Sumun tls (stunnel client)" "$T_SUMUN" "$SUMUN_PID" sumun-pgtls
TLSARGS=(--tls --cacert "$CA" --sni localhost)
bench_redis "HAProxy tls" "$H_REDISTLS" "$HAPROXY_PID" 1 "$REDIS_N1" haproxy-rt1 "${TLSARGS[@]}"
bench_redis "Sumun tls" "$S_REDISTLS" "$SUMUN_PID" 1 "$REDIS_N1" sumun-rt1 "${TLSARGS[@]}"
bench_redis "HAProxy tls" "$H_REDISTLS" "$HAPROXY_PID" 16 "$REDIS_N16" haproxy-rt16 "${TLSARGS[@]}"
bench_redis "Sumun tls" "$S_REDISTLS" "$SUMUN_PID" 16 "$REDIS_N16" sumun-rt16 "${TLSARGS[@]}"

{
  echo "# Gateway benchmark: Sumun vs HAProxy vs direct"
  echo
  echo "Run: \`bench/gateway/run.sh\` on $(date -u +%Y-%m-%d), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)),"
  echo "$(haproxy -v | head -1 | cut -d' ' -f1-3), $(redis-server --version | cut -d' ' -f1-3), PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}'), Sumun $(git -C "$ROOT" rev-parse --short HEAD)."
  echo "Client, server and proxy share the same cores, so a proxy's CPU use is taken from the"
  echo "clients and servers: the proxy CPU per transaction (µs, from /proc/PID/stat utime+stime)"
  echo "decides the ranking as much as throughput. Ratio = Sumun / HAProxy on the same test."
  echo
  echo "| test | path | throughput | latency | proxy CPU µs/txn | ratio vs HAProxy |"
  echo "|---|---|---|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
  echo
  echo "pgbench: \`pgbench -S -c $PG_CLIENTS -j 2 -T $DURATION\` (scale 10). redis-benchmark: \`-t get,set -c 50 -P 1 -n $REDIS_N1\` and \`-P 16 -n $REDIS_N16\`; TLS rows add \`--tls --cacert ca.pem\`."
  echo "TLS: Sumun \`policy = tls13-pq\` (TLS 1.3); HAProxy \`ssl-min-ver TLSv1.3\`. pgbench's TLS rows go through one stunnel client for both proxies."
  if [ -f "$ROOT/bench/gateway/NOTES.md" ]; then echo; cat "$ROOT/bench/gateway/NOTES.md"; fi
} > "$OUT"
echo "wrote $OUT"
