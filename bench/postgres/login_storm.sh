#!/usr/bin/env bash
# Login storms through Sumun's `postgres` listener, against PgBouncer and against connecting
# directly, with an older Sumun build side by side (issue 15, item 9: "Blocking work on the
# data-plane workers"). Everything runs on loopback in one run: a private PostgreSQL 15 on a
# free port (scram-sha-256 for TCP), two PgBouncers, one Sumun per build, pgbench.
#
#   a. Client login storm: `pgbench -S -C` (a new client connection and login per transaction)
#      through a transaction-mode pool; the pool's server connections stay open.
#   b. Backend login storm: the same, through a session-mode pool whose server connections are
#      used once, so every client login also makes a new server connection and SCRAM login to
#      PostgreSQL (PgBouncer `server_lifetime = 0`, "used only once, then closed"; Sumun
#      `max_lifetime = "1ms"`, closed at its first release). Every row reports the server
#      logins PostgreSQL counted (pg_stat_database.sessions) per transaction, which shows it.
#  b2. b's TLS rows with `verify-full` TLS from the proxy to PostgreSQL (`ssl = on`, dev CA).
#   c. b's storms again while a bystander, logged in beforehand to the same listener, runs
#      `pgbench -S -c 1 -R 200 -l`: its latency percentiles show the proxy's event-loop stalls.
#
# Writes bench/postgres/LOGIN_STORM.md and prints every command it timed.
#
#   bench/postgres/login_storm.sh                                   # Sumun from target/release
#   SUMUN_BEFORE=/path/to/old/sumun SUMUN_BEFORE_REV=f841c4b bench/postgres/login_storm.sh
#   DURATION=5 ROUNDS=2 bench/postgres/login_storm.sh               # shorter
#
# Other knobs: CLIENTS=16 (pgbench -c), POOL_SIZE=20, SUMUN=path (SUMUN_REV=its commit, for the
# report), BYSTANDER_RATE=200 (section c's -R), SUMUN_BUILD=0 (never run
# cargo), SUMUN_WORKERS=1 (`[gateway] workers`, as in run.sh: one event loop, as PgBouncer),
# OUT=file, KEEP=1 (keep the work directory with all logs). Every row runs ROUNDS times (3),
# rounds one after another, Sumun before and after alternating which goes first.
#
# Needs (installed with apt-get when run as root): postgresql (15), postgresql-client (pgbench),
# pgbouncer, openssl, python3. Run as root: PostgreSQL and PgBouncer run as user `postgres`.
#
# Auth, as in run.sh: direct and PgBouncer rows log in with SCRAM-SHA-256 as role `bench`
# (plain: sslmode=disable; TLS: sslmode=require); Sumun plain rows with SCRAM-SHA-256 against
# the verifier from `sumun users set-password` (same password), Sumun TLS rows with a
# `sumun token` as the password. Each Sumun build has a vault of its own, made by its own
# binary, and logs in to PostgreSQL with the vault secret `pg/bench` (SCRAM-SHA-256, 4096
# iterations, PostgreSQL's default).
set -euo pipefail
ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 65536 2>/dev/null || true
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
HERE=$ROOT/bench/postgres

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-16}
POOL_SIZE=${POOL_SIZE:-20}
SUMUN_WORKERS=${SUMUN_WORKERS:-1}
SCALE=${SCALE:-10}
SUMUN=${SUMUN:-$ROOT/target/release/sumun}
SUMUN_BEFORE=${SUMUN_BEFORE:-}
SUMUN_BEFORE_REV=${SUMUN_BEFORE_REV:-}
SUMUN_BUILD=${SUMUN_BUILD:-1}
OUT=${OUT:-$HERE/LOGIN_STORM.md}
KEEP=${KEEP:-0}
NPROC=$(nproc)
STARTED=$(date +%s)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
J=$(( CLIENTS < 2 ? CLIENTS : 2 ))

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
PGBENCH=$PGBIN/pgbench; [ -x "$PGBENCH" ] || PGBENCH=$(command -v pgbench)

if [ ! -x "$SUMUN" ] && [ "$SUMUN_BUILD" = 1 ]; then
  echo "building sumun (cargo build --release -p sumun)..."
  cargo build --release -p sumun >/dev/null || true
fi
[ -x "$SUMUN" ] || { echo "$SUMUN not found (build it with cargo build --release -p sumun)" >&2; exit 1; }
if [ -n "$SUMUN_BEFORE" ] && [ ! -x "$SUMUN_BEFORE" ]; then echo "SUMUN_BEFORE=$SUMUN_BEFORE is not an executable" >&2; exit 1; fi

# --- work directory and cleanup --------------------------------------------------------------
W=$(mktemp -d /tmp/sumun-storm.XXXXXX)
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
alive() { # PID: running (not gone, not a zombie)
  [ -n "$1" ] && [ -r "/proc/$1/stat" ] && [ "$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)" != Z ]
}
wait_port() { # PORT [PID]: wait up to 10 s; fail early if PID died
  for _ in $(seq 100); do
    (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    [ -n "${2:-}" ] && ! alive "$2" && return 1
    sleep 0.1
  done
  return 1
}

CMDS=()
log_cmd() { CMDS+=("$1"); echo "  \$ $1"; }

# --- certificates --------------------------------------------------------------------------
CERTS=$W/certs
if "$SUMUN" cert dev --out "$CERTS" >"$W/cert.log" 2>&1 && [ -f "$CERTS/server.pem" ]; then
  CERT_SRC="sumun cert dev"
else
  mkdir -p "$CERTS"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$CERTS/server-key.pem" -out "$CERTS/server.pem" >"$W/cert.log" 2>&1
  CERT_SRC="openssl (self-signed P-256)"
fi
chown -R postgres "$CERTS"; chmod 600 "$CERTS/server-key.pem"
# Section d: PostgreSQL also takes TLS (its clients choose), checked against the dev CA.
BACKEND_TLS=0; [ -f "$CERTS/ca.pem" ] && BACKEND_TLS=1

# --- PostgreSQL ------------------------------------------------------------------------------
PGPASS=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
printf '%s\n' "$PGPASS" > "$W/pgpass.txt"; chmod 600 "$W/pgpass.txt"
PG_PORT=$(free_port)
PGDATA=$W/pg; mkdir -p "$PGDATA"; chown postgres "$PGDATA"
echo "PostgreSQL on 127.0.0.1:$PG_PORT ($PGDATA)"
as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres -E UTF8 --auth-local=trust --auth-host=scram-sha-256 >"$W/initdb.log" 2>&1
PG_OPTS="-p $PG_PORT -k $PGDATA -c listen_addresses=127.0.0.1 -c max_connections=400 -c shared_buffers=256MB -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c password_encryption=scram-sha-256"
[ "$BACKEND_TLS" = 1 ] && PG_OPTS="$PG_OPTS -c ssl=on -c ssl_cert_file=$CERTS/server.pem -c ssl_key_file=$CERTS/server-key.pem"
as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/log" -o "$PG_OPTS" -w start >/dev/null
log_cmd "pg_ctl -D PGDATA -o \"$PG_OPTS\" start   # initdb --auth-host=scram-sha-256"
as_pg psql -q -X -h "$PGDATA" -p "$PG_PORT" -U postgres -d postgres \
  -c "CREATE ROLE bench LOGIN PASSWORD '$PGPASS'" -c "CREATE DATABASE bench OWNER bench" >/dev/null
PGPASSWORD=$PGPASS PGSSLMODE=disable "$PGBENCH" -i -s "$SCALE" -q -h 127.0.0.1 -p "$PG_PORT" -U bench bench >"$W/pgbench-init.log" 2>&1
log_cmd "pgbench -i -s $SCALE -q -h 127.0.0.1 -p $PG_PORT -U bench bench"
# Server logins PostgreSQL has seen to database bench (each psql here is a new backend, so the
# snapshot is fresh; it connects to database postgres over the socket, not counted).
pg_sessions() {
  as_pg psql -X -At -h "$PGDATA" -p "$PG_PORT" -U postgres -d postgres \
    -c "SELECT sessions FROM pg_stat_database WHERE datname = 'bench'" 2>/dev/null || echo ""
}

# --- PgBouncer: transaction mode, and session mode with server connections used once ----------
# The auth file holds the role's SCRAM verifier; PgBouncer logs in to PostgreSQL with the keys
# from the client's own SCRAM exchange (it never runs PBKDF2 itself).
PG_VERIFIER=$(as_pg psql -X -At -h "$PGDATA" -p "$PG_PORT" -U postgres -d postgres -c "SELECT rolpassword FROM pg_authid WHERE rolname = 'bench'")
printf '"bench" "%s"\n' "$PG_VERIFIER" > "$W/userlist.txt"; chown postgres "$W/userlist.txt"; chmod 600 "$W/userlist.txt"
start_pgbouncer() { # NAME PORT MODE EXTRA-LINES [SERVER-TLS-LINES] -> sets PGB_PID
  cat > "$W/$1.ini" <<INI
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
${5:-server_tls_sslmode = disable}
log_connections = 0
log_disconnections = 0
log_pooler_errors = 1
stats_period = 60
$4
INI
  chown postgres "$W/$1.ini"
  setpriv --reuid=postgres --regid=postgres --init-groups "$PGBOUNCER" "$W/$1.ini" >"$W/$1.log" 2>&1 &
  PGB_PID=$!; pids+=("$PGB_PID")
  wait_port "$2" "$PGB_PID" || { echo "PgBouncer $1 did not start:" >&2; tail -5 "$W/$1.log" >&2; exit 1; }
}
B_TX=$(free_port); B_ONCE=$(free_port)
start_pgbouncer pgbouncer-tx "$B_TX" transaction ""; B_TX_PID=$PGB_PID
start_pgbouncer pgbouncer-once "$B_ONCE" session "server_lifetime = 0"; B_ONCE_PID=$PGB_PID
B_ONCE_TLS=""; B_ONCE_TLS_PID=""
if [ "$BACKEND_TLS" = 1 ]; then
  B_ONCE_TLS=$(free_port)
  start_pgbouncer pgbouncer-once-tls "$B_ONCE_TLS" session "server_lifetime = 0" "server_tls_sslmode = verify-full
server_tls_ca_file = $CERTS/ca.pem"; B_ONCE_TLS_PID=$PGB_PID
fi
log_cmd "pgbouncer pgbouncer-tx.ini     # pool_mode = transaction, default_pool_size = $POOL_SIZE, auth_type = scram-sha-256 (auth_file: the role's SCRAM verifier), client_tls_sslmode = allow"
log_cmd "pgbouncer pgbouncer-once.ini   # the same with pool_mode = session, server_lifetime = 0 (man 5 pgbouncer: \"used only once, then closed\")"
[ "$BACKEND_TLS" = 1 ] && log_cmd "pgbouncer pgbouncer-once-tls.ini   # pgbouncer-once.ini with server_tls_sslmode = verify-full, server_tls_ca_file = ca.pem"
echo "PgBouncer transaction :$B_TX (pid $B_TX_PID), session/once :$B_ONCE (pid $B_ONCE_PID)"

# --- Sumun: one process per build, each with a vault of its own --------------------------------
sumun_toml() { # FILE VAULT-DIR TX-PORT ONCE-PORT ONCE-TLS-PORT
  cat > "$1" <<TOML
[gateway]
name = "bench"
workers = $SUMUN_WORKERS
[vault]
dir = "$2"
key_file = "$2/master.key"
[tls.default]
cert = "$CERTS/server.pem"
key = "$CERTS/server-key.pem"
[[security_groups]]
name = "local"
ingress = [{ cidr = "127.0.0.0/8" }]
[[listeners]]
name = "pg-tx"
bind = "127.0.0.1:$3"
protocol = "postgres"
tls = "optional"
tls_config = "default"
target_group = "pg"
security_groups = ["local"]
max_connections = 12000
pool = { mode = "transaction", size = $POOL_SIZE }
[[listeners]]
name = "pg-once"
bind = "127.0.0.1:$4"
protocol = "postgres"
tls = "optional"
tls_config = "default"
target_group = "pg"
security_groups = ["local"]
max_connections = 12000
pool = { mode = "session", size = $POOL_SIZE, max_lifetime = "1ms" }
[[target_groups]]
name = "pg"
targets = [{ address = "127.0.0.1:$PG_PORT" }]
TOML
  [ "$BACKEND_TLS" = 1 ] && cat >> "$1" <<TOML
[[listeners]]
name = "pg-once-tls"
bind = "127.0.0.1:$5"
protocol = "postgres"
tls = "optional"
tls_config = "default"
target_group = "pg-tls"
security_groups = ["local"]
max_connections = 12000
pool = { mode = "session", size = $POOL_SIZE, max_lifetime = "1ms" }
[[target_groups]]
name = "pg-tls"
tls = "verify-full"
tls_ca = "$CERTS/ca.pem"
targets = [{ address = "127.0.0.1:$PG_PORT" }]
TOML
  cat >> "$1" <<TOML
[[users]]
name = "bench"
auth = ["token", "scram"]
backend_credential = "pg/bench"
TOML
}
declare -A S_PID S_TX S_ONCE S_ONCE_TLS S_TOKEN S_NOTE S_BIN
setup_sumun() { # BUILD(after|before) BINARY
  local b=$1 bin=$2 cfg=$W/sumun-$1.toml vault=$W/vault-$1 tx once oncetls pid err
  tx=$(free_port); once=$(free_port); oncetls=$(free_port)
  S_BIN[$b]=$bin; S_TX[$b]=$tx; S_ONCE[$b]=$once; S_ONCE_TLS[$b]=$oncetls; S_PID[$b]=""
  sumun_toml "$cfg" "$vault" "$tx" "$once" "$oncetls"
  local setup=$W/sumun-$b-setup.log
  "$bin" vault init --config "$cfg" >"$setup" 2>&1 \
    && "$bin" secrets put pg/bench --value-file "$W/pgpass.txt" --kind postgres --address "127.0.0.1:$PG_PORT" --username bench --database bench --config "$cfg" >>"$setup" 2>&1 \
    && "$bin" users set-password bench --value-file "$W/pgpass.txt" --config "$cfg" >>"$setup" 2>&1 \
    && S_TOKEN[$b]=$("$bin" token --user bench --database bench --ttl 1h --config "$cfg" 2>>"$setup") \
    && [ -n "${S_TOKEN[$b]}" ] || { S_NOTE[$b]="setup failed: $(tail -1 "$setup")"; return 1; }
  if [ "$b" = after ]; then
    log_cmd "sumun vault init --config sumun.toml"
    log_cmd "sumun secrets put pg/bench --value-file pgpass.txt --kind postgres --address 127.0.0.1:$PG_PORT --username bench --database bench --config sumun.toml"
    log_cmd "sumun users set-password bench --value-file pgpass.txt --config sumun.toml"
    log_cmd "TOKEN=\$(sumun token --user bench --database bench --ttl 1h --config sumun.toml)"
  fi
  SUMUN_LOG=warn "$bin" serve --config "$cfg" >"$W/sumun-$b.log" 2>&1 &
  pid=$!; pids+=("$pid")
  if ! wait_port "$tx" "$pid" || ! wait_port "$once" "$pid"; then
    S_NOTE[$b]="sumun serve did not start: $(grep -v '^\s*$' "$W/sumun-$b.log" | tail -3 | tr '\n' ' ' | cut -c1-300)"
    return 1
  fi
  S_PID[$b]=$pid
  [ "$b" = after ] && log_cmd "SUMUN_LOG=warn sumun serve --config sumun.toml   # workers = $SUMUN_WORKERS; listeners pg-tx (pool = { mode = \"transaction\", size = $POOL_SIZE }) and pg-once (pool = { mode = \"session\", size = $POOL_SIZE, max_lifetime = \"1ms\" }), tls = \"optional\"$([ "$BACKEND_TLS" = 1 ] && echo "; pg-once-tls as pg-once, to target group pg-tls: tls = verify-full, tls_ca = ca.pem")"
  [ "$b" = before ] && log_cmd "SUMUN_LOG=warn \$SUMUN_BEFORE serve --config sumun-before.toml   # the same config, its own vault made by the same commands with \$SUMUN_BEFORE"
  # One login each way, so a build that cannot log in fails here, not in every row.
  local ports=("$tx" "$once"); [ "$BACKEND_TLS" = 1 ] && ports+=("$oncetls")
  for port in "${ports[@]}"; do
    if ! err=$(PGPASSWORD=${S_TOKEN[$b]} PGSSLMODE=require PGCONNECT_TIMEOUT=10 timeout 20 psql -X -q -h 127.0.0.1 -p "$port" -U bench -d bench -Atc 'select 1' 2>&1) \
      || ! err=$(PGPASSWORD=$PGPASS PGSSLMODE=disable PGCONNECT_TIMEOUT=10 timeout 20 psql -X -q -h 127.0.0.1 -p "$port" -U bench -d bench -Atc 'select 1' 2>&1); then
      S_NOTE[$b]="login through Sumun ($b) failed: $(echo "$err" | grep -v '^\s*$' | tail -2 | tr '\n' ' ' | cut -c1-300)"
      return 1
    fi
  done
  echo "Sumun $b ($bin): transaction :$tx, session/once :$once (pid $pid)"
}
BUILDS=(after)
[ -n "$SUMUN_BEFORE" ] && BUILDS+=(before)
for b in "${BUILDS[@]}"; do
  bin=$SUMUN; [ "$b" = before ] && bin=$SUMUN_BEFORE
  setup_sumun "$b" "$bin" || echo "Sumun $b rows will be reported as failed: ${S_NOTE[$b]}" >&2
done

# --- measurement ---------------------------------------------------------------------------
TCK=$(getconf CLK_TCK)
# utime + stime of all the process's threads (fields 14 and 15 of /proc/PID/stat).
cpu_ticks() { [ -n "$1" ] && [ -r "/proc/$1/stat" ] || return 0; sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
elapsed() { echo $(( $(date +%s) - STARTED ))s; }

# Per row (key): the values of every round, space-separated.
declare -A R_TPS R_CPU R_LOGINS R_LABEL R_FAIL R_P50 R_P90 R_P99 R_MAX R_BTX
ROWS_CLIENT=(); ROWS_BACKEND=(); ROWS_STALL=(); ROWS_BTLS=()
BYSTANDER_RATE=${BYSTANDER_RATE:-200}
# The bystander (storm "stall"): one client that stays logged in to the same listener and runs
# `pgbench -S -R BYSTANDER_RATE` during the storm; its per-transaction latencies (pgbench -l)
# show how long the proxy's event loop kept it waiting.
# measure STORM KEY LABEL PID PORT SSLMODE PASSWORD PASSWORD-SHOWN
measure() {
  local storm=$1 key=$2 label=$3 pid=$4 port=$5 sslmode=$6 pass=$7 shown=$8
  local args=(-S -C -c "$CLIENTS" -j "$J" -T "$DURATION" -h 127.0.0.1 -p "$port" -U bench bench)
  local t0 t1 s0 s1 out rc=0 tps txns cpu="" logins="" p50="" p90="" p99="" pmax="" bn=""
  if [ -z "${R_LABEL[$key]:-}" ]; then
    R_LABEL[$key]=$label
    case $storm in client) ROWS_CLIENT+=("$key") ;; backend) ROWS_BACKEND+=("$key") ;; backend-tls) ROWS_BTLS+=("$key") ;; *) ROWS_STALL+=("$key") ;; esac
  fi
  if [ "$pid" = none ]; then R_FAIL[$key]=1; echo "  $label: failed (not running)"; return 0; fi
  log_cmd "PGSSLMODE=$sslmode PGPASSWORD=$shown pgbench ${args[*]}   # $label"
  local bpid="" blog=""
  if [ "$storm" = stall ]; then
    blog=$W/bystander-$(echo "$key" | tr -c 'A-Za-z0-9' _)-$round; mkdir -p "$blog"
    log_cmd "PGSSLMODE=disable PGPASSWORD=\$PGPASS pgbench -S -c 1 -j 1 -R $BYSTANDER_RATE -T $((DURATION + 1)) -l -h 127.0.0.1 -p $port -U bench bench   # the bystander, started 0.5 s before the storm"
    (cd "$blog" && PGSSLMODE=disable PGPASSWORD=$PGPASS PGCONNECT_TIMEOUT=10 timeout -k 5 $((DURATION + 60)) "$PGBENCH" -S -c 1 -j 1 -R "$BYSTANDER_RATE" -T $((DURATION + 1)) -l -h 127.0.0.1 -p "$port" -U bench bench >out.txt 2>&1) &
    bpid=$!
    sleep 0.5
  fi
  echo "    (load average $(cut -d' ' -f1 /proc/loadavg))"
  s0=$(pg_sessions); t0=$(cpu_ticks "$pid")
  out=$(PGSSLMODE=$sslmode PGPASSWORD=$pass PGCONNECT_TIMEOUT=10 timeout -k 5 $((DURATION + 90)) "$PGBENCH" "${args[@]}" 2>&1) || rc=$?
  t1=$(cpu_ticks "$pid")
  if [ -n "$bpid" ]; then
    wait "$bpid" || true
    # pgbench -l: client, transaction, latency µs, script, epoch s, µs[, schedule lag µs]
    local lat; lat=$(cat "$blog"/pgbench_log.* 2>/dev/null | awk '{print $3}' | sort -n | awk '
      { v[NR] = $1 }
      END {
        if (NR == 0) exit
        h = int(NR * 0.5) + 1; t = int(NR * 0.9) + 1; n = int(NR * 0.99) + 1; if (n > NR) n = NR
        printf "%.2f %.2f %.2f %.2f %d", v[h] / 1000, v[t] / 1000, v[n] / 1000, v[NR] / 1000, NR
      }' || true)
    if [ -n "$lat" ]; then
      read -r p50 p90 p99 pmax bn <<<"$lat"
      R_P50[$key]="${R_P50[$key]:-} $p50"; R_P90[$key]="${R_P90[$key]:-} $p90"; R_P99[$key]="${R_P99[$key]:-} $p99"; R_MAX[$key]="${R_MAX[$key]:-} $pmax"; R_BTX[$key]="${R_BTX[$key]:-} $bn"
    fi
  fi
  sleep 1.5   # backends that just ended flush their statistics
  s1=$(pg_sessions)
  tps=$(echo "$out" | awk '/^tps = / {printf "%.0f", $3; exit}')
  txns=$(echo "$out" | awk -F': ' '/actually processed/ {split($2, a, "/"); print a[1] + 0; exit}')
  if [ -z "$tps" ] || [ "${txns:-0}" = 0 ] || { [ -n "$pid" ] && ! alive "$pid"; }; then
    echo "$out" > "$W/failed-$(echo "$key" | tr -c 'A-Za-z0-9' _).log"
    R_FAIL[$key]=1
    echo "  $label: failed (rc $rc): $(echo "$out" | grep -v '^\s*$' | tail -2 | tr '\n' ' ' | cut -c1-240)"
    return 0
  fi
  if [ "$rc" != 0 ]; then   # some connections failed: kept, and said in the table
    echo "$out" > "$W/errors-$(echo "$key" | tr -c 'A-Za-z0-9' _)-$round.log"
    R_FAIL[$key]=1
    echo "  $label: pgbench rc $rc: $(echo "$out" | grep -i -m2 'error\|abort' | tr '\n' ' ' | cut -c1-240)"
  fi
  [ -n "$pid" ] && cpu=$(awk -v d=$((t1 - t0)) -v n="$txns" -v t="$TCK" 'BEGIN { printf "%.1f", d * 1e6 / t / n }')
  [ -n "$s0" ] && [ -n "$s1" ] && logins=$(awk -v d=$((s1 - s0)) -v n="$txns" 'BEGIN { printf "%.2f", d / n }')
  R_TPS[$key]="${R_TPS[$key]:-} $tps"; R_CPU[$key]="${R_CPU[$key]:-} ${cpu:--}"; R_LOGINS[$key]="${R_LOGINS[$key]:-} ${logins:--}"
  printf '  %-52s %7s tps %8s µs/txn proxy CPU %6s server logins/txn' "$label" "$tps" "${cpu:--}" "${logins:--}"
  [ -n "$bpid" ] && printf '  bystander ms p50 %s p90 %s p99 %s max %s (%s txns)' "${p50:--}" "${p90:--}" "${p99:--}" "${pmax:--}" "${bn:--}"
  echo
}
# A Sumun row: BUILD STORM KEY-PREFIX LABEL SSLMODE
sumun_row() {
  local b=$1 storm=$2 key=$3 label=$4 sslmode=$5 port pass shown pid
  case $storm in
    client) port=${S_TX[$b]:-} ;;
    backend-tls) port=${S_ONCE_TLS[$b]:-} ;;
    *) port=${S_ONCE[$b]:-} ;;   # backend, stall: used once
  esac
  pid=${S_PID[$b]:-}; [ -n "$pid" ] || pid=none
  if [ "$sslmode" = require ]; then pass=${S_TOKEN[$b]:-x}; shown='$TOKEN'; else pass=$PGPASS; shown='$PGPASS'; fi
  measure "$storm" "$key/sumun-$b" "$label" "$pid" "${port:-1}" "$sslmode" "$pass" "$shown"
}
sumun_rows() { # ROUND STORM KEY LABEL-PREFIX SSLMODE: every build, alternating which goes first
  local order=("${BUILDS[@]}") b
  [ $(( $1 % 2 )) = 0 ] && [ ${#BUILDS[@]} = 2 ] && order=(before after)
  for b in "${order[@]}"; do sumun_row "$b" "$2" "$3" "$4 ($b)" "$5"; done
}

for round in $(seq "$ROUNDS"); do
  echo "[$(elapsed)] round $round of $ROUNDS: pgbench -S -C -c $CLIENTS -j $J -T $DURATION per row"
  echo " client login storm (transaction-mode pools)"
  measure client plain/direct "direct, SCRAM" "" "$PG_PORT" disable "$PGPASS" '$PGPASS'
  measure client plain/pgbouncer "PgBouncer transaction, SCRAM" "$B_TX_PID" "$B_TX" disable "$PGPASS" '$PGPASS'
  sumun_rows "$round" client plain "Sumun transaction, SCRAM" disable
  measure client tls/pgbouncer "PgBouncer transaction, TLS + SCRAM" "$B_TX_PID" "$B_TX" require "$PGPASS" '$PGPASS'
  sumun_rows "$round" client tls "Sumun transaction, TLS + token" require
  echo " backend login storm (session-mode pools, server connections used once)"
  measure backend once-plain/pgbouncer "PgBouncer session, server_lifetime = 0, SCRAM" "$B_ONCE_PID" "$B_ONCE" disable "$PGPASS" '$PGPASS'
  sumun_rows "$round" backend once-plain "Sumun session, max_lifetime = 1ms, SCRAM" disable
  measure backend once-tls/pgbouncer "PgBouncer session, server_lifetime = 0, TLS + SCRAM" "$B_ONCE_PID" "$B_ONCE" require "$PGPASS" '$PGPASS'
  sumun_rows "$round" backend once-tls "Sumun session, max_lifetime = 1ms, TLS + token" require
  if [ "$BACKEND_TLS" = 1 ]; then
    echo " backend login storm with TLS to PostgreSQL (verify-full)"
    measure backend-tls once-btls/pgbouncer "PgBouncer session, server_lifetime = 0, TLS + SCRAM, verify-full to PostgreSQL" "$B_ONCE_TLS_PID" "$B_ONCE_TLS" require "$PGPASS" '$PGPASS'
    sumun_rows "$round" backend-tls once-btls "Sumun session, max_lifetime = 1ms, TLS + token, verify-full to PostgreSQL" require
  fi
  echo " a bystander's latency during the backend login storm"
  measure stall stall-plain/pgbouncer "PgBouncer session, server_lifetime = 0, SCRAM storm" "$B_ONCE_PID" "$B_ONCE" disable "$PGPASS" '$PGPASS'
  sumun_rows "$round" stall stall-plain "Sumun session, max_lifetime = 1ms, SCRAM storm" disable
  measure stall stall-tls/pgbouncer "PgBouncer session, server_lifetime = 0, TLS + SCRAM storm" "$B_ONCE_PID" "$B_ONCE" require "$PGPASS" '$PGPASS'
  sumun_rows "$round" stall stall-tls "Sumun session, max_lifetime = 1ms, TLS + token storm" require
done

# --- report --------------------------------------------------------------------------------
# summ VALUES: "median (min–max)" of the numbers among VALUES ("-" when none).
summ() {
  echo "$1" | tr ' ' '\n' | grep -E '^[0-9.]+$' | sort -g | awk -v f="${2:-%.0f}" '
    { v[NR] = $1 }
    END {
      if (NR == 0) { print "-"; exit }
      m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
      if (NR == 1 || v[1] == v[NR]) printf f "\n", m
      else printf f " (" f "–" f ")\n", m, v[1], v[NR]
    }'
}
median() { summ "$1" | awk '{print $1}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b + 0 > 0) printf "%.2f", a / b; else print "" }'; }
table() { # KEYS...
  local k proxy base after before
  echo "| path | TPS (logins/s) | proxy CPU µs/txn | server logins/txn | TPS vs PgBouncer | CPU vs PgBouncer | TPS after/before | CPU after/before |"
  echo "|---|---|---|---|---|---|---|---|"
  for k in "$@"; do
    proxy=${k##*/}; base=${k%/*}
    if [ -n "${R_FAIL[$k]:-}" ] && [ -z "${R_TPS[$k]:-}" ]; then
      echo "| ${R_LABEL[$k]} | failed${S_NOTE[${proxy#sumun-}]:+: ${S_NOTE[${proxy#sumun-}]}} | | | | | | |"; continue
    fi
    local vp="" vc="" ab_t="" ab_c=""
    if [ "${proxy#sumun}" != "$proxy" ]; then
      vp=$(ratio "$(median "${R_TPS[$k]}")" "$(median "${R_TPS[$base/pgbouncer]:-}")")
      vc=$(ratio "$(median "${R_CPU[$k]}" %.1f)" "$(median "${R_CPU[$base/pgbouncer]:-}" %.1f)")
    fi
    if [ "$proxy" = sumun-after ] && [ -n "${R_TPS[$base/sumun-before]:-}" ]; then
      ab_t=$(ratio "$(median "${R_TPS[$k]}")" "$(median "${R_TPS[$base/sumun-before]}")")
      ab_c=$(ratio "$(median "${R_CPU[$k]}" %.1f)" "$(median "${R_CPU[$base/sumun-before]}" %.1f)")
    fi
    local fail=""; [ -n "${R_FAIL[$k]:-}" ] && fail=" (some connections or rounds failed)"
    echo "| ${R_LABEL[$k]} | $(summ "${R_TPS[$k]}")$fail | $(summ "${R_CPU[$k]}" %.1f) | $(summ "${R_LOGINS[$k]}" %.2f) | $vp | $vc | $ab_t | $ab_c |"
  done
}
TOTAL=$(elapsed)
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
PG_VER=$("$PGBIN/postgres" --version | awk '{print $3}')
PGB_VER=$("$PGBOUNCER" --version 2>/dev/null | head -1 | awk '{print $2}')
PGBENCH_VER=$("$PGBENCH" --version | awk '{print $3}')
HEAD_REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')
DIRTY=$(git -C "$ROOT" status --porcelain -- crates Cargo.toml Cargo.lock 2>/dev/null | wc -l)
if [ -n "${SUMUN_REV:-}" ]; then AFTER_VER="$("$SUMUN" --version 2>/dev/null | head -1 || true), commit $SUMUN_REV"
else AFTER_VER="$("$SUMUN" --version 2>/dev/null | head -1 || true), $SUMUN, working tree at commit $HEAD_REV$([ "$DIRTY" != 0 ] && echo " ($DIRTY changed source files at report time)")"; fi
BEFORE_VER="not run (SUMUN_BEFORE unset)"
[ -n "$SUMUN_BEFORE" ] && BEFORE_VER="$("$SUMUN_BEFORE" --version 2>/dev/null | head -1 || true)${SUMUN_BEFORE_REV:+, commit $SUMUN_BEFORE_REV}"
{
  echo "# Login storms: Sumun after vs before vs PgBouncer vs direct"
  echo
  echo "Run: \`$([ -n "$SUMUN_BEFORE" ] && echo "SUMUN_BEFORE=... ")DURATION=$DURATION ROUNDS=$ROUNDS bench/postgres/login_storm.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'), $NPROC cores"
  echo "($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), Linux $(uname -r), ${DURATION} s per row, $ROUNDS rounds, total $TOTAL;"
  echo "load average $LOAD_START at the start, $LOAD_END at the end (other work on the machine shows there)."
  echo "PostgreSQL $PG_VER (scram-sha-256 for TCP, fsync off), pgbench $PGBENCH_VER, PgBouncer $PGB_VER, $(openssl version | cut -d' ' -f1-2). TLS certificate: $CERT_SRC."
  echo
  echo "- Sumun after: $AFTER_VER."
  echo "- Sumun before: $BEFORE_VER."
  echo
  echo "Every row is \`pgbench -S -C -c $CLIENTS -j $J -T $DURATION\`: a new client connection and login per"
  echo "transaction, so TPS is logins per second. Each cell is the median of the rounds, with the"
  echo "range (min–max) when the rounds differ; ratios are of medians. Proxy CPU µs per transaction"
  echo "is utime + stime of all the proxy's threads (/proc/PID/stat) over the row, divided by the"
  echo "transactions pgbench processed. Server logins per transaction is the growth of PostgreSQL's"
  echo "\`pg_stat_database.sessions\` for database \`bench\` over the row divided by the same count"
  echo "(pgbench's own first connection adds one per row). pgbench, PostgreSQL and the proxy share"
  echo "the cores; with SCRAM each client login also costs pgbench (libpq) a 4096-round PBKDF2, a"
  echo "Sumun token login over TLS does not. Sumun runs \`[gateway] workers = $SUMUN_WORKERS\`; pools of $POOL_SIZE server"
  echo "connections in both proxies."
  for b in after before; do [ -n "${S_NOTE[$b]:-}" ] && { echo; echo "**Sumun $b failed:** ${S_NOTE[$b]}"; }; done
  echo
  echo "## a. Client login storm (transaction-mode pools: server connections stay open)"
  echo
  table "${ROWS_CLIENT[@]}"
  echo
  echo "## b. Backend login storm (session-mode pools, each server connection used once)"
  echo
  echo "PgBouncer \`pool_mode = session\`, \`server_lifetime = 0\` (\"the connection is to be used only"
  echo "once, then closed\", man 5 pgbouncer); Sumun \`pool = { mode = \"session\", size = $POOL_SIZE,"
  echo "max_lifetime = \"1ms\" }\` (a server connection older than \`max_lifetime\` is closed at its"
  echo "release, and the next client opens a new one). Every client login is also a server"
  echo "connection and a SCRAM-SHA-256 login to PostgreSQL, as the server logins column shows. The"
  echo "direct row (each client login is a PostgreSQL login) is the one of table a."
  echo
  table plain/direct "${ROWS_BACKEND[@]}"
  echo
  if [ "$BACKEND_TLS" = 1 ]; then
    echo "## b2. Backend login storm with TLS to PostgreSQL"
    echo
    echo "Table b's TLS rows with TLS from the proxy to PostgreSQL too (\`ssl = on\` with the dev"
    echo "certificate), its certificate checked against the dev CA: PgBouncer \`server_tls_sslmode ="
    echo "verify-full\`, \`server_tls_ca_file\`; Sumun target group \`tls = \"verify-full\"\`, \`tls_ca\`. Every"
    echo "client login is also a TLS handshake and a SCRAM login to PostgreSQL."
    echo
    table "${ROWS_BTLS[@]}"
    echo
  fi
  echo "## c. A bystander's latency during the backend login storm"
  echo
  echo "Table b's storms again, while one more client, logged in before the storm to the same"
  echo "listener (its own server connection, held for the whole row), runs \`pgbench -S -c 1 -R $BYSTANDER_RATE\`"
  echo "(a $BYSTANDER_RATE/s schedule). Its latency per transaction (pgbench \`-l\`, median / 90th / 99th percentile / worst,"
  echo "in ms, across all its transactions of the row; cells: median and range over the rounds) is"
  echo "how long the proxy kept an unrelated client waiting while logins went on. Sumun runs one"
  echo "worker, so the bystander and the storm share one event loop; PgBouncer is one thread."
  echo "Storm TPS and CPU include the bystander's work, so compare them within this table only."
  echo
  echo "| storm | storm TPS | proxy CPU µs/storm txn | bystander p50 ms | p90 ms | p99 ms | max ms | bystander txns |"
  echo "|---|---|---|---|---|---|---|---|"
  for k in "${ROWS_STALL[@]}"; do
    if [ -z "${R_TPS[$k]:-}" ]; then echo "| ${R_LABEL[$k]} | failed | | | | | | |"; continue; fi
    echo "| ${R_LABEL[$k]} | $(summ "${R_TPS[$k]}") | $(summ "${R_CPU[$k]}" %.1f) | $(summ "${R_P50[$k]:-}" %.2f) | $(summ "${R_P90[$k]:-}" %.2f) | $(summ "${R_P99[$k]:-}" %.2f) | $(summ "${R_MAX[$k]:-}" %.1f) | $(summ "${R_BTX[$k]:-}") |"
  done
  echo
  echo "## Commands"
  echo
  echo "Ports are picked free per run. \$PGPASS is the role's random password, \$TOKEN the Sumun token"
  echo "(each build's own, made by its own binary)."
  echo
  echo '```'
  printf '%s\n' "${CMDS[@]}" | awk '!seen[$0]++'
  echo '```'
} > "$OUT"
echo "[$TOTAL] wrote $OUT"
