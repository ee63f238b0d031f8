#!/usr/bin/env bash
# Instructions per `pgbench -S` transaction in the proxy, counted with callgrind (issue 17,
# "Performance"). Timings on a shared 2-core box are noisy; instruction counts repeat.
#
#   bench/postgres/instructions.sh              # Sumun (target/release/sumun), workers = 1
#   PROXY=pgbouncer bench/postgres/instructions.sh
#   CLIENTS=8 T1=1000 T2=4000 SUMUN=path KEEP=1 bench/postgres/instructions.sh
#   PROTECTION=off bench/postgres/instructions.sh   # [protection] enabled = false (default: on,
#                                                   # SQL-injection inspection of every statement)
#
# A private PostgreSQL 15 on a free port (as run.sh sets it up), one proxy under
# `valgrind --tool=callgrind --separate-threads=yes`, transaction pooling (pool size 20), plain
# SCRAM login. In one proxy process: a warm-up `pgbench -S -c CLIENTS -t 200`, then counters
# zeroed, `pgbench -S -c CLIENTS -t T1` (logins + CLIENTS*T1 transactions), dump; zeroed again,
# `pgbench -S -c CLIENTS -t T2`, dump. (PgBouncer: one process per run, start to exit, as
# vgdb cannot reach it here; start-up, warm-up and logins are the same in both.) Instructions per transaction =
#   (Ir(run 2) - Ir(run 1)) / (CLIENTS * (T2 - T1))
# so logins, connects and start-up cancel out. Ir is the whole process (every thread); for Sumun
# the data-plane worker's own thread is printed too, and that thread's top functions in run 2
# (self cost, bench/postgres/callgrind_self.py; callgrind_annotate 3.19 shows only inclusive
# costs for these files).
# Needs: root, valgrind, postgresql 15, pgbench, pgbouncer (for PROXY=pgbouncer), python3.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
PROXY=${PROXY:-sumun}
CLIENTS=${CLIENTS:-8}
T1=${T1:-1000}
T2=${T2:-4000}
POOL_SIZE=${POOL_SIZE:-20}
SUMUN=${SUMUN:-$ROOT/target/release/sumun}
KEEP=${KEEP:-0}
PROTECTION=${PROTECTION:-on}
TOP=${TOP:-30}
PGBIN=/usr/lib/postgresql/15/bin
PGBOUNCER=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)

W=$(mktemp -d /tmp/sumun-callgrind.XXXXXX)
chmod 755 "$W"
PGDATA=""
PROXY_PID=""
cleanup() {
  trap - EXIT INT TERM
  [ -n "$PROXY_PID" ] && kill "$PROXY_PID" 2>/dev/null || true
  [ -n "$PGDATA" ] && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA" -m immediate stop >/dev/null 2>&1 || true
  if [ "$KEEP" = 1 ]; then echo "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
as_pg() { runuser -u postgres -- "$@"; }
wait_port() { for _ in $(seq 600); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

# --- PostgreSQL (as run.sh) -------------------------------------------------------------------
PGPASS=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
printf '%s\n' "$PGPASS" > "$W/pgpass.txt"; chmod 600 "$W/pgpass.txt"
PG_PORT=$(free_port)
PGDATA=$W/pg; mkdir -p "$PGDATA"; chown postgres "$PGDATA"
as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres -E UTF8 --auth-local=trust --auth-host=scram-sha-256 >"$W/initdb.log" 2>&1
as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/log" -o "-p $PG_PORT -k $PGDATA -c listen_addresses=127.0.0.1 -c max_connections=400 -c shared_buffers=256MB -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c password_encryption=scram-sha-256" -w start >/dev/null
as_pg psql -q -X -h "$PGDATA" -p "$PG_PORT" -U postgres -d postgres \
  -c "CREATE ROLE bench LOGIN PASSWORD '$PGPASS'" -c "CREATE DATABASE bench OWNER bench" >/dev/null
PGPASSWORD=$PGPASS PGSSLMODE=disable "$PGBIN/pgbench" -i -s 10 -q -h 127.0.0.1 -p "$PG_PORT" -U bench bench >"$W/pgbench-init.log" 2>&1

PORT=$(free_port)
VG=(valgrind --tool=callgrind --separate-threads=yes --trace-children=no --callgrind-out-file="$W/callgrind.out.%p")
if [ "$PROXY" = sumun ]; then
  VAULT=$W/vault
  cat > "$W/sumun.toml" <<TOML
[gateway]
name = "bench"
workers = 1
[vault]
dir = "$VAULT"
key_file = "$VAULT/master.key"
[[security_groups]]
name = "local"
ingress = [{ cidr = "127.0.0.0/8" }]
[[listeners]]
name = "pg-tx"
bind = "127.0.0.1:$PORT"
protocol = "postgres"
tls = "off"
target_group = "pg"
security_groups = ["local"]
max_connections = 12000
pool = { mode = "transaction", size = $POOL_SIZE }
[[target_groups]]
name = "pg"
targets = [{ address = "127.0.0.1:$PG_PORT" }]
[[users]]
name = "bench"
auth = ["scram"]
backend_credential = "pg/bench"
TOML
  if [ "$PROTECTION" = off ]; then printf '[protection]\nenabled = false\n' >> "$W/sumun.toml"; fi
  "$SUMUN" vault init --config "$W/sumun.toml" >"$W/setup.log" 2>&1
  "$SUMUN" secrets put pg/bench --value-file "$W/pgpass.txt" --kind postgres --address "127.0.0.1:$PG_PORT" --username bench --database bench --config "$W/sumun.toml" >>"$W/setup.log" 2>&1
  "$SUMUN" users set-password bench --value-file "$W/pgpass.txt" --config "$W/sumun.toml" >>"$W/setup.log" 2>&1
  start_proxy() {
    SUMUN_LOG=warn "${VG[@]}" "$SUMUN" serve --config "$W/sumun.toml" >"$W/proxy.log" 2>&1 &
    PROXY_PID=$!
  }
  echo "\$ SUMUN_LOG=warn ${VG[*]} $SUMUN serve --config sumun.toml   # workers = 1, transaction pool of $POOL_SIZE, plain SCRAM"
else
  PG_VERIFIER=$(as_pg psql -X -At -h "$PGDATA" -p "$PG_PORT" -U postgres -d postgres -c "SELECT rolpassword FROM pg_authid WHERE rolname = 'bench'")
  printf '"bench" "%s"\n' "$PG_VERIFIER" > "$W/userlist.txt"; chown postgres "$W/userlist.txt"; chmod 600 "$W/userlist.txt"
  cat > "$W/pgbouncer.ini" <<INI
[databases]
bench = host=127.0.0.1 port=$PG_PORT dbname=bench
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PORT
unix_socket_dir =
pool_mode = transaction
default_pool_size = $POOL_SIZE
max_client_conn = 12000
auth_type = scram-sha-256
auth_file = $W/userlist.txt
server_tls_sslmode = disable
log_connections = 0
log_disconnections = 0
stats_period = 60
INI
  chown postgres "$W/pgbouncer.ini"; chown postgres "$W"
  start_proxy() {
    setpriv --reuid=postgres --regid=postgres --init-groups "${VG[@]}" "$PGBOUNCER" "$W/pgbouncer.ini" >"$W/proxy.log" 2>&1 &
    PROXY_PID=$!
  }
  echo "\$ ${VG[*]} pgbouncer pgbouncer.ini   # pool_mode = transaction, default_pool_size = $POOL_SIZE, auth_type = scram-sha-256"
fi

pgb() { PGPASSWORD=$PGPASS PGSSLMODE=disable "$PGBIN/pgbench" -n -S -c "$CLIENTS" -t "$1" -h 127.0.0.1 -p "$PORT" -U bench bench 2>&1; }
processed() { awk -F': ' '/actually processed/ {split($2, a, "/"); print a[1] + 0; exit}'; }
started() { wait_port "$PORT" || { echo "proxy did not start" >&2; tail "$W/proxy.log" >&2; exit 1; }; pgb 200 >/dev/null; }
if [ "$PROXY" = sumun ]; then
  # One process: counters zeroed before and dumped after each run (callgrind_control).
  start_proxy; started
  run() { # N NAME -> transactions processed; profile in $W/callgrind.out.PID.DUMP-THREAD
    timeout 60 callgrind_control -z "$PROXY_PID" >/dev/null 2>&1
    local n; n=$(pgb "$1" | processed)
    timeout 60 callgrind_control -d "$2" "$PROXY_PID" >/dev/null 2>&1
    echo "$n"
  }
  N1=$(run "$T1" run1)
  N2=$(run "$T2" run2)
  kill "$PROXY_PID"; wait "$PROXY_PID" 2>/dev/null || true; PROXY_PID=""
else
  # vgdb (callgrind_control) cannot reach an idle PgBouncer here, so each run is a process of
  # its own, start to exit; start-up, the warm-up and the logins are the same in both.
  run() { # N DUMP -> transactions processed; profile renamed $W/callgrind.out.PID.DUMP-THREAD
    start_proxy; started
    local n f; n=$(pgb "$1" | processed)
    kill "$PROXY_PID"; wait "$PROXY_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$PROXY_PID" 2>/dev/null || break; sleep 0.1; done
    for f in "$W"/callgrind.out."$PROXY_PID"-*; do mv "$f" "$W/callgrind.out.$PROXY_PID.$2-${f##*-}"; done
    PROXY_PID=""
    echo "$n"
  }
  N1=$(run "$T1" 1)
  N2=$(run "$T2" 2)
fi
echo "\$ pgbench -n -S -c $CLIENTS -t {$T1,$T2} -h 127.0.0.1 -p PORT -U bench bench   # $N1 and $N2 transactions"

# Ir of one dump file: the "summary:" or "totals:" line.
ir() { awk '/^(summary|totals):/ {print $2; exit}' "$1"; }
sum_ir() { local t=0 f; for f in "$@"; do t=$((t + $(ir "$f"))); done; echo "$t"; }
# callgrind names dumps callgrind.out.PID.N-THREAD (N = dump number); dump 1 is run 1, 2 run 2.
mapfile -t D1 < <(ls "$W"/callgrind.out.*.1-*)
mapfile -t D2 < <(ls "$W"/callgrind.out.*.2-*)
I1=$(sum_ir "${D1[@]}"); I2=$(sum_ir "${D2[@]}")
echo "whole process: run 1 $I1 Ir, run 2 $I2 Ir"
awk -v a="$I1" -v b="$I2" -v n1="$N1" -v n2="$N2" 'BEGIN { printf "instructions per transaction (whole process): %.0f\n", (b - a) / (n2 - n1) }'
# The busiest thread of run 2 (Sumun: the data-plane worker).
best=""; bi=0
for f in "${D2[@]}"; do v=$(ir "$f"); [ "$v" -gt "$bi" ] && { bi=$v; best=$f; }; done
tid=${best##*-}
w1=$(ir "$(ls "${D1[@]}" | grep -- "-$tid\$")")
awk -v a="$w1" -v b="$bi" -v n1="$N1" -v n2="$N2" -v t="$tid" 'BEGIN { printf "instructions per transaction (busiest thread, %s): %.0f\n", t, (b - a) / (n2 - n1) }'
echo "top functions of that thread, self instructions per transaction in run 2 (inlined code counted in its caller):"
python3 "$ROOT/bench/postgres/callgrind_self.py" "$best" "$N2" "$TOP"
