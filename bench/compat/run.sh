#!/usr/bin/env bash
# Runs node-postgres's own test suites (the pg driver's integration tests, pg-pool, pg-cursor,
# pg-query-stream) three times — directly against a private PostgreSQL 15, then through a Sumun
# `postgres` listener in session mode and in transaction mode — and writes
# bench/compat/RESULTS.md: pass/fail counts per run and every test whose result differs from the
# direct run, with the reason from bench/compat/reasons.tsv (issue 17, "Beyond a direct
# connection").
#
#   PG_SRC=/path/to/node-postgres bench/compat/run.sh      # or: bench/compat/run.sh /path/to/node-postgres
#
# PG_SRC is a checkout of node-postgres (`git clone https://github.com/brianc/node-postgres`).
# Its code is not part of this repo: the script copies the packages it needs into a work
# directory, installs their dependencies from the npm registry (`npm install`; the Cloudflare
# worker tooling is left out) and builds pg-protocol with tsc; the checkout is not modified.
# The only change to the suite is suite-hook.js (see there): a failed test no longer ends the
# rest of its file.
#
# Knobs: SUMUN=path (default target/release/sumun; SUMUN_COMMIT=text names its source in the
# report, default the repo's HEAD), SUMUN_BUILD=0 (do not run
# `cargo build --release -p sumun`), POOL_SIZE=40, RUNS="direct session transaction",
# COMPAT_ONLY=REGEX (only files whose "package/path" matches), COMPAT_FILE_TIMEOUT=120 (s per
# file), OUT=file (default bench/compat/RESULTS.md), KEEP=1 (keep the work directory: logs of
# every file per run, the Sumun config, audit and server logs).
#
# Needs (installed with apt-get when run as root): postgresql (15), nodejs, npm, openssl,
# python3. Run as root: PostgreSQL runs as user `postgres`.
#
# Auth: every run logs in as `postgres` (a superuser, as node-postgres's CI does) with a password
# over SCRAM-SHA-256. Through Sumun the same password is checked against the verifier of
# `sumun users set-password`, and Sumun logs in to PostgreSQL (scram-sha-256) with the vault
# secret `pg/postgres`. The SCRAM tests' roles (scram_test, scram_unicode_test) are set up the
# same way. Listeners have `tls = "optional"` with a `sumun cert dev` certificate (PostgreSQL
# uses the same certificate), so the suite's TLS tests run too.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
HERE=$ROOT/bench/compat

PG_SRC=${1:-${PG_SRC:-}}
if [ -z "$PG_SRC" ] || [ ! -f "$PG_SRC/packages/pg/package.json" ]; then
  cat >&2 <<EOF
usage: PG_SRC=/path/to/node-postgres bench/compat/run.sh
PG_SRC must be a checkout of node-postgres, e.g.:
  git clone https://github.com/brianc/node-postgres /tmp/node-postgres
EOF
  exit 2
fi
PG_SRC=$(cd "$PG_SRC" && pwd)
POOL_SIZE=${POOL_SIZE:-40}
RUNS=${RUNS:-direct session transaction}
SUMUN=${SUMUN:-$ROOT/target/release/sumun}
SUMUN_BUILD=${SUMUN_BUILD:-1}
OUT=${OUT:-$HERE/RESULTS.md}
KEEP=${KEEP:-0}
STARTED=$(date +%s)
elapsed() { local s=$(( $(date +%s) - STARTED )); printf '%dm%02ds' $((s / 60)) $((s % 60)); }

# --- packages ------------------------------------------------------------------------------
need=()
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
command -v psql >/dev/null || need+=(postgresql-client)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
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
if [ "$(id -u)" != 0 ]; then echo "run as root (PostgreSQL runs as user postgres)" >&2; exit 1; fi
if [ -x /usr/lib/postgresql/15/bin/postgres ]; then PGBIN=/usr/lib/postgresql/15/bin
else PGBIN=$(dirname "$(ls /usr/lib/postgresql/*/bin/postgres | sort -V | tail -1)"); fi

if [ "$SUMUN_BUILD" = 1 ] && [ "$SUMUN" = "$ROOT/target/release/sumun" ]; then
  echo "[$(elapsed)] building sumun (cargo build --release -p sumun)..."
  cargo build --release -p sumun >/dev/null 2>&1 || echo "cargo build failed; using the existing $SUMUN" >&2
fi
[ -x "$SUMUN" ] || { echo "$SUMUN not found" >&2; exit 1; }

# --- work directory and cleanup --------------------------------------------------------------
W=$(mktemp -d /tmp/sumun-compat.XXXXXX)
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
wait_port() { # PORT [PID]: wait up to 10 s; fail early if PID died
  for _ in $(seq 100); do
    (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    [ -n "${2:-}" ] && ! alive "$2" && return 1
    sleep 0.1
  done
  return 1
}

# --- node-postgres: copy, install, build ------------------------------------------------------
SRC_REV=$(git -C "$PG_SRC" rev-parse --short HEAD 2>/dev/null || echo "${PG_SRC_REV:-?}")   # PG_SRC_REV: for a copy without .git
SRC_VER=$(node -p "require('$PG_SRC/packages/pg/package.json').version")
echo "[$(elapsed)] node-postgres $SRC_VER (commit $SRC_REV) from $PG_SRC: installing into $W/node-postgres"
NP=$W/node-postgres
mkdir -p "$NP/packages"
for p in pg pg-pool pg-cursor pg-query-stream pg-protocol; do cp -r "$PG_SRC/packages/$p" "$NP/packages/"; done
rm -rf "$NP"/packages/*/node_modules "$NP"/packages/pg-protocol/dist
node -e '
const fs = require("fs"), np = process.argv[1];
const pj = np + "/packages/pg/package.json", d = JSON.parse(fs.readFileSync(pj));
// the Cloudflare worker tests (make test-worker) are not run: leave their tooling out
for (const k of ["@cloudflare/vitest-pool-workers", "@cloudflare/workers-types", "vitest", "wrangler"]) delete d.devDependencies[k];
fs.writeFileSync(pj, JSON.stringify(d, null, 2));
fs.writeFileSync(np + "/package.json", JSON.stringify({ name: "sumun-compat", private: true,
  workspaces: ["packages/pg", "packages/pg-pool", "packages/pg-cursor", "packages/pg-query-stream", "packages/pg-protocol"],
  devDependencies: { typescript: "^6.0.3" } }, null, 2));
' "$NP"
(cd "$NP" && npm install --no-audit --no-fund --loglevel=error >"$W/npm-install.log" 2>&1) \
  || { echo "npm install failed:" >&2; tail -20 "$W/npm-install.log" >&2; exit 1; }
(cd "$NP/packages/pg-protocol" && ../../node_modules/.bin/tsc >"$W/tsc.log" 2>&1) \
  || { echo "building pg-protocol failed:" >&2; tail -20 "$W/tsc.log" >&2; exit 1; }

# --- PostgreSQL ------------------------------------------------------------------------------
PGPASS=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
SCRAM_PASS=test4scram
SCRAM_UNICODE_PASS=$(printf 'IX-\u2168')   # NFKC-normalizes to IX-IX: checks SASLprep
printf '%s\n' "$PGPASS" > "$W/pgpass.txt"
printf '%s\n' "$SCRAM_PASS" > "$W/scram.txt"
printf '%s\n' "$SCRAM_UNICODE_PASS" > "$W/scram-unicode.txt"
chmod 600 "$W"/*.txt
CERTS=$W/certs
"$SUMUN" cert dev --out "$CERTS" >"$W/cert.log" 2>&1 || { echo "sumun cert dev failed" >&2; cat "$W/cert.log" >&2; exit 1; }
PGCERTS=$W/pgcerts; mkdir -p "$PGCERTS"; cp "$CERTS/server.pem" "$CERTS/server-key.pem" "$PGCERTS/"
chown -R postgres "$PGCERTS"; chmod 600 "$PGCERTS/server-key.pem"
PG_PORT=$(free_port)
PGDATA=$W/pg; mkdir -p "$PGDATA"; chown postgres "$PGDATA"
echo "[$(elapsed)] PostgreSQL on 127.0.0.1:$PG_PORT"
as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres -E UTF8 --locale=C.UTF-8 --auth-local=trust --auth-host=scram-sha-256 >"$W/initdb.log" 2>&1 \
  || as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres -E UTF8 --auth-local=trust --auth-host=scram-sha-256 >"$W/initdb.log" 2>&1
PG_OPTS="-p $PG_PORT -k $PGDATA -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off -c synchronous_commit=off -c password_encryption=scram-sha-256 -c ssl=on -c ssl_cert_file=$PGCERTS/server.pem -c ssl_key_file=$PGCERTS/server-key.pem"
as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/log" -o "$PG_OPTS" -w start >/dev/null
as_pg psql -q -X -v ON_ERROR_STOP=1 -h "$PGDATA" -p "$PG_PORT" -U postgres -d postgres \
  -c "ALTER ROLE postgres PASSWORD '$PGPASS'" \
  -c "CREATE ROLE scram_test LOGIN PASSWORD '$SCRAM_PASS'" \
  -c "CREATE ROLE scram_unicode_test LOGIN PASSWORD U&'IX-\\2168'" \
  -c "CREATE DATABASE compat" >/dev/null
PG_VER=$("$PGBIN/postgres" --version | awk '{print $3}')

# --- Sumun: one listener per pool mode -----------------------------------------------------
VAULT=$W/vault
S_SESSION=$(free_port); S_TX=$(free_port)
CFG=$W/sumun.toml
listener() { # NAME PORT MODE
  cat <<TOML
[[listeners]]
name = "$1"
bind = "127.0.0.1:$2"
protocol = "postgres"
tls = "optional"
tls_config = "default"
target_group = "pg"
security_groups = ["local"]
pool = { mode = "$3", size = $POOL_SIZE }
TOML
}
user() { # NAME SECRET
  cat <<TOML
[[users]]
name = "$1"
auth = ["scram"]
backend_credential = "$2"
TOML
}
{
  cat <<TOML
[gateway]
name = "compat"
[vault]
dir = "$VAULT"
key_file = "$VAULT/master.key"
[tls.default]
cert = "$CERTS/server.pem"
key = "$CERTS/server-key.pem"
[[security_groups]]
name = "local"
ingress = [{ cidr = "127.0.0.0/8" }]
[audit]
path = "$W/audit.jsonl"
TOML
  listener pg-session "$S_SESSION" session
  listener pg-transaction "$S_TX" transaction
  cat <<TOML
[[target_groups]]
name = "pg"
targets = [{ address = "127.0.0.1:$PG_PORT" }]
TOML
  user postgres pg/postgres
  user scram_test pg/scram_test
  user scram_unicode_test pg/scram_unicode_test
} > "$CFG"
{
  "$SUMUN" vault init --config "$CFG"
  for u in postgres:pgpass scram_test:scram scram_unicode_test:scram-unicode; do
    name=${u%%:*}; file=$W/${u#*:}.txt
    "$SUMUN" secrets put "pg/$name" --value-file "$file" --kind postgres --address "127.0.0.1:$PG_PORT" --username "$name" --config "$CFG"
    "$SUMUN" users set-password "$name" --value-file "$file" --config "$CFG"
  done
} >"$W/sumun-setup.log" 2>&1 || { echo "sumun setup failed:" >&2; tail -5 "$W/sumun-setup.log" >&2; exit 1; }
SUMUN_LOG=info "$SUMUN" serve --config "$CFG" >"$W/sumun.log" 2>&1 &
SUMUN_PID=$!; pids+=("$SUMUN_PID")
wait_port "$S_SESSION" "$SUMUN_PID" && wait_port "$S_TX" "$SUMUN_PID" \
  || { echo "sumun serve did not start:" >&2; tail -5 "$W/sumun.log" >&2; exit 1; }
SUMUN_VER="$("$SUMUN" --version | head -1) (${SUMUN_COMMIT:-commit $(git rev-parse --short HEAD)})"
for port in "$PG_PORT" "$S_SESSION" "$S_TX"; do
  PGPASSWORD=$PGPASS PGSSLMODE=disable psql -X -q -h 127.0.0.1 -p "$port" -U postgres -d compat -Atc 'select 1' >/dev/null \
    || { echo "login as postgres on port $port failed" >&2; exit 1; }
done
echo "[$(elapsed)] Sumun on 127.0.0.1:$S_SESSION (session) and :$S_TX (transaction), pool size $POOL_SIZE"

# --- the three runs ------------------------------------------------------------------------
# A clean environment: only what the suite reads (node-postgres's default user is $USER, set to
# the database user as in its CI).
run_suite() { # NAME PORT
  local name=$1 port=$2 mark
  mark=$(wc -l <"$W/audit.jsonl" 2>/dev/null || echo 0)
  echo "[$(elapsed)] run $name: node-postgres's suites against 127.0.0.1:$port"
  mkdir -p "$W/logs/$name"
  env -i PATH="$PATH" HOME="$W" USER=postgres LANG=C.UTF-8 TZ="${TZ:-UTC}" \
    PGHOST=127.0.0.1 PGPORT="$port" PGUSER=postgres PGPASSWORD="$PGPASS" PGDATABASE=compat \
    SCRAM_TEST_PGUSER=scram_test SCRAM_TEST_PGPASSWORD="$SCRAM_PASS" \
    SCRAM_TEST_PGUSER_UNICODE=scram_unicode_test SCRAM_TEST_PGPASSWORD_UNICODE="$SCRAM_UNICODE_PASS" \
    COMPAT_ONLY="${COMPAT_ONLY:-}" COMPAT_FILE_TIMEOUT="${COMPAT_FILE_TIMEOUT:-120}" \
    node "$HERE/runner.js" "$NP" "$W/logs/$name/results.json" "$W/logs/$name" | tee "$W/logs/$name/summary.txt" | tail -1
  # this run's session.end records: pin reasons, how sessions ended
  [ -f "$W/audit.jsonl" ] && tail -n +"$((mark + 1))" "$W/audit.jsonl" >"$W/logs/$name/audit.jsonl" || true
}
REPORT_ARGS=()
for r in $RUNS; do
  case $r in
    direct) run_suite direct "$PG_PORT" ;;
    session) run_suite session "$S_SESSION" ;;
    transaction) run_suite transaction "$S_TX" ;;
    *) echo "unknown run $r" >&2; exit 2 ;;
  esac
  REPORT_ARGS+=("$r=$W/logs/$r")
done
alive "$SUMUN_PID" || echo "warning: sumun exited during the runs (see $W/sumun.log)" >&2

# --- report --------------------------------------------------------------------------------
COMPAT_ENV="node-postgres $SRC_VER (commit $SRC_REV), Node.js $(node --version), PostgreSQL $PG_VER, Sumun $SUMUN_VER, pool size $POOL_SIZE, $(nproc) cores, Linux $(uname -r)" \
COMPAT_WHEN="$(date -u '+%Y-%m-%d %H:%M UTC'), total $(elapsed)" \
  node "$HERE/report.js" "$HERE/reasons.tsv" "$OUT" "${REPORT_ARGS[@]}"
echo "[$(elapsed)] wrote $OUT"
