#!/usr/bin/env bash
# What per-statement query audit costs: Sumun gateways side by side on loopback in front of one
# private PostgreSQL, one with `[audit]` (default masked `query` events, one JSON line per
# statement) and one without, and pgbench runs alternating between them so drift and noise hit
# both alike. Reports, per run and as medians, TPS and proxy CPU per transaction (utime + stime
# of all the gateway's threads from /proc/PID/stat, the log writer thread included), and the
# audit-on / audit-off ratios. With `-S` a transaction is one statement, so the CPU difference
# is the cost of one audited query.
#
#   bench/postgres/audit.sh                          # 4 rounds of pgbench -S -c 32 -j 2 -T 8
#   ROUNDS=6 DURATION=10 bench/postgres/audit.sh
#   SUMUN_OLD=/tmp/old-target/release/sumun bench/postgres/audit.sh
#       # also an older build, off and on, in the same rounds (before/after in one run)
#   COMPARE=protection bench/postgres/audit.sh
#       # inline protection instead (issue 21): both gateways audit; "off" has
#       # `[protection] enabled = false`, "on" every protection at its defaults with nobody
#       # exempt (rate limits, detections, SQL-injection inspection of every statement in log
#       # mode). Results: bench/postgres/PROTECTION.md.
#
# Knobs: SUMUN=path (default target/release/sumun, built if missing), SUMUN_OLD=path, ROUNDS=4,
# DURATION=8, CLIENTS=32, JOBS=2, POOL_SIZE=20, SCALE=10, MODE=transaction, OUT=file (markdown
# results; default: printed only), KEEP=1 (keep the work directory with logs and audit files).
#
# Needs postgresql and postgresql-client (pgbench), python3; run as root (PostgreSQL runs as
# user postgres). The machine is whatever it is: on a shared or 2-core box everything (pgbench,
# PostgreSQL, the gateways) competes for the same cores, so look at the spread, not one run.
set -euo pipefail
ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 65536 2>/dev/null || true
cd "$(dirname "$0")/../.."
ROOT=$(pwd)

ROUNDS=${ROUNDS:-4}
DURATION=${DURATION:-8}
CLIENTS=${CLIENTS:-32}
JOBS=${JOBS:-2}
POOL_SIZE=${POOL_SIZE:-20}
SCALE=${SCALE:-10}
MODE=${MODE:-transaction}
COMPARE=${COMPARE:-audit}
SUMUN=${SUMUN:-$ROOT/target/release/sumun}
SUMUN_OLD=${SUMUN_OLD:-}
OUT=${OUT:-}
KEEP=${KEEP:-0}

if [ "$(id -u)" != 0 ]; then echo "run as root (PostgreSQL runs as user postgres)" >&2; exit 1; fi
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || { echo "missing: apt-get install -y postgresql" >&2; exit 1; }
command -v python3 >/dev/null || { echo "missing: python3" >&2; exit 1; }
if [ -x /usr/lib/postgresql/15/bin/postgres ]; then PGBIN=/usr/lib/postgresql/15/bin
else PGBIN=$(dirname "$(ls /usr/lib/postgresql/*/bin/postgres | sort -V | tail -1)"); fi
PGBENCH=$PGBIN/pgbench; [ -x "$PGBENCH" ] || PGBENCH=$(command -v pgbench)
if [ ! -x "$SUMUN" ]; then
  echo "building sumun (cargo build --release -p sumun)..."
  cargo build --release -p sumun >/dev/null
fi
[ -z "$SUMUN_OLD" ] || [ -x "$SUMUN_OLD" ] || { echo "SUMUN_OLD=$SUMUN_OLD is not executable" >&2; exit 1; }

# --- work directory and cleanup --------------------------------------------------------------
W=$(mktemp -d /tmp/sumun-audit-bench.XXXXXX)
chmod 755 "$W"
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
alive() { [ -n "$1" ] && [ -r "/proc/$1/stat" ] && [ "$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)" != Z ]; }
wait_port() { # PORT [PID]
  for _ in $(seq 100); do
    (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    [ -n "${2:-}" ] && ! alive "$2" && return 1
    sleep 0.1
  done
  return 1
}
TCK=$(getconf CLK_TCK)
# utime + stime of all the process's threads (fields 14 and 15 of /proc/PID/stat).
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
metric() { # ADMIN_PORT SERIES -> value or empty
  python3 - "$1" "$2" <<'PY'
import sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=5).read().decode()
for line in text.splitlines():
    if line.startswith(sys.argv[2] + " "):
        print(line.split()[-1]); break
PY
}
median() { sort -g | awk '{a[NR]=$1} END { if (NR == 0) print "-"; else if (NR % 2) print a[(NR+1)/2]; else printf "%.1f\n", (a[NR/2] + a[NR/2+1]) / 2 }'; }
div() { awk -v a="$1" -v b="$2" 'BEGIN { if (a != "-" && b != "-" && b + 0 > 0) printf "%.2f", a / b; else print "-" }'; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN { if (a != "-" && b != "-") printf "%.1f", a - b; else print "-" }'; }

# --- PostgreSQL ------------------------------------------------------------------------------
PGPASS=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
printf '%s\n' "$PGPASS" > "$W/pgpass.txt"; chmod 600 "$W/pgpass.txt"
PG_PORT=$(free_port)
PGDATA=$W/pg; mkdir -p "$PGDATA"; chown postgres "$PGDATA"
as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres -E UTF8 --auth-local=trust --auth-host=scram-sha-256 >"$W/initdb.log" 2>&1
PG_OPTS="-p $PG_PORT -k $PGDATA -c listen_addresses=127.0.0.1 -c max_connections=400 -c shared_buffers=256MB -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c password_encryption=scram-sha-256"
as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/log" -o "$PG_OPTS" -w start >/dev/null
as_pg psql -q -X -h "$PGDATA" -p "$PG_PORT" -U postgres -d postgres \
  -c "CREATE ROLE bench LOGIN PASSWORD '$PGPASS'" -c "CREATE DATABASE bench OWNER bench" >/dev/null
PGPASSWORD=$PGPASS PGSSLMODE=disable "$PGBENCH" -i -s "$SCALE" -q -h 127.0.0.1 -p "$PG_PORT" -U bench bench >"$W/pgbench-init.log" 2>&1
echo "PostgreSQL on 127.0.0.1:$PG_PORT, pgbench scale $SCALE"

# --- gateways ----------------------------------------------------------------------------------
# NAME BINARY AUDIT(on|off): own directory, vault, listener and admin port; SCRAM logins
# against the verifier of the same password PostgreSQL has.
declare -A GW_PID GW_PORT GW_ADMIN GW_DIR
NAMES=()
start_gateway() {
  local name=$1 bin=$2 audit=$3 d=$W/$1 port admin
  mkdir -p "$d"
  port=$(free_port); admin=$(free_port)
  cat > "$d/sumun.toml" <<TOML
[gateway]
name = "bench"
[admin]
listen = "127.0.0.1:$admin"
[vault]
dir = "$d/vault"
key_file = "$d/vault/master.key"
[[security_groups]]
name = "local"
ingress = [{ cidr = "127.0.0.0/8" }]
[[listeners]]
name = "pg"
bind = "127.0.0.1:$port"
protocol = "postgres"
tls = "off"
target_group = "pg"
security_groups = ["local"]
max_connections = 12000
pool = { mode = "$MODE", size = $POOL_SIZE }
[[target_groups]]
name = "pg"
targets = [{ address = "127.0.0.1:$PG_PORT" }]
[[users]]
name = "bench"
auth = ["scram"]
backend_credential = "pg/bench"
TOML
  if [ "$COMPARE" = protection ]; then
    printf '[audit]\npath = "%s/audit.jsonl"\n' "$d" >> "$d/sumun.toml"
    if [ "$audit" = on ]; then
      printf '[protection]\nexempt = []\n' >> "$d/sumun.toml"
    else
      printf '[protection]\nenabled = false\n' >> "$d/sumun.toml"
    fi
  elif [ "$audit" = on ]; then
    printf '[audit]\npath = "%s/audit.jsonl"\n' "$d" >> "$d/sumun.toml"
  fi
  "$bin" vault init --config "$d/sumun.toml" >"$d/setup.log" 2>&1
  "$bin" secrets put pg/bench --value-file "$W/pgpass.txt" --kind postgres --address "127.0.0.1:$PG_PORT" \
    --username bench --database bench --config "$d/sumun.toml" >>"$d/setup.log" 2>&1
  "$bin" users set-password bench --value-file "$W/pgpass.txt" --config "$d/sumun.toml" >>"$d/setup.log" 2>&1
  SUMUN_LOG=warn "$bin" serve --config "$d/sumun.toml" >"$d/sumun.log" 2>&1 &
  GW_PID[$name]=$!; pids+=("$!")
  wait_port "$port" "${GW_PID[$name]}" || { echo "gateway $name did not start:" >&2; tail -5 "$d/sumun.log" >&2; exit 1; }
  GW_PORT[$name]=$port; GW_ADMIN[$name]=$admin; GW_DIR[$name]=$d
  NAMES+=("$name")
  echo "gateway $name: $bin, $COMPARE $audit, :$port (pid ${GW_PID[$name]})"
  # Warm the pool.
  PGPASSWORD=$PGPASS PGSSLMODE=disable "$PGBENCH" -S -c "$CLIENTS" -j "$JOBS" -T 1 -h 127.0.0.1 -p "$port" -U bench bench >/dev/null 2>&1 || true
}
start_gateway off "$SUMUN" off
start_gateway on "$SUMUN" on
if [ -n "$SUMUN_OLD" ]; then
  start_gateway old-off "$SUMUN_OLD" off
  start_gateway old-on "$SUMUN_OLD" on
fi

LOAD0=$(cut -d" " -f1-3 /proc/loadavg)

# --- alternating runs ------------------------------------------------------------------------
CMD="pgbench -S -c $CLIENTS -j $JOBS -T $DURATION -h 127.0.0.1 -p PORT -U bench bench"
echo "$ROUNDS rounds of: PGSSLMODE=disable $CMD"
declare -A RUN_TPS RUN_CPU
ROWS=()
n=${#NAMES[@]}
for r in $(seq 1 "$ROUNDS"); do
  for k in $(seq 0 $((n - 1))); do
    # Rotate the order each round so no gateway always runs first or last.
    name=${NAMES[$(( (k + r - 1) % n ))]}
    pid=${GW_PID[$name]}
    t0=$(cpu_ticks "$pid")
    out=$(PGPASSWORD=$PGPASS PGSSLMODE=disable timeout -k 5 $((DURATION + 60)) "$PGBENCH" -S -c "$CLIENTS" -j "$JOBS" -T "$DURATION" \
      -h 127.0.0.1 -p "${GW_PORT[$name]}" -U bench bench 2>&1) || true
    t1=$(cpu_ticks "$pid")
    # Here-strings, not pipes: an awk that exits early must not fail the pipeline (pipefail).
    tps=$(awk '/^tps = / {printf "%.0f", $3; exit}' <<<"$out")
    txns=$(awk -F': ' '/actually processed/ {split($2, a, "/"); print a[1] + 0; exit}' <<<"$out")
    if [ -z "$tps" ] || [ "${txns:-0}" = 0 ]; then
      echo "  round $r $name: failed: $(tail -n 2 <<<"$out" | tr '\n' ' ')"; continue
    fi
    cpu=$(awk -v d=$((t1 - t0)) -v n="$txns" -v t="$TCK" 'BEGIN { printf "%.1f", d * 1e6 / t / n }')
    RUN_TPS[$name]+="$tps "; RUN_CPU[$name]+="$cpu "
    ROWS+=("| $r | $name | $tps | $cpu |")
    printf '  round %d %-8s %8s tps %7s µs/txn\n' "$r" "$name" "$tps" "$cpu"
  done
done

# --- results ---------------------------------------------------------------------------------
declare -A MED_TPS MED_CPU
report() {
  echo "Command (each gateway, alternating, $ROUNDS rounds): \`COMPARE=$COMPARE PGSSLMODE=disable $CMD\`; pool mode $MODE, size $POOL_SIZE; $(nproc) cores; load average before the run: $LOAD0; binary $SUMUN; $(date -u +%Y-%m-%dT%H:%MZ)."
  echo
  echo "| round | gateway | TPS | proxy CPU µs/txn |"
  echo "|---|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
  echo
  echo "| gateway | median TPS | median CPU µs/txn | all CPU µs/txn | statements audited | audit lines dropped |"
  echo "|---|---|---|---|---|---|"
  local name lines dropped
  for name in "${NAMES[@]}"; do
    MED_TPS[$name]=$(echo "${RUN_TPS[$name]:-}" | tr ' ' '\n' | { grep . || true; } | median)
    MED_CPU[$name]=$(echo "${RUN_CPU[$name]:-}" | tr ' ' '\n' | { grep . || true; } | median)
    lines=-; dropped=-
    if [ -f "${GW_DIR[$name]}/audit.jsonl" ]; then
      lines=$(metric "${GW_ADMIN[$name]}" 'sumun_pg_queries_total' 2>/dev/null || echo "?")
      dropped=$(metric "${GW_ADMIN[$name]}" 'sumun_log_records_dropped_total{log="audit"}' 2>/dev/null || echo "?")
    fi
    echo "| $name | ${MED_TPS[$name]} | ${MED_CPU[$name]} | ${RUN_CPU[$name]:-} | $lines | ${dropped:--} |"
  done
  echo
  local pair on off
  for pair in ":" "old-:"; do
    on=${pair%:}on; off=${pair%:}off
    [ -n "${MED_CPU[$on]:-}" ] && [ -n "${MED_CPU[$off]:-}" ] || continue
    echo "- ${pair%:}on vs ${pair%:}off: TPS x$(div "${MED_TPS[$on]}" "${MED_TPS[$off]}"), CPU per transaction x$(div "${MED_CPU[$on]}" "${MED_CPU[$off]}"), $COMPARE cost $(sub "${MED_CPU[$on]}" "${MED_CPU[$off]}") µs per query (medians)."
  done
}
report | tee "$W/results.md"
[ -n "$OUT" ] && cp "$W/results.md" "$OUT"
exit 0
