#!/usr/bin/env bash
# Side-by-side benchmark of Sumun's `postgres` listener (transaction and session pooling, plain
# and TLS) against PgBouncer and against connecting directly (issue 4, "Benchmark"). Everything
# runs on loopback in one run: a private PostgreSQL 15 on a free port, two PgBouncers, one Sumun,
# pgbench, and bench/postgres/idle_clients.py for the idle-connection memory test.
# Writes bench/postgres/RESULTS.md and prints every command it timed.
#
#   bench/postgres/run.sh                  # full run, 10 s per row (about 14 minutes)
#   DURATION=5 bench/postgres/run.sh       # shorter rows
#   QUICK=1 bench/postgres/run.sh          # smoke run: -c 32 only, 3 s rows, 1,000 idle clients
#   SUMUN_BUILD=0 bench/postgres/run.sh    # never run cargo; Sumun rows fail if the binary is missing
#
# Other knobs: CLIENTS="1 32 256", CONNECT_CLIENTS=16, IDLE_N=10000, POOL_SIZE=20, SUMUN=path,
# OUT=file, KEEP=1 (keep the work directory with all logs), SUMUN_WORKERS=1 (Sumun's
# `[gateway] workers` in every row but the core-scaling one, which runs one worker pinned to a
# core against one worker per core: PgBouncer is one thread, and on two cores shared with
# pgbench and PostgreSQL one event loop does the same work with fewer wake-ups).
#
# Needs (installed with apt-get when run as root): postgresql (15), postgresql-client (pgbench),
# pgbouncer, openssl, python3. Run as root: PostgreSQL and PgBouncer run as user `postgres`.
#
# Auth: direct and PgBouncer rows log in with SCRAM-SHA-256 as role `bench`. Sumun's plain rows
# log in with SCRAM-SHA-256 against the verifier from `sumun users set-password` (same
# password); its TLS rows use sslmode=require and a token from `sumun token` as the password.
# Sumun logs in to PostgreSQL with the vault secret `pg/bench`.
set -euo pipefail
ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 65536 2>/dev/null || true
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
HERE=$ROOT/bench/postgres

QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
  DURATION=${DURATION:-3}; CLIENTS=${CLIENTS:-32}; IDLE_N=${IDLE_N:-1000}
else
  DURATION=${DURATION:-10}; CLIENTS=${CLIENTS:-1 32 256}; IDLE_N=${IDLE_N:-10000}
fi
CONNECT_CLIENTS=${CONNECT_CLIENTS:-16}
POOL_SIZE=${POOL_SIZE:-20}
SUMUN_WORKERS=${SUMUN_WORKERS:-1}
SCALE=${SCALE:-10}
SUMUN=${SUMUN:-$ROOT/target/release/sumun}
SUMUN_BUILD=${SUMUN_BUILD:-1}
OUT=${OUT:-$HERE/RESULTS.md}
KEEP=${KEEP:-0}
NPROC=$(nproc)
STARTED=$(date +%s)

# --- packages ------------------------------------------------------------------------------
need=()
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
command -v pgbench >/dev/null || need+=(postgresql-client)
command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ] || need+=(pgbouncer)
command -v openssl >/dev/null || need+=(openssl)
command -v python3 >/dev/null || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing: ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "missing: sudo apt-get install -y ${need[*]}" >&2; exit 1
  fi
fi
if [ "$(id -u)" != 0 ]; then echo "run as root (PostgreSQL and PgBouncer run as user postgres)" >&2; exit 1; fi
PGBOUNCER=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)
if [ -x /usr/lib/postgresql/15/bin/postgres ]; then PGBIN=/usr/lib/postgresql/15/bin
else PGBIN=$(dirname "$(ls /usr/lib/postgresql/*/bin/postgres | sort -V | tail -1)"); fi

SUMUN_NOTE=""
if [ ! -x "$SUMUN" ] && [ "$SUMUN_BUILD" = 1 ]; then
  echo "building sumun (cargo build --release -p sumun)..."
  cargo build --release -p sumun >/dev/null || SUMUN_NOTE="cargo build failed"
fi
[ -x "$SUMUN" ] || SUMUN_NOTE=${SUMUN_NOTE:-"$SUMUN not found (SUMUN_BUILD=0)"}

# --- work directory and cleanup --------------------------------------------------------------
W=$(mktemp -d /tmp/sumun-pgbench.XXXXXX)
chmod 755 "$W"   # PostgreSQL and PgBouncer run as postgres and must read it
pids=()
PGDATA=""
cleanup() {
  local p
  trap - EXIT INT TERM
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.3
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  [ -n "$PGDATA" ] && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA" -m immediate stop >/dev/null 2>&1 || true
  if [ "$KEEP" = 1 ]; then echo "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'echo interrupted >&2; exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
as_pg() { runuser -u postgres -- "$@"; }
wait_port() { # PORT [PID]: wait up to 10 s; fail early if PID died
  for _ in $(seq 100); do
    (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    [ -n "${2:-}" ] && ! alive "$2" && return 1
    sleep 0.1
  done
  return 1
}
alive() { # PID: running (not gone, not a zombie)
  [ -n "$1" ] && [ -r "/proc/$1/stat" ] && [ "$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)" != Z ]
}
stop_pid() { # PID: stop a process this script started, and forget it
  local p keep=()
  kill "$1" 2>/dev/null || true
  for _ in $(seq 50); do alive "$1" || break; sleep 0.1; done
  kill -9 "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
  for p in "${pids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  pids=("${keep[@]}")
}

CMDS=()
log_cmd() { CMDS+=("$1"); echo "  \$ $1"; }

# --- PostgreSQL ------------------------------------------------------------------------------
PGPASS=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
printf '%s\n' "$PGPASS" > "$W/pgpass.txt"; chmod 600 "$W/pgpass.txt"
PG_PORT=$(free_port)
PGDATA=$W/pg; mkdir -p "$PGDATA"; chown postgres "$PGDATA"
echo "PostgreSQL on 127.0.0.1:$PG_PORT ($PGDATA)"
as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres -E UTF8 --auth-local=trust --auth-host=scram-sha-256 >"$W/initdb.log" 2>&1
PG_OPTS="-p $PG_PORT -k $PGDATA -c listen_addresses=127.0.0.1 -c max_connections=400 -c shared_buffers=256MB -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c password_encryption=scram-sha-256"
as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/log" -o "$PG_OPTS" -w start >/dev/null
log_cmd "pg_ctl -D PGDATA -o \"$PG_OPTS\" start"
as_pg psql -q -X -h "$PGDATA" -p "$PG_PORT" -U postgres -d postgres \
  -c "CREATE ROLE bench LOGIN PASSWORD '$PGPASS'" -c "CREATE DATABASE bench OWNER bench" >/dev/null
PGPASSWORD=$PGPASS PGSSLMODE=disable "$PGBIN/pgbench" -i -s "$SCALE" -q -h 127.0.0.1 -p "$PG_PORT" -U bench bench >"$W/pgbench-init.log" 2>&1
log_cmd "pgbench -i -s $SCALE -q -h 127.0.0.1 -p $PG_PORT -U bench bench"
PGBENCH=$PGBIN/pgbench; [ -x "$PGBENCH" ] || PGBENCH=$(command -v pgbench)

# --- certificates --------------------------------------------------------------------------
CERTS=$W/certs
if [ -x "$SUMUN" ] && "$SUMUN" cert dev --out "$CERTS" >"$W/cert.log" 2>&1 && [ -f "$CERTS/server.pem" ]; then
  CERT_SRC="sumun cert dev"
else
  mkdir -p "$CERTS"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$CERTS/server-key.pem" -out "$CERTS/server.pem" >"$W/cert.log" 2>&1
  CERT_SRC="openssl (self-signed P-256)"
fi
chown -R postgres "$CERTS"; chmod 600 "$CERTS/server-key.pem"

# --- PgBouncer: one process per pool mode, plain and TLS on the same port (client_tls_sslmode=allow)
# The auth file holds the role's SCRAM verifier (as PostgreSQL stores it), not the password:
# PgBouncer checks clients against it, and logs in to PostgreSQL with the keys from the client's
# own SCRAM exchange.
PG_VERIFIER=$(as_pg psql -X -At -h "$PGDATA" -p "$PG_PORT" -U postgres -d postgres -c "SELECT rolpassword FROM pg_authid WHERE rolname = 'bench'")
printf '"bench" "%s"\n' "$PG_VERIFIER" > "$W/userlist.txt"; chown postgres "$W/userlist.txt"; chmod 600 "$W/userlist.txt"
pgbouncer_ini() { # FILE PORT MODE
  cat > "$1" <<INI
[databases]
bench = host=127.0.0.1 port=$PG_PORT dbname=bench
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $2
unix_socket_dir =
pool_mode = $3
default_pool_size = $POOL_SIZE
max_client_conn = 12000
auth_type = scram-sha-256
auth_file = $W/userlist.txt
client_tls_sslmode = allow
client_tls_cert_file = $CERTS/server.pem
client_tls_key_file = $CERTS/server-key.pem
server_tls_sslmode = disable
log_connections = 0
log_disconnections = 0
log_pooler_errors = 1
stats_period = 60
INI
  chown postgres "$1"
}
start_pgbouncer() { # NAME PORT MODE -> sets PGB_PID
  pgbouncer_ini "$W/$1.ini" "$2" "$3"
  setpriv --reuid=postgres --regid=postgres --init-groups "$PGBOUNCER" "$W/$1.ini" >"$W/$1.log" 2>&1 &
  PGB_PID=$!; pids+=("$PGB_PID")
  wait_port "$2" "$PGB_PID" || { echo "PgBouncer $1 did not start:" >&2; tail -5 "$W/$1.log" >&2; exit 1; }
}
B_TX=$(free_port); B_SESSION=$(free_port)
start_pgbouncer pgbouncer-tx "$B_TX" transaction; B_TX_PID=$PGB_PID
start_pgbouncer pgbouncer-session "$B_SESSION" session; B_SESSION_PID=$PGB_PID
log_cmd "pgbouncer pgbouncer.ini   # pool_mode = transaction|session, default_pool_size = $POOL_SIZE, max_client_conn = 12000, auth_type = scram-sha-256 (auth_file: the role's SCRAM verifier), client_tls_sslmode = allow"
echo "PgBouncer transaction :$B_TX (pid $B_TX_PID), session :$B_SESSION (pid $B_SESSION_PID)"

# --- Sumun ---------------------------------------------------------------------------------
VAULT=$W/vault
sumun_toml() { # FILE NAME:PORT:MODE...
  local f=$1 spec name port mode; shift
  cat > "$f" <<TOML
[gateway]
name = "bench"
workers = ${WORKERS:-$SUMUN_WORKERS}
[vault]
dir = "$VAULT"
key_file = "$VAULT/master.key"
[tls.default]
cert = "$CERTS/server.pem"
key = "$CERTS/server-key.pem"
[[security_groups]]
name = "local"
ingress = [{ cidr = "127.0.0.0/8" }]
TOML
  for spec in "$@"; do
    IFS=: read -r name port mode <<<"$spec"
    cat >> "$f" <<TOML
[[listeners]]
name = "$name"
bind = "127.0.0.1:$port"
protocol = "postgres"
tls = "optional"
tls_config = "default"
target_group = "pg"
security_groups = ["local"]
max_connections = 12000
pool = { mode = "$mode", size = $POOL_SIZE }
TOML
  done
  cat >> "$f" <<TOML
[[target_groups]]
name = "pg"
targets = [{ address = "127.0.0.1:$PG_PORT" }]
[[users]]
name = "bench"
auth = ["token", "scram"]
backend_credential = "pg/bench"
TOML
}
start_sumun() { # CONFIG LOG PORT -> sets SUMUN_PID, or returns 1
  SUMUN_LOG=warn "$SUMUN" serve --config "$1" >"$2" 2>&1 &
  SUMUN_PID=$!; pids+=("$SUMUN_PID")
  wait_port "$3" "$SUMUN_PID" && return 0
  SUMUN_NOTE="sumun serve did not start: $(grep -v '^\s*$' "$2" | tail -3 | tr '\n' ' ' | cut -c1-300)"
  stop_pid "$SUMUN_PID"; SUMUN_PID=""
  return 1
}
S_TX=$(free_port); S_SESSION=$(free_port)
SUMUN_PID=""; TOKEN=""
declare -A SUMUN_AUTH_NOTE=()
setup_sumun() {
  local cfg=$W/sumun.toml
  sumun_toml "$cfg" "pg-tx:$S_TX:transaction" "pg-session:$S_SESSION:session"
  "$SUMUN" vault init --config "$cfg" >"$W/sumun-setup.log" 2>&1 || { SUMUN_NOTE="sumun vault init failed: $(tail -1 "$W/sumun-setup.log")"; return 1; }
  "$SUMUN" secrets put pg/bench --value-file "$W/pgpass.txt" --kind postgres --address "127.0.0.1:$PG_PORT" --username bench --database bench --config "$cfg" >>"$W/sumun-setup.log" 2>&1 \
    || { SUMUN_NOTE="sumun secrets put failed: $(tail -1 "$W/sumun-setup.log")"; return 1; }
  "$SUMUN" users set-password bench --value-file "$W/pgpass.txt" --config "$cfg" >>"$W/sumun-setup.log" 2>&1 \
    || { SUMUN_NOTE="sumun users set-password failed: $(tail -1 "$W/sumun-setup.log")"; return 1; }
  TOKEN=$("$SUMUN" token --user bench --database bench --ttl 1h --config "$cfg" 2>>"$W/sumun-setup.log") && [ -n "$TOKEN" ] \
    || { SUMUN_NOTE="sumun token failed: $(tail -1 "$W/sumun-setup.log")"; return 1; }
  log_cmd "sumun vault init --config sumun.toml"
  log_cmd "sumun secrets put pg/bench --value-file pgpass.txt --kind postgres --address 127.0.0.1:$PG_PORT --username bench --database bench --config sumun.toml"
  log_cmd "sumun users set-password bench --value-file pgpass.txt --config sumun.toml"
  log_cmd "TOKEN=\$(sumun token --user bench --database bench --ttl 1h --config sumun.toml)"
  start_sumun "$cfg" "$W/sumun.log" "$S_TX" || return 1
  wait_port "$S_SESSION" "$SUMUN_PID" || { SUMUN_NOTE="listener pg-session did not come up"; return 1; }
  log_cmd "SUMUN_LOG=warn sumun serve --config sumun.toml   # listeners pg-tx (transaction), pg-session (session), tls = optional, pool size $POOL_SIZE"
  # One login each way, so a front end that is not there yet fails once here, not in every row.
  # One login each way, so a front end that is not there yet fails once here, not in every row;
  # rows of a way that failed are reported as failed with this reason.
  local err
  if ! err=$(PGPASSWORD=$TOKEN PGSSLMODE=require PGCONNECT_TIMEOUT=10 timeout 20 psql -X -q -h 127.0.0.1 -p "$S_TX" -U bench -d bench -Atc 'select 1' 2>&1); then
    SUMUN_AUTH_NOTE[require]="TLS + token login through Sumun failed: $(echo "$err" | grep -v '^\s*$' | tail -2 | tr '\n' ' ' | cut -c1-300)"
  fi
  if ! err=$(PGPASSWORD=$PGPASS PGSSLMODE=disable PGCONNECT_TIMEOUT=10 timeout 20 psql -X -q -h 127.0.0.1 -p "$S_TX" -U bench -d bench -Atc 'select 1' 2>&1); then
    SUMUN_AUTH_NOTE[disable]="plain SCRAM login through Sumun failed: $(echo "$err" | grep -v '^\s*$' | tail -2 | tr '\n' ' ' | cut -c1-300)"
  fi
  return 0
}
if [ -z "$SUMUN_NOTE" ]; then
  if setup_sumun; then
    echo "Sumun transaction :$S_TX, session :$S_SESSION (pid $SUMUN_PID)"
  else
    [ -n "$SUMUN_PID" ] && stop_pid "$SUMUN_PID"; SUMUN_PID=""
  fi
fi
[ -n "$SUMUN_NOTE" ] && echo "Sumun rows will be reported as failed: $SUMUN_NOTE" >&2
for m in disable require; do [ -n "${SUMUN_AUTH_NOTE[$m]:-}" ] && echo "sslmode=$m Sumun rows will be reported as failed: ${SUMUN_AUTH_NOTE[$m]}" >&2; done
# Why a proxy's row cannot run: PROXY PID SSLMODE -> reason on stdout, or nothing.
skip_reason() {
  if ! alive "$2"; then echo "${SUMUN_NOTE:-$1 not running}"; return; fi
  [ "$1" = sumun ] && echo "${SUMUN_AUTH_NOTE[$3]:-}"
  return 0
}

# --- measurement helpers -------------------------------------------------------------------
TCK=$(getconf CLK_TCK)
# utime + stime of all the process's threads (fields 14 and 15 of /proc/PID/stat).
cpu_ticks() { [ -n "$1" ] && [ -r "/proc/$1/stat" ] || return 0; sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
div() { awk -v a="$1" -v b="$2" -v f="${3:-%.2f}" 'BEGIN { if (a != "" && b != "" && b + 0 > 0) printf f, a / b; else print "-" }'; }

declare -A TPS CPU
THROUGHPUT=(); STORM=(); SCALING=(); IDLE=()

# ratio_cols PROXY KEY TPS CPU: "Sumun/PgBouncer" TPS and CPU ratios for Sumun rows.
ratio_cols() {
  if [ "$1" = sumun ] && [ -n "${TPS[pgbouncer/$2]:-}" ]; then
    echo "$(div "$3" "${TPS[pgbouncer/$2]}") | $(div "$4" "${CPU[pgbouncer/$2]:-}")"
  else echo " | "; fi
}

# bench ARRAY PROXY PATH KEY PID PORT SSLMODE PASSWORD PGBENCH-ARGS...
# Runs pgbench against 127.0.0.1:PORT as bench/bench; appends a row to the named array.
bench() {
  local -n rows=$1
  local proxy=$2 path=$3 key=$4 pid=$5 port=$6 sslmode=$7 pass=$8; shift 8
  local args=("$@" -T "$DURATION" -h 127.0.0.1 -p "$port" -U bench bench)
  local test="${args[*]:0:$#}" t0 t1 out rc=0 tps lat txns cpu="-" shown r
  shown="PGSSLMODE=$sslmode PGPASSWORD=$([ "$pass" = "$TOKEN" ] && [ -n "$TOKEN" ] && echo '$TOKEN' || echo '$PGPASS') pgbench ${args[*]}"
  local why=""; [ "$proxy" != direct ] && why=$(skip_reason "$proxy" "$pid" "$sslmode")
  if [ -n "$why" ]; then
    rows+=("| \`$test\` | $path | failed | | | $(ratio_cols "$proxy" "$key" "" "") |")
    echo "  $path: failed ($why)"
    return 0
  fi
  log_cmd "$shown"
  t0=$(cpu_ticks "$pid")
  out=$(PGSSLMODE=$sslmode PGPASSWORD=$pass PGCONNECT_TIMEOUT=10 timeout -k 5 $((DURATION + 90)) "$PGBENCH" "${args[@]}" 2>&1) || rc=$?
  t1=$(cpu_ticks "$pid")
  tps=$(echo "$out" | awk '/^tps = / {printf "%.0f", $3; exit}')
  lat=$(echo "$out" | awk '/^latency average/ {print $4; exit}')
  txns=$(echo "$out" | awk -F': ' '/actually processed/ {split($2, a, "/"); print a[1] + 0; exit}')
  if [ -z "$tps" ] || [ "${txns:-0}" = 0 ] || { [ "$proxy" != direct ] && ! alive "$pid"; }; then
    echo "$out" > "$W/failed-$(echo "$path $key" | tr -c 'A-Za-z0-9' _).log"
    rows+=("| \`$test\` | $path | failed | | | $(ratio_cols "$proxy" "$key" "" "") |")
    echo "  $path: failed (rc $rc): $(echo "$out" | grep -v '^\s*$' | tail -2 | tr '\n' ' ' | cut -c1-240)"
    return 0
  fi
  [ -n "$pid" ] && cpu=$(awk -v d=$((t1 - t0)) -v n="$txns" -v t="$TCK" 'BEGIN { printf "%.1f", d * 1e6 / t / n }')
  [ "$rc" != 0 ] && tps="$tps (rc $rc: $(echo "$out" | grep -c -i 'error\|abort') errors)"
  TPS[$proxy/$key]=${tps%% *}; CPU[$proxy/$key]=$cpu
  r=$(ratio_cols "$proxy" "$key" "${tps%% *}" "$cpu")
  rows+=("| \`$test\` | $path | $tps | $lat | $cpu | $r |")
  [ "$proxy" = sumun ] && r="vs PgBouncer: TPS x${r%% |*}, CPU x${r##*| }" || r=""
  printf '  %-40s %8s tps %8s ms %7s µs/txn  %s\n' "$path" "$tps" "$lat" "$cpu" "$r"
}

elapsed() { echo $(( $(date +%s) - STARTED ))s; }

# --- throughput rows -------------------------------------------------------------------------
echo "running pgbench rows (${DURATION}s each, clients: $CLIENTS)..."
for script in select tpcb; do
  sflag=(); [ "$script" = select ] && sflag=(-S)
  for c in $CLIENTS; do
    j=$(( c < 2 ? c : 2 ))
    echo "[$(elapsed)] pgbench ${sflag[*]} -c $c -j $j"
    bench THROUGHPUT direct "direct" "$script-c$c" "" "$PG_PORT" disable "$PGPASS" "${sflag[@]}" -c "$c" -j "$j"
    for mode in transaction session; do
      if [ $mode = transaction ]; then bport=$B_TX; bpid=$B_TX_PID; sport=$S_TX
      else bport=$B_SESSION; bpid=$B_SESSION_PID; sport=$S_SESSION; fi
      bench THROUGHPUT pgbouncer "PgBouncer $mode" "$script-c$c-$mode-plain" "$bpid" "$bport" disable "$PGPASS" "${sflag[@]}" -c "$c" -j "$j"
      bench THROUGHPUT sumun "Sumun $mode" "$script-c$c-$mode-plain" "$SUMUN_PID" "$sport" disable "$PGPASS" "${sflag[@]}" -c "$c" -j "$j"
      bench THROUGHPUT pgbouncer "PgBouncer $mode, TLS + SCRAM" "$script-c$c-$mode-tls" "$bpid" "$bport" require "$PGPASS" "${sflag[@]}" -c "$c" -j "$j"
      bench THROUGHPUT sumun "Sumun $mode, TLS + token" "$script-c$c-$mode-tls" "$SUMUN_PID" "$sport" require "${TOKEN:-x}" "${sflag[@]}" -c "$c" -j "$j"
    done
  done
done

# --- connection storm: a new connection per transaction --------------------------------------
echo "[$(elapsed)] pgbench -S -C -c $CONNECT_CLIENTS (new connection per transaction)"
CJ=$(( CONNECT_CLIENTS < 2 ? CONNECT_CLIENTS : 2 ))
bench STORM direct "direct, SCRAM" "C-plain" "" "$PG_PORT" disable "$PGPASS" -S -C -c "$CONNECT_CLIENTS" -j "$CJ"
bench STORM pgbouncer "PgBouncer transaction, SCRAM" "C-plain" "$B_TX_PID" "$B_TX" disable "$PGPASS" -S -C -c "$CONNECT_CLIENTS" -j "$CJ"
bench STORM sumun "Sumun transaction, SCRAM" "C-plain" "$SUMUN_PID" "$S_TX" disable "$PGPASS" -S -C -c "$CONNECT_CLIENTS" -j "$CJ"
bench STORM pgbouncer "PgBouncer transaction, TLS + SCRAM" "C-tls" "$B_TX_PID" "$B_TX" require "$PGPASS" -S -C -c "$CONNECT_CLIENTS" -j "$CJ"
bench STORM sumun "Sumun transaction, TLS + token" "C-tls" "$SUMUN_PID" "$S_TX" require "${TOKEN:-x}" -S -C -c "$CONNECT_CLIENTS" -j "$CJ"

# --- core scaling: proxies pinned to one core vs unpinned -------------------------------------
echo "[$(elapsed)] core scaling: pgbench -S -c 32, transaction mode, proxy pinned to CPU 0 vs unpinned"
pin() { [ -n "$2" ] && taskset -a -p -c "$1" "$2" >/dev/null 2>&1 || true; }
ALLCPUS=0-$((NPROC - 1))
# Sumun unpinned runs one worker per core (a second process with `workers = NPROC`); pinned,
# the usual process (`workers = SUMUN_WORKERS`) on CPU 0.
SCALE_PID=""; S_SCALE=$(free_port)
if [ -n "$SUMUN_PID" ]; then
  MAIN_PID=$SUMUN_PID; MAIN_NOTE=$SUMUN_NOTE
  WORKERS=$NPROC sumun_toml "$W/sumun-scale.toml" "pg-scale:$S_SCALE:transaction"
  if start_sumun "$W/sumun-scale.toml" "$W/sumun-scale.log" "$S_SCALE"; then SCALE_PID=$SUMUN_PID; fi
  SUMUN_PID=$MAIN_PID; SUMUN_NOTE=$MAIN_NOTE
  log_cmd "SUMUN_LOG=warn sumun serve --config sumun-scale.toml   # [gateway] workers = $NPROC, listener pg-scale (transaction)"
fi
for pinning in unpinned pinned; do
  if [ $pinning = pinned ]; then
    pin 0 "$B_TX_PID"; pin 0 "$SUMUN_PID"
    log_cmd "taskset -a -p -c 0 PID   # PgBouncer, and Sumun with workers = $SUMUN_WORKERS: all threads"
    label="pinned to 1 core (taskset -c 0)"
    spid=$SUMUN_PID; sport=$S_TX; slabel="Sumun transaction, workers = $SUMUN_WORKERS, $label"
  else
    label="unpinned ($NPROC cores)"
    spid=$SCALE_PID; sport=$S_SCALE; slabel="Sumun transaction, workers = $NPROC, $label"
  fi
  bench SCALING pgbouncer "PgBouncer transaction, $label" "scale-$pinning" "$B_TX_PID" "$B_TX" disable "$PGPASS" -S -c 32 -j 2
  [ -n "$spid" ] && bench SCALING sumun "$slabel" "scale-$pinning" "$spid" "$sport" disable "$PGPASS" -S -c 32 -j 2
done
pin "$ALLCPUS" "$B_TX_PID"; pin "$ALLCPUS" "$SUMUN_PID"
[ -n "$SCALE_PID" ] && stop_pid "$SCALE_PID"
SCALE_NOTE="Scaling (unpinned / pinned TPS): PgBouncer $(div "${TPS[pgbouncer/scale-unpinned]:-}" "${TPS[pgbouncer/scale-pinned]:-}"), Sumun $(div "${TPS[sumun/scale-unpinned]:-}" "${TPS[sumun/scale-pinned]:-}")."

# --- idle clients: proxy RSS holding IDLE_N logged-in connections ----------------------------
# Each measurement uses a fresh proxy process in transaction mode, warmed with one login (so
# its backend pool exists), then IDLE_N clients log in and stay idle.
declare -A IDLE_KIB
idle_run() { # PROXY PATH TLS(0|1) PID PORT PASSWORD
  local proxy=$1 path=$2 tls=$3 pid=$4 port=$5 pass=$6 before after line ok failed secs per
  local tlsarg=(); [ "$tls" = 1 ] && tlsarg=(--tls)
  local key="idle-$tls" sslmode=disable; [ "$tls" = 1 ] && sslmode=require
  local why; why=$(skip_reason "$proxy" "$pid" "$sslmode")
  if [ -n "$why" ]; then
    IDLE+=("| $path | failed | | | | | |"); echo "  $path: failed ($why)"; return 0
  fi
  PGPASSWORD=$pass PGSSLMODE=$sslmode PGCONNECT_TIMEOUT=10 timeout 20 psql -X -q -h 127.0.0.1 -p "$port" -U bench -d bench -Atc 'select 1' >/dev/null 2>&1 || true
  sleep 1
  before=$(rss_kib "$pid")
  log_cmd "python3 bench/postgres/idle_clients.py --port $port -n $IDLE_N ${tlsarg[*]} --password \$$([ "$proxy" = sumun ] && [ "$tls" = 1 ] && echo TOKEN || echo PGPASS)"
  local outf=$W/idle-$proxy-$tls.out
  python3 "$HERE/idle_clients.py" --port "$port" -n "$IDLE_N" "${tlsarg[@]}" --password "$pass" --hold 900 >"$outf" 2>&1 &
  local cpid=$!; pids+=("$cpid")
  for _ in $(seq 3000); do grep -q '^READY' "$outf" 2>/dev/null && break; alive "$cpid" || break; sleep 0.1; done
  sleep 2
  after=$(rss_kib "$pid")
  line=$(grep -m1 '^READY' "$outf" || true)
  stop_pid "$cpid"
  ok=$(echo "$line" | sed -n 's/.* ok=\([0-9]*\).*/\1/p'); failed=$(echo "$line" | sed -n 's/.* failed=\([0-9]*\).*/\1/p')
  secs=$(echo "$line" | sed -n 's/.* seconds=\([0-9.]*\).*/\1/p')
  if [ -z "$ok" ] || [ "$ok" = 0 ] || ! alive "$pid"; then
    IDLE+=("| $path | failed | | | | | |")
    echo "  $path: failed: $(tail -2 "$outf" | tr '\n' ' ' | cut -c1-240)"; return 0
  fi
  per=$(div $((after - before)) "$ok" %.2f)
  IDLE_KIB[$proxy/$key]=$per
  local ratio=""; [ "$proxy" = sumun ] && ratio=$(div "$per" "${IDLE_KIB[pgbouncer/$key]:-}")
  local err=""; [ "${failed:-0}" != 0 ] && err=" ($failed failed: $(echo "$line" | sed -n 's/.*first_error=//p' | cut -c1-80))"
  IDLE+=("| $path | $ok$err | $secs | $(div "$before" 1024 %.1f) | $(div "$after" 1024 %.1f) | $per | $ratio |")
  printf '  %-36s %6s clients in %5ss  RSS %s -> %s MiB  %s KiB/client %s\n' "$path" "$ok" "$secs" "$(div "$before" 1024 %.1f)" "$(div "$after" 1024 %.1f)" "$per" "${err}"
}
echo "[$(elapsed)] idle clients: $IDLE_N logged-in connections per proxy"
# The throughput proxies are done: stop them so they take no CPU or memory from this part.
SUMUN_UP=0; [ -n "$SUMUN_PID" ] && SUMUN_UP=1
for p in "$B_TX_PID" "$B_SESSION_PID" "$SUMUN_PID"; do [ -n "$p" ] && stop_pid "$p"; done
SUMUN_PID=""
for tls in 0 1; do
  tname=$([ $tls = 1 ] && echo "TLS" || echo "plain")
  port=$(free_port)
  start_pgbouncer "pgbouncer-idle-$tls" "$port" transaction
  idle_run pgbouncer "PgBouncer, $tname + SCRAM" "$tls" "$PGB_PID" "$port" "$PGPASS"
  stop_pid "$PGB_PID"
  if [ "$SUMUN_UP" = 1 ]; then
    port=$(free_port)
    sumun_toml "$W/sumun-idle-$tls.toml" "pg-idle:$port:transaction"
    if start_sumun "$W/sumun-idle-$tls.toml" "$W/sumun-idle-$tls.log" "$port"; then
      idle_run sumun "Sumun, $tname + $([ $tls = 1 ] && echo token || echo SCRAM)" "$tls" "$SUMUN_PID" "$port" "$([ $tls = 1 ] && echo "$TOKEN" || echo "$PGPASS")"
      stop_pid "$SUMUN_PID"
    else
      idle_run sumun "Sumun, $tname" "$tls" "" "" ""
    fi
  else
    idle_run sumun "Sumun, $tname" "$tls" "" "" ""
  fi
done

# --- report --------------------------------------------------------------------------------
TOTAL=$(elapsed)
PG_VER=$("$PGBIN/postgres" --version | awk '{print $3}')
PGB_VER=$("$PGBOUNCER" --version 2>/dev/null | head -1 | awk '{print $2}')
PGBENCH_VER=$("$PGBENCH" --version | awk '{print $3}')
SUMUN_VER="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
[ -x "$SUMUN" ] && SUMUN_VER="$("$SUMUN" --version 2>/dev/null | head -1 || true) (commit $SUMUN_VER)"
HEAD_ROW="| test | path | TPS | latency ms | proxy CPU µs/txn | Sumun/PgBouncer TPS | Sumun/PgBouncer CPU |"
SEP_ROW="|---|---|---|---|---|---|---|"
{
  echo "# PostgreSQL benchmark: Sumun vs PgBouncer vs direct"
  echo
  echo "Run: \`$([ "$QUICK" = 1 ] && echo "QUICK=1 ")bench/postgres/run.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'), $NPROC cores"
  echo "($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), Linux $(uname -r), ${DURATION} s per row, total $TOTAL."
  echo "PostgreSQL $PG_VER (scale $SCALE, fsync off, max_connections 400), pgbench $PGBENCH_VER, PgBouncer $PGB_VER, Sumun $SUMUN_VER,"
  echo "Python $(python3 -c 'import platform; print(platform.python_version())'), $(openssl version | cut -d' ' -f1-2). TLS certificate: $CERT_SRC."
  echo
  echo "pgbench, PostgreSQL and the proxy share the cores, so a proxy's CPU is taken from the"
  echo "others: proxy CPU µs per transaction (utime + stime from /proc/PID/stat over the row,"
  echo "divided by the transactions pgbench processed) ranks the proxies as much as TPS does."
  echo "Ratios: Sumun / PgBouncer on the same test, mode and transport (TPS: higher is better;"
  echo "CPU: lower is better). Pools: $POOL_SIZE server connections per database/user in both proxies."
  echo "Sumun runs with \`[gateway] workers = $SUMUN_WORKERS\` (one event loop, as PgBouncer) except in the core-scaling rows."
  echo "Auth: direct and PgBouncer rows log in with SCRAM-SHA-256 (plain: sslmode=disable; TLS:"
  echo "sslmode=require); Sumun plain rows with SCRAM-SHA-256 against its own verifier, Sumun TLS"
  echo "rows with a \`sumun token\` as the password."
  if [ -n "$SUMUN_NOTE" ]; then echo; echo "**Sumun rows failed:** $SUMUN_NOTE"; fi
  for m in disable require; do [ -n "${SUMUN_AUTH_NOTE[$m]:-}" ] && { echo; echo "**Sumun sslmode=$m rows failed:** ${SUMUN_AUTH_NOTE[$m]}"; }; done
  echo
  echo "## Throughput"
  echo
  echo "$HEAD_ROW"; echo "$SEP_ROW"
  printf '%s\n' "${THROUGHPUT[@]}"
  echo
  echo "In session mode only $POOL_SIZE clients hold a server connection at a time; with more"
  echo "clients the rest wait for a free one (both proxies behave the same way)."
  echo
  echo "## Connection storm (\`-C\`: a new connection, and login, per transaction)"
  echo
  echo "TPS here is logins per second. With SCRAM each login also costs the client (libpq in"
  echo "pgbench) a 4096-round PBKDF2 on the same cores; a Sumun token login over TLS does not."
  echo
  echo "$HEAD_ROW"; echo "$SEP_ROW"
  printf '%s\n' "${STORM[@]}"
  echo
  echo "## Core scaling"
  echo
  echo "The proxy's threads pinned to CPU 0 with \`taskset -a -p -c 0\` vs free to use all $NPROC cores"
  echo "(Sumun: one worker pinned, one worker per core unpinned); pgbench and PostgreSQL are not pinned."
  echo
  echo "$HEAD_ROW"; echo "$SEP_ROW"
  printf '%s\n' "${SCALING[@]}"
  echo
  echo "$SCALE_NOTE"
  echo
  echo "## Idle clients"
  echo
  echo "A fresh proxy (transaction mode), warmed with one login; then $IDLE_N clients log in"
  echo "(bench/postgres/idle_clients.py, 128 logins in flight) and stay idle. KiB per client ="
  echo "(VmRSS after - VmRSS before) / clients held."
  echo
  echo "| path | clients held | login time s | RSS before MiB | RSS after MiB | KiB per client | Sumun/PgBouncer |"
  echo "|---|---|---|---|---|---|---|"
  printf '%s\n' "${IDLE[@]}"
  echo
  echo "## Commands"
  echo
  echo "Ports are picked free per run. \$PGPASS is the role's random password, \$TOKEN the Sumun token."
  echo
  echo '```'
  printf '%s\n' "${CMDS[@]}"
  echo '```'
  if [ -f "$HERE/NOTES.md" ]; then echo; cat "$HERE/NOTES.md"; fi
} > "$OUT"
echo "[$TOTAL] wrote $OUT"
