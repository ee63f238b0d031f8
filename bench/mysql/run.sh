#!/usr/bin/env bash
# Side-by-side benchmark of Sumun's `mysql` listeners (session and transaction mode, plain text
# with a gateway-held password and TLS with a token, query audit on) against HAProxy `mode tcp`
# and against connecting directly (issue 18, "Benchmark"). Everything runs on loopback in one
# run: a private MariaDB on a free port, HAProxy, Sumun, sysbench (and
# bench/mysql/login_storm.lua for the login storm). Writes bench/mysql/RESULTS.md and prints
# every command it timed.
#
#   bench/mysql/run.sh                   # full run, 10 s per row (about 10 minutes)
#   DURATION=5 bench/mysql/run.sh        # shorter rows
#   QUICK=1 bench/mysql/run.sh           # smoke run: 3 s rows, 1 table of 10,000 rows
#   SUMUN_BUILD=0 bench/mysql/run.sh     # never run cargo; Sumun rows fail if the binary is missing
#
# Other knobs: THREADS=32, TABLES=4, TABLE_SIZE=100000, STORM_THREADS=16, POOL_SIZE=20 (Sumun's
# transaction-mode pool), SUMUN=path, OUT=file, KEEP=1 (keep the work directory with all logs),
# SUMUN_WORKERS=1 (Sumun's `[gateway] workers`; HAProxy runs `nbthread` the same), SCALING=0
# (skip the two-thread rows).
#
# Needs (installed with apt-get when run as root): sysbench, haproxy, mariadb-server,
# mariadb-client, openssl, python3.
#
# Paths and logins (sysbench as user sbtest, mysql_native_password at MariaDB):
#   direct                     MariaDB, plain text, the account's password
#   direct, TLS                MariaDB's own TLS (--mysql-ssl=on), the account's password
#   HAProxy                    HAProxy `mode tcp` -> MariaDB, plain text
#   HAProxy, TLS at MariaDB    HAProxy `mode tcp`; the client's TLS passes through to MariaDB
#   Sumun ..., password        plain text; the gateway-held password (`sumun users set-password`,
#                              the same password) checked with mysql_native_password
#   Sumun ..., TLS + token     TLS ends at Sumun; a `sumun token` as the password
#                              (mysql_clear_password inside TLS)
#   Sumun session|transaction  listener `mysql-session` (a server connection per client) or
#                              `mysql-transaction` (a pool of POOL_SIZE shared between transactions);
#                              Sumun logs in to MariaDB with the vault's password; every COM_QUERY
#                              audited, masked.
# There is no "HAProxy terminating TLS" row: MySQL clients start TLS inside the protocol (an SSL
# request after the server's greeting), so a `bind ... ssl` frontend, which expects a TLS
# ClientHello first, cannot serve them; the script checks this once and records what the
# client says.
set -euo pipefail
ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 65536 2>/dev/null || true
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
HERE=$ROOT/bench/mysql

QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
  DURATION=${DURATION:-3}; TABLES=${TABLES:-1}; TABLE_SIZE=${TABLE_SIZE:-10000}
else
  DURATION=${DURATION:-10}; TABLES=${TABLES:-4}; TABLE_SIZE=${TABLE_SIZE:-100000}
fi
THREADS=${THREADS:-32}
STORM_THREADS=${STORM_THREADS:-16}
SUMUN_WORKERS=${SUMUN_WORKERS:-1}
POOL_SIZE=${POOL_SIZE:-20}
SCALING=${SCALING:-1}
SUMUN=${SUMUN:-$ROOT/target/release/sumun}
SUMUN_BUILD=${SUMUN_BUILD:-1}
OUT=${OUT:-$HERE/RESULTS.md}
KEEP=${KEEP:-0}
NPROC=$(nproc)
STARTED=$(date +%s)
STARTED_AT=$(date -u '+%Y-%m-%d %H:%M UTC')
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# --- packages ------------------------------------------------------------------------------
need=()
command -v sysbench >/dev/null || need+=(sysbench)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
[ -x /usr/sbin/mariadbd ] || command -v mariadbd >/dev/null || need+=(mariadb-server)
command -v mariadb >/dev/null || need+=(mariadb-client)
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
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
MARIADBD=$(command -v mariadbd || echo /usr/sbin/mariadbd)
MYSQL=$(command -v mariadb || command -v mysql)

SUMUN_NOTE=""
if [ "$SUMUN_BUILD" = 1 ]; then
  echo "building sumun (cargo build --release -p sumun)..."
  cargo build --release -p sumun >/dev/null 2>"${TMPDIR:-/tmp}/sumun-mysql-bench-build.log" \
    || SUMUN_NOTE="cargo build failed: $(tail -3 "${TMPDIR:-/tmp}/sumun-mysql-bench-build.log" | tr '\n' ' ')"
fi
[ -x "$SUMUN" ] || SUMUN_NOTE=${SUMUN_NOTE:-"$SUMUN not found (SUMUN_BUILD=0)"}

# --- work directory and cleanup --------------------------------------------------------------
W=$(mktemp -d /tmp/sumun-mysqlbench.XXXXXX)
pids=()
cleanup() {
  local p
  trap - EXIT INT TERM
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  if [ "$KEEP" = 1 ]; then echo "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'echo interrupted >&2; exit 130' INT TERM
trap 'echo "$0: line $LINENO: command failed (exit $?)" >&2' ERR

# Other work may rebuild target/release/sumun during the run: run a copy, and say what it was.
SUMUN_BUILT=""; SUMUN_DIRTY=""
if [ -x "$SUMUN" ]; then
  SUMUN_BUILT=$(date -u -r "$SUMUN" '+%Y-%m-%d %H:%M UTC')
  SUMUN_DIRTY=$(git -C "$ROOT" status --porcelain -- crates Cargo.lock 2>/dev/null | wc -l)
  cp "$SUMUN" "$W/sumun-bin"; SUMUN=$W/sumun-bin
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
alive() { # PID: running (not gone, not a zombie)
  [ -n "$1" ] && [ -r "/proc/$1/stat" ] && [ "$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)" != Z ]
}
wait_port() { # PORT [PID]: wait up to 30 s; fail early if PID died
  for _ in $(seq 300); do
    (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    [ -n "${2:-}" ] && ! alive "$2" && return 1
    sleep 0.1
  done
  return 1
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
elapsed() { echo $(( $(date +%s) - STARTED ))s; }

# --- certificates --------------------------------------------------------------------------
# sysbench 1.0 with --mysql-ssl=on passes client-key.pem, client-cert.pem and cacert.pem from
# its working directory to mysql_ssl_set, so they must exist there; the client certificate is
# signed by the same CA (nobody here asks for it).
CERTS=$W/certs
SB=$W/sysbench; mkdir -p "$SB"
if [ -x "$SUMUN" ] && "$SUMUN" cert dev --out "$CERTS" >"$W/cert.log" 2>&1 && [ -f "$CERTS/ca-key.pem" ]; then
  CERT_SRC="sumun cert dev (P-256 CA and server certificate)"
else
  mkdir -p "$CERTS"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench-ca \
    -keyout "$CERTS/ca-key.pem" -out "$CERTS/ca.pem" >>"$W/cert.log" 2>&1
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
    -keyout "$CERTS/server-key.pem" -out "$CERTS/server.csr" >>"$W/cert.log" 2>&1
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > "$CERTS/san.ext"
  openssl x509 -req -in "$CERTS/server.csr" -CA "$CERTS/ca.pem" -CAkey "$CERTS/ca-key.pem" -CAcreateserial \
    -days 2 -extfile "$CERTS/san.ext" -out "$CERTS/server.pem" >>"$W/cert.log" 2>&1
  CERT_SRC="openssl (P-256 CA and server certificate)"
fi
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=sbtest \
  -keyout "$SB/client-key.pem" -out "$W/client.csr" >>"$W/cert.log" 2>&1
openssl x509 -req -in "$W/client.csr" -CA "$CERTS/ca.pem" -CAkey "$CERTS/ca-key.pem" -CAcreateserial \
  -days 2 -out "$SB/client-cert.pem" >>"$W/cert.log" 2>&1
cp "$CERTS/ca.pem" "$SB/cacert.pem"
cat "$CERTS/server.pem" "$CERTS/server-key.pem" > "$CERTS/haproxy.pem"
chmod 600 "$CERTS"/*key*.pem "$CERTS/haproxy.pem" "$SB/client-key.pem"

# --- MariaDB ---------------------------------------------------------------------------------
# As crates/testkit/src/mariadb.rs: mariadb-install-db into a temp dir, --no-defaults first (the
# machine's my.cnf names port 3306), loopback only, anonymous users deleted. Larger buffer pool
# and redo log than the testkit's so the sysbench tables stay in memory.
DBPASS=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
printf '%s\n' "$DBPASS" > "$W/dbpass.txt"; chmod 600 "$W/dbpass.txt"
MDATA=$W/mariadb; MSOCK=$W/mariadb.sock
USERARG=(); [ "$(id -u)" = 0 ] && USERARG=(--user=root)
SIZE_FLAGS=(--innodb-buffer-pool-size=512M --innodb-log-file-size=128M)
mariadb-install-db --no-defaults "${USERARG[@]}" --datadir="$MDATA" --auth-root-authentication-method=normal \
  --skip-test-db --skip-name-resolve --skip-log-bin "${SIZE_FLAGS[@]}" >"$W/mariadb-install.log" 2>&1
M_PORT=$(free_port)
M_FLAGS="--bind-address=127.0.0.1 --skip-name-resolve --skip-log-bin --innodb-flush-log-at-trx-commit=2 --max-connections=1000 --log-warnings=1 ${SIZE_FLAGS[*]} --ssl-cert=$CERTS/server.pem --ssl-key=$CERTS/server-key.pem --ssl-ca=$CERTS/ca.pem"
# shellcheck disable=SC2086
"$MARIADBD" --no-defaults "${USERARG[@]}" --datadir="$MDATA" --socket="$MSOCK" --pid-file="$W/mariadb.pid" \
  --port="$M_PORT" $M_FLAGS >"$W/mariadb.log" 2>&1 &
M_PID=$!; pids+=("$M_PID")
wait_port "$M_PORT" "$M_PID" || { echo "MariaDB did not start:" >&2; tail -20 "$W/mariadb.log" >&2; exit 1; }
for _ in $(seq 100); do "$MYSQL" --no-defaults --socket="$MSOCK" -uroot -e 'select 1' >/dev/null 2>&1 && break; sleep 0.1; done
log_cmd "mariadbd --no-defaults --datadir=DATA --port=$M_PORT $M_FLAGS"
root_sql() { "$MYSQL" --no-defaults --socket="$MSOCK" -uroot -N -B -e "$1"; }
root_sql "DELETE FROM mysql.global_priv WHERE User=''; FLUSH PRIVILEGES"
root_sql "CREATE DATABASE sbtest; CREATE USER 'sbtest'@'%' IDENTIFIED BY '$DBPASS'; GRANT ALL PRIVILEGES ON sbtest.* TO 'sbtest'@'%'"
M_VER=$(root_sql "select version()")
echo "MariaDB $M_VER on 127.0.0.1:$M_PORT (pid $M_PID)"

# sysbench always runs from $SB (for the --mysql-ssl files); the password is given on the
# command line (sysbench has no environment variable for it); printed commands say $DBPASS/$TOKEN.
SB_COMMON=(--db-driver=mysql --mysql-user=sbtest --mysql-db=sbtest --tables="$TABLES" --table-size="$TABLE_SIZE")
log_cmd "sysbench oltp_read_only ${SB_COMMON[*]} --threads=2 --mysql-host=127.0.0.1 --mysql-port=$M_PORT --mysql-password=\$DBPASS prepare"
t0=$(date +%s)
(cd "$SB" && sysbench oltp_read_only "${SB_COMMON[@]}" --threads=2 --mysql-host=127.0.0.1 --mysql-port="$M_PORT" \
  --mysql-password="$DBPASS" prepare) >"$W/prepare.log" 2>&1 || { echo "sysbench prepare failed:" >&2; tail -5 "$W/prepare.log" >&2; exit 1; }
echo "prepared $TABLES tables x $TABLE_SIZE rows in $(( $(date +%s) - t0 ))s"

# --- HAProxy ---------------------------------------------------------------------------------
haproxy_cfg() { # FILE NBTHREAD PLAIN_PORT [SSL_PORT]
  cat > "$1" <<CFG
global
  nbthread $2
  maxconn 8000
  log stderr format raw local0 warning
defaults
  mode tcp
  log global
  timeout connect 5s
  timeout client 1h
  timeout server 1h
listen mysql
  bind 127.0.0.1:$3
  server maria 127.0.0.1:$M_PORT
CFG
  if [ -n "${4:-}" ]; then
    cat >> "$1" <<CFG
listen mysql-ssl-terminated
  bind 127.0.0.1:$4 ssl crt $CERTS/haproxy.pem
  server maria 127.0.0.1:$M_PORT
CFG
  fi
}
start_haproxy() { # NAME NBTHREAD PLAIN_PORT [SSL_PORT] -> sets HAP_PID
  haproxy_cfg "$W/$1.cfg" "$2" "$3" "${4:-}"
  "$HAPROXY" -db -f "$W/$1.cfg" >"$W/$1.log" 2>&1 &
  HAP_PID=$!; pids+=("$HAP_PID")
  wait_port "$3" "$HAP_PID" || { echo "HAProxy $1 did not start:" >&2; tail -5 "$W/$1.log" >&2; exit 1; }
}
H_PORT=$(free_port); H_SSL=$(free_port)
start_haproxy haproxy "$SUMUN_WORKERS" "$H_PORT" "$H_SSL"; H_PID=$HAP_PID
log_cmd "haproxy -db -f haproxy.cfg   # nbthread $SUMUN_WORKERS; listen mysql: mode tcp, bind 127.0.0.1:$H_PORT, server 127.0.0.1:$M_PORT; listen mysql-ssl-terminated: bind 127.0.0.1:$H_SSL ssl crt haproxy.pem"
echo "HAProxy :$H_PORT, TLS-terminating :$H_SSL (pid $H_PID)"
# MySQL's TLS starts after the server's greeting (the client's SSL request), so a frontend that
# expects a ClientHello first cannot serve MySQL clients; record what the client sees.
HAP_TLS_NOTE=$(cd "$SB" && MYSQL_PWD=$DBPASS timeout 15 "$MYSQL" --no-defaults --protocol=TCP -h 127.0.0.1 -P "$H_SSL" -usbtest \
  --ssl --connect-timeout=5 -N -B -e 'select 1' 2>&1 | head -2 | tr '\n' ' ' || true)
log_cmd "MYSQL_PWD=\$DBPASS mariadb --protocol=TCP -h 127.0.0.1 -P $H_SSL -usbtest --ssl -e 'select 1'   # through 'bind ... ssl crt': $HAP_TLS_NOTE"

# --- Sumun ---------------------------------------------------------------------------------
# One process, two `mysql` listeners on the same target: session mode (a server connection per
# client) and transaction mode (a pool of POOL_SIZE server connections shared between
# transactions). `tls = "optional"`: TLS clients log in with a token, plain-text clients with the
# gateway-held password (mysql_native_password against the verifier `sumun users set-password`
# stores; the same password as the MariaDB account, as in the PostgreSQL benchmark).
VAULT=$W/vault
sumun_toml() { # FILE WORKERS SESSION_PORT [TRANSACTION_PORT]
  cat > "$1" <<TOML
[gateway]
name = "bench"
workers = $2
[vault]
dir = "$VAULT"
key_file = "$VAULT/master.key"
[audit]
path = "$W/audit-$2.jsonl"
[tls.default]
cert = "$CERTS/server.pem"
key = "$CERTS/server-key.pem"
[[security_groups]]
name = "local"
ingress = [{ cidr = "127.0.0.0/8" }]
[[listeners]]
name = "mysql-session"
bind = "127.0.0.1:$3"
protocol = "mysql"
tls = "optional"
tls_config = "default"
target_group = "maria"
security_groups = ["local"]
max_connections = 12000
audit_queries = "masked"
TOML
  if [ -n "${4:-}" ]; then
    cat >> "$1" <<TOML
[[listeners]]
name = "mysql-transaction"
bind = "127.0.0.1:$4"
protocol = "mysql"
tls = "optional"
tls_config = "default"
target_group = "maria"
security_groups = ["local"]
max_connections = 12000
audit_queries = "masked"
pool = { mode = "transaction", size = $POOL_SIZE }
TOML
  fi
  cat >> "$1" <<TOML
[[target_groups]]
name = "maria"
targets = [{ address = "127.0.0.1:$M_PORT" }]
[[users]]
name = "sbtest"
auth = ["token", "password"]
backend_credential = "maria/sbtest"
databases = ["sbtest"]
TOML
}
start_sumun() { # CONFIG LOG PORT -> sets SUMUN_PID, or returns 1
  SUMUN_LOG=warn "$SUMUN" serve --config "$1" >"$2" 2>&1 &
  SUMUN_PID=$!; pids+=("$SUMUN_PID")
  wait_port "$3" "$SUMUN_PID" && return 0
  SUMUN_NOTE="sumun serve did not start: $(grep -v '^\s*$' "$2" | tail -3 | tr '\n' ' ' | cut -c1-300 || true)"
  stop_pid "$SUMUN_PID"; SUMUN_PID=""
  return 1
}
S_PORT=$(free_port); S_TX=$(free_port)
SUMUN_PID=""; TOKEN=""
declare -A SUMUN_AUTH_NOTE=()
# try_login PORT SSL(on|off) PASSWORD: one `select 1` through Sumun; prints the error if any.
try_login() {
  local sslarg=(--skip-ssl); [ "$2" = on ] && sslarg=(--ssl)
  (cd "$SB" && MYSQL_PWD=$3 timeout 20 "$MYSQL" --no-defaults --protocol=TCP -h 127.0.0.1 -P "$1" -usbtest "${sslarg[@]}" \
    --connect-timeout=5 -D sbtest -N -B -e 'select 1' 2>&1 >/dev/null) | grep -v '^\s*$' | tail -2 | tr '\n' ' ' | cut -c1-300 || true
}
setup_sumun() {
  local cfg=$W/sumun.toml err port ssl
  sumun_toml "$cfg" "$SUMUN_WORKERS" "$S_PORT" "$S_TX"
  "$SUMUN" vault init --config "$cfg" >"$W/sumun-setup.log" 2>&1 || { SUMUN_NOTE="sumun vault init failed: $(tail -1 "$W/sumun-setup.log")"; return 1; }
  "$SUMUN" secrets put maria/sbtest --value-file "$W/dbpass.txt" --kind mysql --address "127.0.0.1:$M_PORT" --username sbtest --config "$cfg" >>"$W/sumun-setup.log" 2>&1 \
    || { SUMUN_NOTE="sumun secrets put failed: $(tail -1 "$W/sumun-setup.log")"; return 1; }
  "$SUMUN" users set-password sbtest --value-file "$W/dbpass.txt" --config "$cfg" >>"$W/sumun-setup.log" 2>&1 \
    || SUMUN_AUTH_NOTE[off]="sumun users set-password failed: $(tail -1 "$W/sumun-setup.log")"
  TOKEN=$("$SUMUN" token --user sbtest --database sbtest --ttl 1h --config "$cfg" 2>>"$W/sumun-setup.log") && [ -n "$TOKEN" ] \
    || { SUMUN_NOTE="sumun token failed: $(tail -1 "$W/sumun-setup.log")"; return 1; }
  log_cmd "sumun vault init --config sumun.toml"
  log_cmd "sumun secrets put maria/sbtest --value-file dbpass.txt --kind mysql --address 127.0.0.1:$M_PORT --username sbtest --config sumun.toml"
  log_cmd "sumun users set-password sbtest --value-file dbpass.txt --config sumun.toml"
  log_cmd "TOKEN=\$(sumun token --user sbtest --database sbtest --ttl 1h --config sumun.toml)"
  start_sumun "$cfg" "$W/sumun.log" "$S_PORT" || return 1
  wait_port "$S_TX" "$SUMUN_PID" || { SUMUN_NOTE="listener mysql-transaction did not come up"; return 1; }
  log_cmd "SUMUN_LOG=warn sumun serve --config sumun.toml   # [gateway] workers = $SUMUN_WORKERS; listeners mysql-session (session mode) and mysql-transaction (pool transaction, size $POOL_SIZE): protocol mysql, tls optional, audit_queries masked; [audit] path = audit.jsonl; user sbtest auth [token, password], backend_credential maria/sbtest"
  # One login each way first, so a login that does not work fails once here, with its words;
  # the rows of that way are then reported as failed with this reason.
  for ssl in on off; do
    for port in "$S_PORT" "$S_TX"; do
      if [ "$ssl" = on ]; then err=$(try_login "$port" on "$TOKEN"); else err=$(try_login "$port" off "$DBPASS"); fi
      if [ -n "$err" ]; then
        SUMUN_AUTH_NOTE[$ssl/$port]="$([ "$ssl" = on ] && echo "TLS + token" || echo "plain-text password") login through Sumun (:$port) failed: $err"
        echo "${SUMUN_AUTH_NOTE[$ssl/$port]}" >&2
      fi
    done
  done
  return 0
}
if [ -z "$SUMUN_NOTE" ]; then
  if setup_sumun; then echo "Sumun session :$S_PORT, transaction :$S_TX (pid $SUMUN_PID)"
  else [ -n "$SUMUN_PID" ] && stop_pid "$SUMUN_PID"; SUMUN_PID=""; fi
fi
[ -n "$SUMUN_NOTE" ] && echo "Sumun rows will be reported as failed: $SUMUN_NOTE" >&2

# --- measurement helpers -------------------------------------------------------------------
TCK=$(getconf CLK_TCK)
# utime + stime of all the process's threads (fields 14 and 15 of /proc/PID/stat).
cpu_ticks() { [ -n "$1" ] && [ -r "/proc/$1/stat" ] || return 0; sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
div() { awk -v a="$1" -v b="$2" -v f="${3:-%.2f}" 'BEGIN { if (a != "" && b != "" && b + 0 > 0) printf f, a / b; else print "-" }'; }

declare -A QPS CPU MCPU
THROUGHPUT=(); STORM=(); TWO=(); FAILURES=()

# ratio_cols PROXY KEY QPS CPU MCPU: "Sumun/HAProxy" throughput, proxy CPU and proxy + MariaDB
# CPU ratios for Sumun rows, against the HAProxy row with the same key (TLS passing through
# HAProxy to MariaDB).
ratio_cols() {
  if [ "$1" = sumun ] && [ -n "${QPS[haproxy/$2]:-}" ]; then
    local mine theirs
    mine=$(awk -v a="$4" -v b="$5" 'BEGIN { if (a != "" && b != "") print a + b }')
    theirs=$(awk -v a="${CPU[haproxy/$2]:-}" -v b="${MCPU[haproxy/$2]:-}" 'BEGIN { if (a != "" && b != "") print a + b }')
    echo "$(div "$3" "${QPS[haproxy/$2]}") | $(div "$4" "${CPU[haproxy/$2]:-}") | $(div "$mine" "$theirs")"
  else echo " | | "; fi
}

# bench ARRAY PROXY PATH KEY PID PORT SSL(on|off) PASSWORD TEST SYSBENCH-ARGS...
# Runs sysbench against 127.0.0.1:PORT as sbtest; appends a row to the named array. The rate
# column is queries/s (events/s for the login storm script, whose rate is logins/s).
bench() {
  local -n rows=$1
  local proxy=$2 path=$3 key=$4 pid=$5 port=$6 ssl=$7 pass=$8 test=$9; shift 9
  local args=("${SB_COMMON[@]}" "$@" --time="$DURATION" --report-interval=0 --mysql-host=127.0.0.1 --mysql-port="$port" --mysql-ssl="$ssl")
  local label="$test $*" t0 t1 m0 m1 out rc=0 qps eps lat p95 n cpu="-" mcpu ccpu shown r errs
  shown="sysbench $test ${args[*]} --mysql-password=$([ "$pass" = "$TOKEN" ] && [ -n "$TOKEN" ] && echo '$TOKEN' || echo '$DBPASS') run"
  local why0=""
  if [ "$proxy" != direct ] && ! alive "$pid"; then why0=${SUMUN_NOTE:-$proxy not running}
  elif [ "$proxy" = sumun ]; then why0=${SUMUN_AUTH_NOTE[$ssl/$port]:-}; fi
  if [ -n "$why0" ]; then
    rows+=("| \`$label\` | $path | failed | | | | | | $(ratio_cols "$proxy" "$key" "" "" "") |")
    FAILURES+=("- $path, \`$label\`: not run: $why0")
    echo "  $path: failed ($why0)"
    return 0
  fi
  local envv=() note="" attempt
  for attempt in 1 2; do
    log_cmd "${envv[*]}${envv[*]:+ }$shown"
    t0=$(cpu_ticks "$pid"); m0=$(cpu_ticks "$M_PID")
    # The subshell's cutime + cstime after sysbench ends are sysbench's CPU (the client's); its
    # pid is taken before the pipeline, whose parts are subshells of their own.
    out=$(cd "$SB" && { rc=0; env "${envv[@]}" timeout -k 5 $((DURATION + 90)) sysbench "$test" "${args[@]}" --mysql-password="$pass" run 2>&1 || rc=$?
      me=$BASHPID; sed 's/^.*) //' "/proc/$me/stat" | awk -v rc=$rc '{print "__CLIENT_TICKS=" $14 + $15; print "__RC=" rc}'; })
    t1=$(cpu_ticks "$pid"); m1=$(cpu_ticks "$M_PID")
    rc=$(echo "$out" | sed -n 's/^__RC=//p'); rc=${rc:-1}
    local ct; ct=$(echo "$out" | sed -n 's/^__CLIENT_TICKS=//p')
    qps=$(echo "$out" | awk '/^ *queries:/ {gsub(/\(/, "", $3); printf "%.0f", $3; exit}')
    eps=$(echo "$out" | awk '/^ *transactions:/ {gsub(/\(/, "", $3); printf "%.0f", $3; exit}')
    n=$(echo "$out" | awk '/^ *queries:/ {print $2; exit}')
    [ "$key" = "${key#storm}" ] || { qps=$eps; n=$(echo "$out" | awk '/^ *transactions:/ {print $2; exit}'); }
    lat=$(echo "$out" | awk '/^ *avg:/ {print $2; exit}')
    p95=$(echo "$out" | awk '/95th percentile:/ {print $3; exit}')
    errs=$(echo "$out" | awk '/ignored errors:/ {print $3; exit}')
    if [ -z "$qps" ] || [ "${n:-0}" = 0 ] || [ "$rc" != 0 ] || { [ "$proxy" != direct ] && ! alive "$pid"; }; then
      local f="$W/failed-$(echo "$path $key $attempt" | tr -c 'A-Za-z0-9' _).log"
      echo "$out" > "$f"
      local why refused
      why=$(echo "$out" | grep -i -m3 'fatal\|error\|lost\|denied' | tr '\n' ' ' | cut -c1-300 || true)
      [ -z "$why" ] && why=$(echo "$out" | grep -v '^\s*$\|^__' | tail -2 | tr '\n' ' ' | cut -c1-300 || true)
      refused=$(echo "$out" | grep -c '^FATAL: error' || true)
      FAILURES+=("- $path, \`$label\`${envv[*]:+ with ${envv[*]}} (rc $rc, $refused threads refused): $why")
      # libmariadb loads its mysql_clear_password plugin (which token logins need) on first use,
      # and threads that connect at once can race on it ("already loaded"); preloading it at
      # library init avoids the race. Retry such a row once that way, and say so.
      if [ "$attempt" = 1 ] && echo "$out" | grep -q 'mysql_clear_password could not be loaded'; then
        envv=(LIBMYSQL_PLUGINS=mysql_clear_password); note=" (retried with LIBMYSQL_PLUGINS=mysql_clear_password)"
        echo "  $path: failed (rc $rc): $why; retrying with ${envv[*]}"
        continue
      fi
      rows+=("| \`$label\` | $path | failed${qps:+ ($qps before the error)} | | | | | | $(ratio_cols "$proxy" "$key" "" "" "") |")
      echo "  $path: failed (rc $rc): $why"
      return 0
    fi
    break
  done
  per_q() { awk -v d="$1" -v n="$n" -v t="$TCK" 'BEGIN { printf "%.1f", d * 1e6 / t / n }'; }
  [ -n "$pid" ] && cpu=$(per_q $((t1 - t0)))
  mcpu=$(per_q $((m1 - m0))); ccpu=$(per_q "${ct:-0}")
  [ -n "$errs" ] && [ "$errs" != 0 ] && qps="$qps ($errs ignored errors)"
  QPS[$proxy/$key]=${qps%% *}; CPU[$proxy/$key]=$cpu; MCPU[$proxy/$key]=$mcpu
  r=$(ratio_cols "$proxy" "$key" "${qps%% *}" "$cpu" "$mcpu")
  rows+=("| \`$label\` | $path$note | $qps | $lat | $p95 | $cpu | $mcpu | $ccpu | $r |")
  if [ "$proxy" = sumun ]; then
    local r1 r2 r3; IFS='|' read -r r1 r2 r3 <<<"$r"
    r="vs HAProxy: x$(echo $r1), proxy CPU x$(echo $r2), proxy+MariaDB CPU x$(echo $r3)"
  else r=""; fi
  printf '  %-38s %8s /s %7s ms avg %7s ms p95  CPU µs/q: proxy %6s MariaDB %6s sysbench %6s  %s\n' "$path" "$qps" "$lat" "$p95" "$cpu" "$mcpu" "$ccpu" "$r"
}

# --- throughput rows -------------------------------------------------------------------------
echo "[$(elapsed)] throughput rows (${DURATION}s each, --threads=$THREADS)"
for test in oltp_point_select oltp_read_only; do
  for ps in auto disable; do
    k="$test-$ps"; a=(--threads="$THREADS" --db-ps-mode="$ps")
    echo "[$(elapsed)] sysbench $test --db-ps-mode=$ps"
    bench THROUGHPUT direct "direct" "$k-plain" "" "$M_PORT" off "$DBPASS" "$test" "${a[@]}"
    bench THROUGHPUT haproxy "HAProxy" "$k-plain" "$H_PID" "$H_PORT" off "$DBPASS" "$test" "${a[@]}"
    bench THROUGHPUT sumun "Sumun session, password, audit" "$k-plain" "$SUMUN_PID" "$S_PORT" off "$DBPASS" "$test" "${a[@]}"
    bench THROUGHPUT sumun "Sumun transaction, password, audit" "$k-plain" "$SUMUN_PID" "$S_TX" off "$DBPASS" "$test" "${a[@]}"
    bench THROUGHPUT direct "direct, TLS" "$k-tls" "" "$M_PORT" on "$DBPASS" "$test" "${a[@]}"
    bench THROUGHPUT haproxy "HAProxy, TLS at MariaDB" "$k-tls" "$H_PID" "$H_PORT" on "$DBPASS" "$test" "${a[@]}"
    bench THROUGHPUT sumun "Sumun session, TLS + token, audit" "$k-tls" "$SUMUN_PID" "$S_PORT" on "$TOKEN" "$test" "${a[@]}"
    bench THROUGHPUT sumun "Sumun transaction, TLS + token, audit" "$k-tls" "$SUMUN_PID" "$S_TX" on "$TOKEN" "$test" "${a[@]}"
  done
done

# --- login storm: a connection (and login) per event ----------------------------------------
echo "[$(elapsed)] login storm: bench/mysql/login_storm.lua --threads=$STORM_THREADS (connect, SELECT 1, disconnect)"
cp "$HERE/login_storm.lua" "$SB/login_storm.lua"
LS=(--threads="$STORM_THREADS")
bench STORM direct "direct, plain" "storm-plain" "" "$M_PORT" off "$DBPASS" ./login_storm.lua "${LS[@]}"
bench STORM haproxy "HAProxy, plain" "storm-plain" "$H_PID" "$H_PORT" off "$DBPASS" ./login_storm.lua "${LS[@]}"
bench STORM sumun "Sumun session, password, audit" "storm-plain" "$SUMUN_PID" "$S_PORT" off "$DBPASS" ./login_storm.lua "${LS[@]}"
bench STORM sumun "Sumun transaction, password, audit" "storm-plain" "$SUMUN_PID" "$S_TX" off "$DBPASS" ./login_storm.lua "${LS[@]}"
bench STORM direct "direct, TLS" "storm-tls" "" "$M_PORT" on "$DBPASS" ./login_storm.lua "${LS[@]}"
bench STORM haproxy "HAProxy, TLS at MariaDB" "storm-tls" "$H_PID" "$H_PORT" on "$DBPASS" ./login_storm.lua "${LS[@]}"
bench STORM sumun "Sumun session, TLS + token, audit" "storm-tls" "$SUMUN_PID" "$S_PORT" on "$TOKEN" ./login_storm.lua "${LS[@]}"
bench STORM sumun "Sumun transaction, TLS + token, audit" "storm-tls" "$SUMUN_PID" "$S_TX" on "$TOKEN" ./login_storm.lua "${LS[@]}"

# --- two threads: HAProxy nbthread 2 vs Sumun workers = 2 ------------------------------------
if [ "$SCALING" = 1 ] && [ "$NPROC" -ge 2 ]; then
  echo "[$(elapsed)] two threads: HAProxy nbthread 2, Sumun workers = 2"
  for p in "$H_PID" "$SUMUN_PID"; do [ -n "$p" ] && stop_pid "$p"; done
  H2_PORT=$(free_port); start_haproxy haproxy-2 2 "$H2_PORT"; H2_PID=$HAP_PID
  log_cmd "haproxy -db -f haproxy-2.cfg   # nbthread 2, listen mysql: mode tcp, bind 127.0.0.1:$H2_PORT"
  S2_PID=""; S2_PORT=$(free_port)
  if [ -z "$SUMUN_NOTE" ]; then
    sumun_toml "$W/sumun-2.toml" 2 "$S2_PORT"
    if start_sumun "$W/sumun-2.toml" "$W/sumun-2.log" "$S2_PORT"; then S2_PID=$SUMUN_PID; fi
    log_cmd "SUMUN_LOG=warn sumun serve --config sumun-2.toml   # as sumun.toml with [gateway] workers = 2, the session-mode listener only"
  fi
  for ps in auto disable; do
    k="scale-$ps"; a=(--threads="$THREADS" --db-ps-mode="$ps")
    bench TWO haproxy "HAProxy nbthread 2, TLS at MariaDB" "$k" "$H2_PID" "$H2_PORT" on "$DBPASS" oltp_point_select "${a[@]}"
    bench TWO sumun "Sumun session, workers = 2, TLS + token, audit" "$k" "$S2_PID" "$S2_PORT" on "$TOKEN" oltp_point_select "${a[@]}"
  done
fi

# --- gateway log and audit -----------------------------------------------------------------
SUMUN_LOG_TAIL=$(cat "$W"/sumun.log "$W"/sumun-2.log 2>/dev/null | grep -v '^\s*$' | grep -v -i 'token\|password' | tail -15 || true)
AUDIT_LINES=$(cat "$W"/audit-*.jsonl* 2>/dev/null | wc -l || echo 0)
AUDIT_QUERIES=$(cat "$W"/audit-*.jsonl* 2>/dev/null | grep -c '"query"' || true)
AUDIT_ENDS=$(cat "$W"/audit-*.jsonl* 2>/dev/null | grep '"session.end"' | grep -o '"end":"[a-z_]*"' | sed 's/.*:"//; s/"$//' | sort | uniq -c | awk '{printf "%s%s %s", sep, $2, $1; sep=", "}' || true)
AUDIT_SAMPLE=$(grep -h -m1 '"query"' "$W"/audit-*.jsonl 2>/dev/null | head -1 | cut -c1-400 || true)

# --- report --------------------------------------------------------------------------------
TOTAL=$(elapsed)
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
SB_VER=$(sysbench --version | awk '{print $2}')
HAP_VER=$("$HAPROXY" -v 2>/dev/null | awk 'NR == 1 {print $3}')
SUMUN_VER="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
[ -x "$SUMUN" ] && SUMUN_VER="$("$SUMUN" --version 2>/dev/null | head -1 | sed 's/^sumun //' || true) (built $SUMUN_BUILT; HEAD $SUMUN_VER, $SUMUN_DIRTY uncommitted files under crates/ then)"
HEAD_ROW="| test | path | queries/s | latency avg ms | p95 ms | proxy CPU µs/query | MariaDB CPU µs/query | sysbench CPU µs/query | Sumun/HAProxy q/s | Sumun/HAProxy proxy CPU | Sumun/HAProxy proxy + MariaDB CPU |"
SEP_ROW="|---|---|---|---|---|---|---|---|---|---|---|"
{
  echo "# MySQL benchmark: Sumun vs HAProxy vs direct (MariaDB)"
  echo
  echo "Run: \`$([ "$QUICK" = 1 ] && echo "QUICK=1 ")bench/mysql/run.sh\` started $STARTED_AT, $NPROC cores"
  echo "($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), Linux $(uname -r), ${DURATION} s per row, total $TOTAL."
  echo "Load average (1/5/15 min) at the start: $LOAD_START; at the end: $LOAD_END (other agents share the machine)."
  echo "MariaDB $M_VER ($TABLES tables x $TABLE_SIZE rows, buffer pool 512M, max_connections 1000), sysbench $SB_VER"
  echo "(libmariadb), HAProxy $HAP_VER (\`mode tcp\`, nbthread $SUMUN_WORKERS), Sumun $SUMUN_VER (\`[gateway] workers = $SUMUN_WORKERS\`),"
  echo "$(openssl version | cut -d' ' -f1-2). TLS certificate: $CERT_SRC."
  echo
  echo "sysbench, MariaDB and the proxy share the cores, so a proxy's CPU is taken from the others:"
  echo "proxy CPU µs per query (utime + stime from /proc/PID/stat over the row, divided by the"
  echo "queries sysbench counted) ranks the proxies as much as throughput does. MariaDB's and"
  echo "sysbench's CPU per query are measured the same way (sysbench's as the CPU of its finished"
  echo "process), so one can see where work moved: with TLS through HAProxy MariaDB does the"
  echo "crypto, through Sumun Sumun does. Ratios: Sumun / HAProxy with TLS (q/s: higher is better;"
  echo "proxy CPU: lower is better)."
  echo
  echo "**What each path does.** \`direct\`: sysbench to MariaDB. \`HAProxy\`: \`mode tcp\` relay."
  echo "\`TLS at MariaDB\`: the client's TLS passes through HAProxy and ends at MariaDB, which"
  echo "pays for it (HAProxy relays ciphertext). \`Sumun session\` / \`Sumun transaction\`: a \`mysql\`"
  echo "listener (\`tls = \"optional\"\`) in session mode (one server connection per client) or"
  echo "transaction mode (a pool of $POOL_SIZE server connections shared between transactions;"
  echo "prepared statements are kept by the gateway and prepared on whichever server a client"
  echo "lands on, so they do not pin: docs/mysql.md). \`password\`: plain text, the gateway-held password"
  echo "(\`sumun users set-password\`, the same password as the MariaDB account) checked with"
  echo "\`mysql_native_password\`. \`TLS + token\`: TLS ends at Sumun and the password is a"
  echo "\`sumun token\`. Sumun logs in to MariaDB (plain text on loopback) with the vault's"
  echo "password for sbtest and writes a masked \`query\` audit event for every \`COM_QUERY\`. With"
  echo "\`--db-ps-mode=auto\` sysbench uses server-side prepared statements (\`COM_STMT_EXECUTE\`),"
  echo "which session mode does not audit yet (transaction mode audits each execute); with \`disable\` every statement is a \`COM_QUERY\`."
  echo "Ratios compare each Sumun row with HAProxy on the same transport (plain with plain, TLS"
  echo "with HAProxy relaying TLS to MariaDB)."
  echo
  echo "**Row not run.** HAProxy terminating TLS (\`bind ... ssl crt\`): MySQL clients start TLS"
  echo "inside the protocol (an SSL request after the server's greeting), so a frontend expecting a"
  echo "TLS ClientHello first cannot serve them. Checked in this run with the mariadb client"
  echo "through such a frontend: \`${HAP_TLS_NOTE:-(no output)}\`. HAProxy's TLS rows therefore relay"
  echo "TLS to MariaDB."
  if [ -n "$SUMUN_NOTE" ]; then echo; echo "**Sumun rows failed:** $SUMUN_NOTE"; fi
  echo
  echo "## Throughput (sysbench, --threads=$THREADS)"
  echo
  echo "Latency is per sysbench event: one query for \`oltp_point_select\`, a transaction of"
  echo "16 statements (BEGIN, 10 point selects, 4 range selects, COMMIT) for \`oltp_read_only\`."
  echo
  echo "$HEAD_ROW"; echo "$SEP_ROW"
  printf '%s\n' "${THROUGHPUT[@]}"
  echo
  echo "## Login storm (a connection and login per event)"
  echo
  echo "\`bench/mysql/login_storm.lua\`: each event connects, runs \`SELECT 1\` and disconnects"
  echo "(sysbench 1.0 has no \`--reconnect\`). The rate column is logins/s, the CPU column µs per login."
  echo "MariaDB checks \`mysql_native_password\` (SHA-1 scramble) for direct and HAProxy logins. Sumun"
  echo "checks the client's password or token; in session mode it then logs in to MariaDB the same"
  echo "way, in transaction mode it checks the database on a pooled server connection instead."
  echo
  echo "| test | path | logins/s | latency avg ms | p95 ms | proxy CPU µs/login | MariaDB CPU µs/login | sysbench CPU µs/login | Sumun/HAProxy logins/s | Sumun/HAProxy proxy CPU | Sumun/HAProxy proxy + MariaDB CPU |"
  echo "$SEP_ROW"
  printf '%s\n' "${STORM[@]}"
  if [ ${#TWO[@]} -gt 0 ]; then
    echo
    echo "## Two threads (HAProxy \`nbthread 2\`, Sumun \`workers = 2\`), oltp_point_select, TLS, session mode"
    echo
    echo "$HEAD_ROW"; echo "$SEP_ROW"
    printf '%s\n' "${TWO[@]}"
  fi
  if [ ${#FAILURES[@]} -gt 0 ]; then
    echo
    echo "## Failures"
    echo
    printf '%s\n' "${FAILURES[@]}"
  fi
  echo
  echo "## Audit"
  echo
  echo "The audit log(s) held $AUDIT_LINES events at the end, $AUDIT_QUERIES of them \`query\` events"
  echo "(rotated files included). How sessions ended (\`session.end\` events): ${AUDIT_ENDS:-none}. A sample:"
  echo
  echo '```'
  echo "${AUDIT_SAMPLE:-(none)}"
  echo '```'
  if [ -n "$SUMUN_LOG_TAIL" ]; then
    echo
    echo "Gateway log (SUMUN_LOG=warn), last lines:"
    echo
    echo '```'
    echo "$SUMUN_LOG_TAIL"
    echo '```'
  fi
  echo
  echo "## Commands"
  echo
  echo "Ports are picked free per run. \$DBPASS is the sbtest account's random password, \$TOKEN the"
  echo "Sumun token. sysbench runs in a directory holding cacert.pem, client-cert.pem and client-key.pem"
  echo "(sysbench 1.0 passes those names to mysql_ssl_set with --mysql-ssl=on)."
  echo
  echo '```'
  printf '%s\n' "${CMDS[@]}"
  echo '```'
  if [ -f "$HERE/NOTES.md" ]; then echo; cat "$HERE/NOTES.md"; fi
} > "$OUT"
echo "[$TOTAL] wrote $OUT"
