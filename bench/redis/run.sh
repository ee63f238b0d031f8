#!/usr/bin/env bash
# Side-by-side benchmark of Sumun's `redis` listener (TLS, token AUTH, the default ACL rules)
# against HAProxy `mode tcp` (plain, and ending TLS with `bind ... ssl crt`) and against
# connecting directly (plain and Redis's own TLS), issue 19, "Benchmark". Everything runs on
# loopback in one run: a private redis-server on free ports (plain and TLS), one HAProxy, one
# Sumun, redis-benchmark. Writes bench/redis/RESULTS.md and prints every command it timed.
#
#   bench/redis/run.sh                   # full run (about 4 minutes)
#   QUICK=1 bench/redis/run.sh           # smoke run: a fifth of the requests
#   SUMUN_BUILD=0 bench/redis/run.sh     # never run cargo; Sumun rows fail if the binary is missing
#
# Other knobs: N=200000 (requests per `-P 1` row), N_PIPE=2000000 (per `-P 16` row),
# N_MANY=200000 (per many-clients row), MANY=500, ROUNDS=1 (run every row this many times, the
# paths alternating, each time reported), SUMUN_WORKERS=1 (Sumun's `[gateway] workers`; HAProxy
# runs `nbthread` the same), SUMUN=path, OUT=file, KEEP=1 (keep the work directory with all logs).
#
# Needs (installed with apt-get when run as root): redis-server, redis-tools (redis-benchmark,
# redis-cli), haproxy, openssl, python3.
#
# Paths and logins (redis-benchmark logs in with `--user bench -a SECRET`, i.e. `AUTH bench
# SECRET` first on every connection):
#   direct                 redis-server's plain port, ACL user bench and its password
#   direct, TLS            redis-server's TLS port (tls-auth-clients no), the same password
#   HAProxy                HAProxy `mode tcp` -> redis-server plain port, the same password
#   HAProxy, TLS           HAProxy `bind ... ssl crt` ends TLS -> redis-server plain port
#   Sumun, TLS + token     a `redis` listener, `tls = "required"`, the password is a `sumun
#                          token`; every command checked against the user's default rules
#                          (`+@all -@dangerous ~* &*`); Sumun logs in to redis-server (plain) as
#                          bench with the vault's password. Multiplexed (`pool.mode =
#                          "transaction"`, the default, size 20): clients share a few server
#                          connections.
#   Sumun session          the same with `pool = { mode = "session" }` on a second listener:
#                          one server connection per client, as HAProxy.
# There is no "Sumun, plain" row: the listener accepts tokens only over TLS, and gateway-held
# passwords (`auth = ["password"]`) are not built for Redis yet.
set -euo pipefail
ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 65536 2>/dev/null || true
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
HERE=$ROOT/bench/redis

QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
  N=${N:-40000}; N_PIPE=${N_PIPE:-400000}; N_MANY=${N_MANY:-40000}
else
  N=${N:-200000}; N_PIPE=${N_PIPE:-2000000}; N_MANY=${N_MANY:-200000}
fi
MANY=${MANY:-500}
ROUNDS=${ROUNDS:-1}
SUMUN_WORKERS=${SUMUN_WORKERS:-1}
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
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-benchmark >/dev/null && command -v redis-cli >/dev/null || need+=(redis-tools)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
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
REDIS_SERVER=$(command -v redis-server)
RB=$(command -v redis-benchmark)
RCLI=$(command -v redis-cli)

SUMUN_NOTE=""
if [ "$SUMUN_BUILD" = 1 ]; then
  echo "building sumun (cargo build --release -p sumun)..."
  cargo build --release -p sumun >/dev/null 2>"${TMPDIR:-/tmp}/sumun-redis-bench-build.log" \
    || SUMUN_NOTE="cargo build failed: $(tail -3 "${TMPDIR:-/tmp}/sumun-redis-bench-build.log" | tr '\n' ' ')"
fi
[ -x "$SUMUN" ] || SUMUN_NOTE=${SUMUN_NOTE:-"$SUMUN not found (SUMUN_BUILD=0)"}

# --- work directory and cleanup --------------------------------------------------------------
W=$(mktemp -d /tmp/sumun-redisbench.XXXXXX)
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
  SUMUN_ORIG=$SUMUN
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
CERTS=$W/certs
if [ -x "$SUMUN" ] && "$SUMUN" cert dev --out "$CERTS" >"$W/cert.log" 2>&1 && [ -f "$CERTS/ca.pem" ]; then
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
cat "$CERTS/server.pem" "$CERTS/server-key.pem" > "$CERTS/haproxy.pem"
chmod 600 "$CERTS"/*key*.pem "$CERTS/haproxy.pem"

# --- redis-server ----------------------------------------------------------------------------
# No persistence, loopback only, the default user off and one ACL user `bench` with a random
# password; a plain port and a TLS port on the same server (TLS clients not asked for a
# certificate).
RPASS=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
printf '%s\n' "$RPASS" > "$W/rpass.txt"; chmod 600 "$W/rpass.txt"
R_PORT=$(free_port); R_TLS=$(free_port)
cat > "$W/redis.conf" <<CONF
bind 127.0.0.1
port $R_PORT
tls-port $R_TLS
tls-cert-file $CERTS/server.pem
tls-key-file $CERTS/server-key.pem
tls-ca-cert-file $CERTS/ca.pem
tls-auth-clients no
save ""
appendonly no
dir $W
maxclients 10000
tcp-backlog 4096
user default off
user bench on >$RPASS ~* &* +@all
CONF
chmod 600 "$W/redis.conf"
"$REDIS_SERVER" "$W/redis.conf" >"$W/redis.log" 2>&1 &
R_PID=$!; pids+=("$R_PID")
wait_port "$R_PORT" "$R_PID" || { echo "redis-server did not start:" >&2; tail -20 "$W/redis.log" >&2; exit 1; }
wait_port "$R_TLS" "$R_PID" || { echo "redis-server TLS port did not open:" >&2; tail -20 "$W/redis.log" >&2; exit 1; }
log_cmd "redis-server redis.conf   # port $R_PORT, tls-port $R_TLS (tls-auth-clients no), save \"\", appendonly no, maxclients 10000, tcp-backlog 4096, user default off, user bench on >\$RPASS ~* &* +@all"
rcli() { REDISCLI_AUTH=$RPASS "$RCLI" --no-auth-warning -h 127.0.0.1 -p "$R_PORT" --user bench "$@"; }
R_VER=$(rcli info server | sed -n 's/^redis_version:\([^\r]*\).*/\1/p')
echo "redis-server $R_VER on 127.0.0.1:$R_PORT, TLS :$R_TLS (pid $R_PID)"

# --- HAProxy ---------------------------------------------------------------------------------
H_PORT=$(free_port); H_SSL=$(free_port)
cat > "$W/haproxy.cfg" <<CFG
global
  nbthread $SUMUN_WORKERS
  maxconn 8000
  log stderr format raw local0 warning
defaults
  mode tcp
  log global
  timeout connect 5s
  timeout client 1h
  timeout server 1h
listen redis
  bind 127.0.0.1:$H_PORT
  server redis 127.0.0.1:$R_PORT
listen redis-tls
  bind 127.0.0.1:$H_SSL ssl crt $CERTS/haproxy.pem
  server redis 127.0.0.1:$R_PORT
CFG
"$HAPROXY" -db -f "$W/haproxy.cfg" >"$W/haproxy.log" 2>&1 &
H_PID=$!; pids+=("$H_PID")
wait_port "$H_PORT" "$H_PID" || { echo "HAProxy did not start:" >&2; tail -5 "$W/haproxy.log" >&2; exit 1; }
wait_port "$H_SSL" "$H_PID" || { echo "HAProxy TLS frontend did not open:" >&2; tail -5 "$W/haproxy.log" >&2; exit 1; }
log_cmd "haproxy -db -f haproxy.cfg   # nbthread $SUMUN_WORKERS, maxconn 8000, mode tcp; listen redis: bind 127.0.0.1:$H_PORT; listen redis-tls: bind 127.0.0.1:$H_SSL ssl crt haproxy.pem (server.pem + key); both: server 127.0.0.1:$R_PORT"
echo "HAProxy :$H_PORT, TLS-terminating :$H_SSL (pid $H_PID)"

# --- Sumun ---------------------------------------------------------------------------------
VAULT=$W/vault
S_PORT=$(free_port); S2_PORT=$(free_port)
SUMUN_PID=""; SUMUN2_PID=""; TOKEN=""
setup_sumun() {
  local cfg=$W/sumun.toml err
  cat > "$cfg" <<TOML
[gateway]
name = "bench"
workers = $SUMUN_WORKERS
[vault]
dir = "$VAULT"
key_file = "$VAULT/master.key"
[tls.default]
cert = "$CERTS/server.pem"
key = "$CERTS/server-key.pem"
[[security_groups]]
name = "local"
ingress = [{ cidr = "127.0.0.0/8" }]
[[listeners]]
name = "cache"
bind = "127.0.0.1:$S_PORT"
protocol = "redis"
tls = "required"
tls_config = "default"
target_group = "redis"
security_groups = ["local"]
max_connections = 12000
pool = { mode = "transaction" }
[[target_groups]]
name = "redis"
targets = [{ address = "127.0.0.1:$R_PORT" }]
[[users]]
name = "bench"
backend_credential = "redis/bench"
TOML
  "$SUMUN" vault init --config "$cfg" >"$W/sumun-setup.log" 2>&1 || { SUMUN_NOTE="sumun vault init failed: $(tail -1 "$W/sumun-setup.log")"; return 1; }
  "$SUMUN" secrets put redis/bench --value-file "$W/rpass.txt" --kind redis --address "127.0.0.1:$R_PORT" --username bench --config "$cfg" >>"$W/sumun-setup.log" 2>&1 \
    || { SUMUN_NOTE="sumun secrets put failed: $(tail -1 "$W/sumun-setup.log")"; return 1; }
  TOKEN=$("$SUMUN" token --user bench --ttl 1h --config "$cfg" 2>>"$W/sumun-setup.log") && [ -n "$TOKEN" ] \
    || { SUMUN_NOTE="sumun token failed: $(tail -1 "$W/sumun-setup.log")"; return 1; }
  log_cmd "sumun vault init --config sumun.toml"
  log_cmd "sumun secrets put redis/bench --value-file rpass.txt --kind redis --address 127.0.0.1:$R_PORT --username bench --config sumun.toml"
  log_cmd "TOKEN=\$(sumun token --user bench --ttl 1h --config sumun.toml)"
  # The session-mode listener runs in a second Sumun process (same vault and token audience),
  # so each one's CPU and server connections are its own.
  sed -e 's/^name = "cache"/name = "cache-session"/' -e "s/127.0.0.1:$S_PORT/127.0.0.1:$S2_PORT/" \
    -e 's/^pool = { mode = "transaction" }/pool = { mode = "session" }/' "$cfg" > "$W/sumun-session.toml"
  SUMUN_LOG=warn "$SUMUN" serve --config "$cfg" >"$W/sumun.log" 2>&1 &
  SUMUN_PID=$!; pids+=("$SUMUN_PID")
  SUMUN_LOG=warn "$SUMUN" serve --config "$W/sumun-session.toml" >"$W/sumun-session.log" 2>&1 &
  SUMUN2_PID=$!; pids+=("$SUMUN2_PID")
  if ! wait_port "$S2_PORT" "$SUMUN2_PID"; then
    SUMUN_NOTE="sumun serve (session) did not start: $(grep -v '^\s*$' "$W/sumun-session.log" | tail -3 | tr '\n' ' ' | cut -c1-300 || true)"
    return 1
  fi
  if ! wait_port "$S_PORT" "$SUMUN_PID"; then
    SUMUN_NOTE="sumun serve did not start: $(grep -v '^\s*$' "$W/sumun.log" | tail -3 | tr '\n' ' ' | cut -c1-300 || true)"
    return 1
  fi
  log_cmd "SUMUN_LOG=warn sumun serve --config sumun.toml   # [gateway] workers = $SUMUN_WORKERS; listener cache: protocol redis, bind 127.0.0.1:$S_PORT, tls required, max_connections 12000, pool = { mode = \"transaction\" } (size 20 by default); and SUMUN_LOG=warn sumun serve --config sumun-session.toml: listener cache-session, the same on 127.0.0.1:$S2_PORT with pool = { mode = \"session\" }; target 127.0.0.1:$R_PORT; user bench: backend_credential redis/bench, no redis_acl (default +@all -@dangerous ~* &*)"
  # One login first, so a login that does not work fails once here, with its words.
  err=$(REDISCLI_AUTH=$TOKEN timeout 20 "$RCLI" --no-auth-warning --tls --cacert "$CERTS/ca.pem" -h 127.0.0.1 -p "$S_PORT" --user bench ping 2>&1 || true)
  log_cmd "REDISCLI_AUTH=\$TOKEN redis-cli --tls --cacert ca.pem -h 127.0.0.1 -p $S_PORT --user bench ping   # $err"
  if [ "$err" != PONG ]; then SUMUN_NOTE="TLS + token login through Sumun failed: $(echo "$err" | tr '\n' ' ' | cut -c1-300)"; return 1; fi
  return 0
}
if [ -z "$SUMUN_NOTE" ]; then
  if setup_sumun; then echo "Sumun :$S_PORT (pid $SUMUN_PID)"; fi
fi
[ -n "$SUMUN_NOTE" ] && echo "Sumun rows will be reported as failed: $SUMUN_NOTE" >&2

# --- measurement helpers -------------------------------------------------------------------
TCK=$(getconf CLK_TCK)
# utime + stime of all the process's threads (fields 14 and 15 of /proc/PID/stat).
cpu_ticks() { [ -n "$1" ] && [ -r "/proc/$1/stat" ] || return 0; sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
div() { awk -v a="$1" -v b="$2" -v f="${3:-%.2f}" 'BEGIN { if (a != "" && b != "" && b + 0 > 0) printf f, a / b; else print "-" }'; }
# Server connections: TCP connections established to redis-server's port PORT, sampled every
# 0.1 s during a row with `ss -tnp`: for a proxy row those its process owns (HAProxy's or
# Sumun's, whatever listener made them), for a direct row those owned by neither proxy. Pooled
# connections a proxy keeps open between rows count in its own rows only.
sampler() { # FILE PORT OWNER-PID|"" : append the count every 0.1 s until killed
  local c out
  while :; do
    out=$(ss -Htnp state established "( dport = :$2 )" 2>/dev/null || true)
    if [ -n "$3" ]; then
      c=$(grep -c "pid=$3," <<<"$out" || true)
    else
      c=$(grep -v "pid=${SUMUN_PID:-none},\|pid=${SUMUN2_PID:-none},\|pid=$H_PID," <<<"$out" | grep -c . || true)
    fi
    echo "${c:-0}" >> "$1"; sleep 0.1
  done
}

# TcpExtListenOverflows (/proc/net/netstat): connections dropped because a listener's accept
# queue was full (the client retries its SYN after 1 s). Counted machine-wide over each row.
listen_overflows() { awk '/^TcpExt:/ { if (!h) { for (i = 2; i <= NF; i++) k[i] = $i; h = 1 } else for (i = 2; i <= NF; i++) if (k[i] == "ListenOverflows") print $i }' /proc/net/netstat; }

declare -A RPS CPU PEAK
ROWS=(); KEYS=(); FAILURES=()

# ratio_cols PROXY KEY RPS CPU: Sumun / HAProxy-TLS requests/s and proxy CPU for Sumun rows,
# against HAProxy TLS in the same round. Rows are written with a placeholder (@@PROXY@KEY@@)
# that is filled at the end, as the paths' order changes between rounds.
ratio_cols() {
  if [ "${1%-session}" = sumun ] && [ -n "${RPS[haproxy-tls/$2]:-}" ] && [ -n "$3" ]; then
    echo "$(div "$3" "${RPS[haproxy-tls/$2]}") | $(div "$4" "${CPU[haproxy-tls/$2]:-}")"
  else echo " | "; fi
}
# bench PROXY PATH KEY PID PORT TLS(0|1) SECRET REDIS-BENCHMARK-ARGS... (the round is $round)
# Runs redis-benchmark against 127.0.0.1:PORT as bench and appends a row to ROWS.
bench() {
  local proxy=$1 path=$2 key=$3 pid=$4 port=$5 tls=$6 pass=$7; shift 7
  local tlsargs=(); [ "$tls" = 1 ] && tlsargs=(--tls --cacert "$CERTS/ca.pem")
  local args=(-h 127.0.0.1 -p "$port" "${tlsargs[@]}" --user bench "$@" --csv)
  local label="redis-benchmark $*" lo0 lo shown t0 t1 r0 r1 out rc n rps avg p50 p99 cpu="-" rcpu ccpu peak r load samples spid
  shown="redis-benchmark -h 127.0.0.1 -p $port${tlsargs[*]:+ --tls --cacert ca.pem} --user bench -a $([ "$pass" = "$TOKEN" ] && [ -n "$TOKEN" ] && echo '$TOKEN' || echo '$RPASS') $* --csv"
  load=$(cut -d' ' -f1 /proc/loadavg)
  if [ "${proxy%-session}" = sumun ] && [ -n "$SUMUN_NOTE" ]; then
    ROWS+=("| $round | \`$label\` | $path | failed | | | | | | | | @@$proxy@$round/$key@@ | | $load |")
    FAILURES+=("- round $round, $path, \`$label\`: not run: $SUMUN_NOTE")
    echo "  $path: failed ($SUMUN_NOTE)"; return 0
  fi
  if [ -n "$pid" ] && ! alive "$pid"; then
    ROWS+=("| $round | \`$label\` | $path | failed | | | | | | | | @@$proxy@$round/$key@@ | | $load |")
    FAILURES+=("- round $round, $path, \`$label\`: not run: $proxy is not running"); echo "  $path: failed ($proxy not running)"; return 0
  fi
  log_cmd "$shown"
  n=$(echo " $* " | sed -n 's/.* -n \([0-9]*\) .*/\1/p')
  samples=$W/conn-$(echo "$path $key" | tr -c 'A-Za-z0-9' _).txt; : > "$samples"
  local sport=$R_PORT; [ "$proxy" = direct-tls ] && sport=$R_TLS
  sampler "$samples" "$sport" "$pid" & spid=$!
  t0=$(cpu_ticks "$pid"); r0=$(cpu_ticks "$R_PID"); lo0=$(listen_overflows)
  # The subshell's cutime + cstime after redis-benchmark ends are redis-benchmark's CPU.
  out=$( { rc=0; REDISCLI_AUTH="" timeout -k 5 300 "$RB" "${args[@]}" -a "$pass" 2>&1 || rc=$?
    me=$BASHPID; sed 's/^.*) //' "/proc/$me/stat" | awk -v rc=$rc '{print "__CLIENT_TICKS=" $14 + $15; print "__RC=" rc}'; })
  t1=$(cpu_ticks "$pid"); r1=$(cpu_ticks "$R_PID"); lo=$(( $(listen_overflows) - lo0 ))
  kill "$spid" 2>/dev/null || true; wait "$spid" 2>/dev/null || true
  peak=$(sort -n "$samples" | tail -1); peak=${peak:--}
  rc=$(echo "$out" | sed -n 's/^__RC=//p'); rc=${rc:-1}
  local ct; ct=$(echo "$out" | sed -n 's/^__CLIENT_TICKS=//p')
  # "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
  local line; line=$(echo "$out" | grep -E '^"(SET|GET)",' | tail -1 | tr -d '"')
  rps=$(echo "$line" | awk -F, '{ if ($2 != "") printf "%.0f", $2 }')
  avg=$(echo "$line" | awk -F, '{print $3}'); p50=$(echo "$line" | awk -F, '{print $5}'); p99=$(echo "$line" | awk -F, '{print $7}')
  local errs; errs=$(echo "$out" | grep -v '^__\|^"' | grep -i 'error\|refused\|reset\|NOPERM\|NOAUTH\|WRONGPASS' | sort | uniq -c | sort -rn | head -3 | sed 's/^ *//' | tr '\n' ';' | cut -c1-300 || true)
  if [ -z "$rps" ] || [ "$rc" != 0 ] || { [ -n "$pid" ] && ! alive "$pid"; }; then
    echo "$out" > "$W/failed-$(echo "$path $key" | tr -c 'A-Za-z0-9' _).log"
    local why; why=${errs:-$(echo "$out" | grep -v '^\s*$\|^__' | tail -2 | tr '\n' ' ' | cut -c1-300)}
    [ -n "$pid" ] && ! alive "$pid" && why="$why ($proxy exited)"
    ROWS+=("| $round | \`$label\` | $path | failed | | | | | | | $peak | @@$proxy@$round/$key@@ | $lo | $load |")
    FAILURES+=("- round $round, $path, \`$label\` (rc $rc): $why")
    echo "  $path: failed (rc $rc): $why"; return 0
  fi
  per_r() { awk -v d="$1" -v n="$n" -v t="$TCK" 'BEGIN { printf "%.2f", d * 1e6 / t / n }'; }
  [ -n "$pid" ] && cpu=$(per_r $((t1 - t0)))
  rcpu=$(per_r $((r1 - r0))); ccpu=$(per_r "${ct:-0}")
  [ -n "$errs" ] && { FAILURES+=("- round $round, $path, \`$label\`: completed, but said: $errs"); rps="$rps (errors: see Failures)"; }
  RPS[$proxy/$round/$key]=${rps%% *}; CPU[$proxy/$round/$key]=$cpu; PEAK[$proxy/$round/$key]=$peak
  ROWS+=("| $round | \`$label\` | $path | $rps | $avg | $p50 | $p99 | $cpu | $rcpu | $ccpu | $peak | @@$proxy@$round/$key@@ | $lo | $load |")
  r=""
  printf '  %-22s %9s req/s  avg %6s ms p99 %6s ms  CPU µs/req: proxy %5s redis %5s client %5s  server conns %5s  listen overflows %s\n' \
    "$path" "$rps" "$avg" "$p99" "$cpu" "$rcpu" "$ccpu" "$peak" "$lo"
}

# --- rows --------------------------------------------------------------------------------------
# Every test is a redis-benchmark of its own (SET, then GET of the key SET wrote), so each row's
# CPU is that test's alone. In a round the paths run one after another: in odd rounds direct
# first and Sumun last, in even rounds the other way round.
CONFIGS=("50 1 $N" "50 16 $N_PIPE" "$MANY 1 $N_MANY")
for round in $(seq "$ROUNDS"); do
  for cfgrow in "${CONFIGS[@]}"; do
    read -r c p n <<<"$cfgrow"
    for t in set get; do
      a=(-t "$t" -c "$c" -P "$p" -n "$n")
      k="$t-c$c-P$p"
      [ "$round" = 1 ] && KEYS+=("$k|${a[*]}")
      echo "[$(elapsed)] round $round: redis-benchmark ${a[*]} (load $(cut -d' ' -f1-3 /proc/loadavg))"
      paths=(direct direct-tls haproxy haproxy-tls sumun sumun-session)
      [ $((round % 2)) = 0 ] && paths=(sumun-session sumun haproxy-tls haproxy direct-tls direct)
      for pth in "${paths[@]}"; do
        case $pth in
          direct) bench direct "direct" "$k" "" "$R_PORT" 0 "$RPASS" "${a[@]}" ;;
          direct-tls) bench direct-tls "direct, TLS" "$k" "" "$R_TLS" 1 "$RPASS" "${a[@]}" ;;
          haproxy) bench haproxy "HAProxy" "$k" "$H_PID" "$H_PORT" 0 "$RPASS" "${a[@]}" ;;
          haproxy-tls) bench haproxy-tls "HAProxy, TLS" "$k" "$H_PID" "$H_SSL" 1 "$RPASS" "${a[@]}" ;;
          sumun) bench sumun "Sumun, TLS + token, multiplexed" "$k" "$SUMUN_PID" "$S_PORT" 1 "${TOKEN:-x}" "${a[@]}" ;;
          sumun-session) bench sumun-session "Sumun, TLS + token, session" "$k" "$SUMUN2_PID" "$S2_PORT" 1 "${TOKEN:-x}" "${a[@]}" ;;
        esac
      done
    done
  done
done

# Fill in the ratio columns.
for i in "${!ROWS[@]}"; do
  ph=$(echo "${ROWS[$i]}" | sed -n 's/.*@@\([^@]*\)@\([^@]*\)@@.*/\1 \2/p')
  [ -z "$ph" ] && continue
  read -r proxy k <<<"$ph"
  ROWS[$i]=$(echo "${ROWS[$i]}" | sed "s#@@[^@]*@[^@]*@@#$(ratio_cols "$proxy" "$k" "${RPS[$proxy/$k]:-}" "${CPU[$proxy/$k]:-}")#")
  if [ "${proxy%-session}" = sumun ] && [ -n "${RPS[$proxy/$k]:-}" ]; then
    IFS='|' read -r r1 r2 <<<"$(ratio_cols "$proxy" "$k" "${RPS[$proxy/$k]:-}" "${CPU[$proxy/$k]:-}")"
    echo "round ${k%%/*}, ${k#*/}: $proxy / HAProxy TLS: requests/s x$(echo $r1), proxy CPU x$(echo $r2)"
  fi
done

# Medians over the rounds (of each round's value; ratios are medians of the per-round ratios).
median() { tr ' ' '\n' | grep -v '^$\|^-$' | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.4g\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
MEDIANS=()
for ka in "${KEYS[@]}"; do
  k=${ka%%|*}; args=${ka#*|}
  line="| \`redis-benchmark $args\` |"
  for proxy in direct direct-tls haproxy haproxy-tls sumun sumun-session; do
    vals=""; for r in $(seq "$ROUNDS"); do vals="$vals ${RPS[$proxy/$r/$k]:-}"; done
    line="$line $(echo "$vals" | median | awk '{ if ($1 == "-") print "-"; else printf "%.0f", $1 }') |"
  done
  for proxy in haproxy haproxy-tls sumun sumun-session; do
    vals=""; for r in $(seq "$ROUNDS"); do vals="$vals ${CPU[$proxy/$r/$k]:-}"; done
    line="$line $(echo "$vals" | median) |"
  done
  rr=""; cr=""
  for r in $(seq "$ROUNDS"); do
    rr="$rr $(div "${RPS[sumun/$r/$k]:-}" "${RPS[haproxy-tls/$r/$k]:-}")"; cr="$cr $(div "${CPU[sumun/$r/$k]:-}" "${CPU[haproxy-tls/$r/$k]:-}")"
  done
  pk=""; for r in $(seq "$ROUNDS"); do pk="$pk ${PEAK[sumun/$r/$k]:-}"; done
  hk=""; for r in $(seq "$ROUNDS"); do hk="$hk ${PEAK[haproxy-tls/$r/$k]:-}"; done
  sk=""; for r in $(seq "$ROUNDS"); do sk="$sk ${PEAK[sumun-session/$r/$k]:-}"; done
  line="$line $(echo "$rr" | median) ($(echo $rr | tr ' ' '/')) | $(echo "$cr" | median) ($(echo $cr | tr ' ' '/')) | $(echo $pk | tr ' ' '/') | $(echo $sk | tr ' ' '/') | $(echo $hk | tr ' ' '/') |"
  MEDIANS+=("$line")
done

# --- gateway log -------------------------------------------------------------------------------
SUMUN_LOG_TAIL=$(grep -v '^\s*$' "$W/sumun.log" 2>/dev/null | grep -v -i 'token\|password' | tail -15 || true)
SUMUN_LOG_LINES=$(grep -c -v '^\s*$' "$W/sumun.log" 2>/dev/null || true)
SUMUN_RSS=$( [ -n "$SUMUN_PID" ] && awk '/^VmHWM:/ {printf "%.1f MiB", $2 / 1024}' "/proc/$SUMUN_PID/status" 2>/dev/null || true)
SUMUN2_RSS=$( [ -n "$SUMUN2_PID" ] && awk '/^VmHWM:/ {printf "%.1f MiB", $2 / 1024}' "/proc/$SUMUN2_PID/status" 2>/dev/null || true)
HAP_RSS=$(awk '/^VmHWM:/ {printf "%.1f MiB", $2 / 1024}' "/proc/$H_PID/status" 2>/dev/null || true)

# --- report --------------------------------------------------------------------------------
TOTAL=$(elapsed)
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
HAP_VER=$("$HAPROXY" -v 2>/dev/null | awk 'NR == 1 {print $3}')
RB_VER=$("$RB" --version 2>/dev/null | awk '{print $2}' || true)
SUMUN_VER="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
[ -x "$SUMUN" ] && SUMUN_VER="$("$SUMUN" --version 2>/dev/null | head -1 | sed 's/^[^ ]* //' || true) (\`${SUMUN_ORIG#"$ROOT"/}\`, built $SUMUN_BUILT; HEAD $SUMUN_VER, $SUMUN_DIRTY uncommitted files under crates/ then)"
{
  echo "# Redis benchmark: Sumun vs HAProxy vs direct"
  echo
  echo "Run: \`$([ "$QUICK" = 1 ] && echo "QUICK=1 ")$([ "$ROUNDS" != 1 ] && echo "ROUNDS=$ROUNDS ")bench/redis/run.sh\` started $STARTED_AT, $NPROC cores"
  echo "($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), Linux $(uname -r), total $TOTAL."
  echo "Load average (1/5/15 min) at the start: $LOAD_START; at the end: $LOAD_END (other agents share the machine;"
  echo "the last column is the 1-minute load average when the row started)."
  echo "redis-server $R_VER (no persistence), redis-benchmark $RB_VER (one thread), HAProxy $HAP_VER (\`mode tcp\`,"
  echo "nbthread $SUMUN_WORKERS), Sumun $SUMUN_VER (\`[gateway] workers = $SUMUN_WORKERS\`),"
  echo "$(openssl version | cut -d' ' -f1-2). TLS certificate: $CERT_SRC."
  echo
  echo "redis-benchmark, redis-server and the proxy share the cores, so a proxy's CPU is taken from"
  echo "the others: proxy CPU µs per request (utime + stime from /proc/PID/stat over the row, divided"
  echo "by the requests) ranks the proxies as much as requests/s does. redis-server's and"
  echo "redis-benchmark's CPU per request are measured the same way. Ratios: Sumun / HAProxy"
  echo "ending TLS, same test (requests/s: higher is better; proxy CPU: lower is better)."
  echo "**Server connections**: the peak number of TCP connections to redis-server's port during the row"
  echo "(\`ss -tnp\`, sampled every 0.1 s): for a proxy row those its process owns, for a direct row"
  echo "those of neither proxy (redis-benchmark's, including its extra connection for \`CONFIG GET\` at"
  echo "the start). Sumun's multiplexed and session listeners run as two processes (same vault), so each"
  echo "row's CPU and connections are its own; the multiplexed one keeps its pool open between rows"
  echo "(at most its size, 20). **Listen overflows**: the"
  echo "machine's \`TcpExtListenOverflows\` over the row, connections dropped because an accept queue"
  echo "was full (the client resends its SYN after 1 s, which shows in p99). redis-server runs with"
  echo "\`tcp-backlog 4096\` (HAProxy and Sumun listen with 4096 too; \`net.core.somaxconn\` is"
  echo "$(cat /proc/sys/net/core/somaxconn) here)."
  echo
  echo "**What each path does.** Every connection logs in first (\`AUTH bench SECRET\`, sent by"
  echo "redis-benchmark with \`--user bench -a SECRET\`). \`direct\`: redis-server's plain port, the"
  echo "ACL user's password. \`direct, TLS\`: redis-server's own TLS port. \`HAProxy\`: \`mode tcp\`"
  echo "relay to the plain port. \`HAProxy, TLS\`: \`bind ... ssl crt\` ends the client's TLS (Redis"
  echo "TLS starts with the first byte, so HAProxy can) and relays plain text to redis-server; the"
  echo "password still goes through to redis-server. \`Sumun, TLS + token\`: a \`redis\` listener with"
  echo "\`tls = \"required\"\`; the password is a \`sumun token\` (verified at the gateway), every"
  echo "command is checked against the user's default rules (\`+@all -@dangerous ~* &*\`, so"
  echo "redis-benchmark's \`CONFIG GET\` at start is refused with NOPERM, which redis-benchmark"
  echo "reports as a warning), and Sumun logs in to redis-server (plain, loopback) with the vault's"
  echo "password. \`Sumun ..., multiplexed\`: \`pool = { mode = \"transaction\" }\` (the default; size 20): clients share"
  echo "a few server connections (another opens when the least busy one has 256 replies in flight). \`Sumun ..., session\`:"
  echo "\`pool = { mode = \"session\" }\`, one server connection per client, as HAProxy."
  echo "No \`Sumun, plain\` row: tokens are accepted only over TLS, and gateway-held passwords are"
  echo "not built for Redis yet."
  if [ -n "$SUMUN_NOTE" ]; then echo; echo "**Sumun rows failed:** $SUMUN_NOTE"; fi
  echo
  echo "## Summary: medians over $ROUNDS round(s)"
  echo
  echo "Requests/s and proxy CPU µs per request, the median of the rounds' values; the ratio columns"
  echo "give the median of the per-round ratios and, in brackets, each round's."
  echo
  echo "| test | direct req/s | direct TLS req/s | HAProxy req/s | HAProxy TLS req/s | Sumun multiplexed req/s | Sumun session req/s | HAProxy CPU µs/req | HAProxy TLS CPU µs/req | Sumun multiplexed CPU µs/req | Sumun session CPU µs/req | multiplexed/HAProxy-TLS req/s | multiplexed/HAProxy-TLS CPU | server connections: multiplexed | server connections: session | server connections: HAProxy TLS |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${MEDIANS[@]}"
  echo
  echo "## redis-benchmark, every row"
  echo
  echo "| round | test | path | requests/s | avg ms | p50 ms | p99 ms | proxy CPU µs/req | redis-server CPU µs/req | redis-benchmark CPU µs/req | server connections (peak) | Sumun/HAProxy-TLS req/s | Sumun/HAProxy-TLS proxy CPU | listen overflows | load 1m |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
  echo
  echo "Peak memory (VmHWM) at the end: Sumun multiplexed ${SUMUN_RSS:-?}, Sumun session ${SUMUN2_RSS:-?}, HAProxy ${HAP_RSS:-?}."
  if [ ${#FAILURES[@]} -gt 0 ]; then
    echo
    echo "## Failures"
    echo
    printf '%s\n' "${FAILURES[@]}"
  fi
  echo
  echo "## Gateway log"
  echo
  if [ -n "$SUMUN_LOG_TAIL" ]; then
    echo "\`SUMUN_LOG=warn\`: $SUMUN_LOG_LINES lines; the last ones (lines naming a token or password left out):"
    echo
    echo '```'
    echo "$SUMUN_LOG_TAIL"
    echo '```'
  else
    echo "\`SUMUN_LOG=warn\`: nothing logged."
  fi
  echo
  echo "## Commands"
  echo
  echo "Ports are picked free per run. \$RPASS is the Redis ACL user's random password, \$TOKEN the"
  echo "Sumun token."
  echo
  echo '```'
  printf '%s\n' "${CMDS[@]}"
  echo '```'
  if [ -f "$HERE/NOTES.md" ]; then echo; cat "$HERE/NOTES.md"; fi
} > "$OUT"
echo "[$TOTAL] wrote $OUT"
