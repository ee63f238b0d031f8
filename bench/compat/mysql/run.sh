#!/usr/bin/env bash
# Runs PyMySQL's own test suite three times — directly against a private MariaDB, then through a
# Sumun `mysql` listener in session mode and in transaction mode — and writes
# bench/compat/mysql/RESULTS.md: pass/fail/skip counts per run and every test whose result
# differs from the direct run, with the reason from bench/compat/mysql/reasons.tsv (issue 18,
# "Tests": a public MySQL driver's own test suite through the gateway).
#
#   PYMYSQL_SRC=/path/to/PyMySQL bench/compat/mysql/run.sh    # or: bench/compat/mysql/run.sh /path/to/PyMySQL
#
# PYMYSQL_SRC is a checkout of PyMySQL (`git clone https://github.com/PyMySQL/PyMySQL`, a release
# tag checked out). Its code is not part of this repo: the script copies it into a work
# directory and runs `pytest pymysql` there (and the doctests of pymysql/converters.py, as
# upstream CI does) with pytest, pytest-timeout, cryptography and PyNaCl from PyPI in a venv
# under the work directory (VENV=dir reuses one). The checkout is not modified. The suite reads
# its connection settings from pymysql/tests/databases.json (upstream CI copies ci/docker.json
# there); the script writes that file per run, which is the suite's own way to be configured:
# no test file is changed.
#
# Knobs: SUMUN=path (default target/release/sumun; SUMUN_COMMIT=text names its source in the
# report), SUMUN_BUILD=0 (do not run `cargo build --release -p sumun`), POOL_SIZE=20,
# RUNS="direct session transaction", ONLY=EXPR (pytest -k), TEST_TIMEOUT=60 (s per test),
# OUT=file (default bench/compat/mysql/RESULTS.md), KEEP=1 (keep the work directory: pytest
# output and JUnit XML per run, the Sumun config and log, the audit log, MariaDB's log).
#
# Needs (installed with apt-get when run as root): mariadb-server (10.11), mariadb-client,
# python3 with venv, openssl.
#
# Logins. Every run uses TLS: MariaDB has the `sumun cert dev` certificate too, and
# databases.json gives PyMySQL `ssl = {"ca": ca.pem}` (the host name 127.0.0.1 is checked), so
# the direct and gateway runs differ only by the gateway. The suite's two connections are
# upstream CI's: `root` in database test1 (all privileges, local_infile) and `test2` (password
# `some password`, all privileges on test2). Directly they log in with their MariaDB passwords
# (mysql_native_password); through Sumun with a Sumun token each (`sumun token --ttl 3h`), which
# PyMySQL sends with mysql_clear_password after the gateway's auth switch, and Sumun logs in to
# MariaDB with the vault secrets maria/root and maria/test2 holding the real passwords.
set -euo pipefail
cd "$(dirname "$0")/../../.."
ROOT=$(pwd)
HERE=$ROOT/bench/compat/mysql

SRC=${1:-${PYMYSQL_SRC:-}}
if [ -z "$SRC" ] || [ ! -f "$SRC/pymysql/connections.py" ] || [ ! -d "$SRC/pymysql/tests" ]; then
  cat >&2 <<EOF
usage: PYMYSQL_SRC=/path/to/PyMySQL bench/compat/mysql/run.sh
PYMYSQL_SRC must be a checkout of PyMySQL, e.g.:
  git clone https://github.com/PyMySQL/PyMySQL /tmp/pymysql-src && git -C /tmp/pymysql-src checkout v1.2.0
EOF
  exit 2
fi
SRC=$(cd "$SRC" && pwd)
POOL_SIZE=${POOL_SIZE:-20}
RUNS=${RUNS:-direct session transaction direct-shared transaction-shared}
SUMUN=${SUMUN:-$ROOT/target/release/sumun}
SUMUN_BUILD=${SUMUN_BUILD:-1}
OUT=${OUT:-$HERE/RESULTS.md}
KEEP=${KEEP:-0}
TEST_TIMEOUT=${TEST_TIMEOUT:-60}
STARTED=$(date +%s)
elapsed() { local s=$(( $(date +%s) - STARTED )); printf '%dm%02ds' $((s / 60)) $((s % 60)); }

# --- packages ------------------------------------------------------------------------------
need=()
[ -x /usr/sbin/mariadbd ] || command -v mariadbd >/dev/null || need+=(mariadb-server)
command -v mariadb >/dev/null || command -v mysql >/dev/null || need+=(mariadb-client)
command -v openssl >/dev/null || need+=(openssl)
command -v python3 >/dev/null || need+=(python3 python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing: ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "missing: sudo apt-get install -y ${need[*]}" >&2; exit 1
  fi
fi
MARIADBD=$(command -v mariadbd || echo /usr/sbin/mariadbd)
MYSQL=$(command -v mariadb || command -v mysql)

if [ "$SUMUN_BUILD" = 1 ] && [ "$SUMUN" = "$ROOT/target/release/sumun" ]; then
  echo "[$(elapsed)] building sumun (cargo build --release -p sumun)..."
  cargo build --release -p sumun >/dev/null 2>&1 || echo "cargo build failed; using the existing $SUMUN" >&2
fi
[ -x "$SUMUN" ] || { echo "$SUMUN not found" >&2; exit 1; }
# Run a copy: other work may rebuild target/release/sumun while the suite runs.
SUMUN_BUILT=$(date -u -r "$SUMUN" '+%Y-%m-%d %H:%M UTC')

# --- work directory and cleanup --------------------------------------------------------------
W=$(mktemp -d /tmp/sumun-compat-mysql.XXXXXX)
cp "$SUMUN" "$W/sumun"; SUMUN_ORIG=$SUMUN; SUMUN=$W/sumun
pids=()
cleanup() {
  local p
  trap - EXIT INT TERM
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.3
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  if [ "$KEEP" = 1 ]; then echo "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'echo interrupted >&2; exit 130' INT TERM
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
alive() { [ -n "$1" ] && [ -r "/proc/$1/stat" ] && [ "$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)" != Z ]; }
wait_port() { # PORT [PID]: wait up to 30 s; fail early if PID died
  for _ in $(seq 300); do
    (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    [ -n "${2:-}" ] && ! alive "$2" && return 1
    sleep 0.1
  done
  return 1
}

# --- PyMySQL: copy, venv --------------------------------------------------------------------
SRC_REV=$(git -C "$SRC" rev-parse --short HEAD 2>/dev/null || echo "${PYMYSQL_SRC_REV:-?}")
SRC_TAG=$(git -C "$SRC" describe --tags --exact-match 2>/dev/null || echo "")
SRC_VER=$(cd "$SRC" && python3 -c 'import pymysql; print(pymysql.VERSION_STRING)')
echo "[$(elapsed)] PyMySQL $SRC_VER ${SRC_TAG:+($SRC_TAG) }commit $SRC_REV from $SRC"
PM=$W/pymysql
mkdir -p "$PM"
(cd "$SRC" && tar --exclude=.git -cf - .) | (cd "$PM" && tar -xf -)
rm -f "$PM/pymysql/tests/databases.json"
VENV=${VENV:-$W/venv}
if [ ! -x "$VENV/bin/pytest" ]; then
  echo "[$(elapsed)] venv $VENV: pytest, pytest-timeout, cryptography, PyNaCl from PyPI"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check pytest pytest-timeout cryptography 'PyNaCl>=1.4.0' >"$W/pip.log" 2>&1 \
    || { echo "pip install failed:" >&2; tail -20 "$W/pip.log" >&2; exit 1; }
fi
PY_VER=$("$VENV/bin/python" -c 'import sys; print(".".join(map(str, sys.version_info[:3])))')
PYTEST_VER=$("$VENV/bin/python" -c 'import pytest; print(pytest.__version__)')

# --- certificates ----------------------------------------------------------------------------
CERTS=$W/certs
"$SUMUN" cert dev --out "$CERTS" >"$W/cert.log" 2>&1 || { echo "sumun cert dev failed" >&2; cat "$W/cert.log" >&2; exit 1; }
chmod 600 "$CERTS"/*key*.pem

# --- MariaDB ---------------------------------------------------------------------------------
# As crates/testkit/src/mariadb.rs: mariadb-install-db into a temp dir, --no-defaults first (the
# machine's my.cnf names port 3306), loopback only, anonymous users deleted. Then what the
# suite's CI sets up (ci/docker-entrypoint-initdb.d): databases test1 and test2 (utf8mb4), user
# test2, local_infile on, the ed25519 plugin and its function. root@'%' with a password (all
# privileges) is ours: upstream's root logs in without one, which a vault secret cannot hold.
ROOTPASS=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
TEST2PASS='some password'
printf '%s\n' "$ROOTPASS" > "$W/rootpass.txt"; printf '%s\n' "$TEST2PASS" > "$W/test2pass.txt"
chmod 600 "$W"/*pass.txt
MDATA=$W/mariadb; MSOCK=$W/mariadb.sock
USERARG=(); [ "$(id -u)" = 0 ] && USERARG=(--user=root)
SIZE_FLAGS=(--innodb-buffer-pool-size=64M --innodb-log-file-size=32M)
mariadb-install-db --no-defaults "${USERARG[@]}" --datadir="$MDATA" --auth-root-authentication-method=normal \
  --skip-test-db --skip-name-resolve --skip-log-bin "${SIZE_FLAGS[@]}" >"$W/mariadb-install.log" 2>&1 \
  || { echo "mariadb-install-db failed:" >&2; tail -20 "$W/mariadb-install.log" >&2; exit 1; }
M_PORT=$(free_port)
M_FLAGS=(--bind-address=127.0.0.1 --skip-name-resolve --skip-log-bin --innodb-flush-log-at-trx-commit=2
  --max-connections=500 --max-allowed-packet=64M --log-warnings=1 --local-infile=1 --character-set-server=utf8mb4
  --collation-server=utf8mb4_general_ci "${SIZE_FLAGS[@]}"
  --ssl-cert="$CERTS/server.pem" --ssl-key="$CERTS/server-key.pem" --ssl-ca="$CERTS/ca.pem")
"$MARIADBD" --no-defaults "${USERARG[@]}" --datadir="$MDATA" --socket="$MSOCK" --pid-file="$W/mariadb.pid" \
  --port="$M_PORT" "${M_FLAGS[@]}" >"$W/mariadb.log" 2>&1 &
M_PID=$!; pids+=("$M_PID")
wait_port "$M_PORT" "$M_PID" || { echo "MariaDB did not start:" >&2; tail -20 "$W/mariadb.log" >&2; exit 1; }
root_sql() { "$MYSQL" --no-defaults --socket="$MSOCK" -uroot -N -B -e "$1"; }
for _ in $(seq 100); do root_sql 'select 1' >/dev/null 2>&1 && break; sleep 0.1; done
# root@127.0.0.1, root@::1 and root@HOSTNAME (no password) would shadow root@'%' for TCP logins.
root_sql "DELETE FROM mysql.global_priv WHERE User='' OR (User='root' AND Host<>'localhost'); FLUSH PRIVILEGES"
root_sql "CREATE USER 'root'@'%' IDENTIFIED BY '$ROOTPASS'; GRANT ALL PRIVILEGES ON *.* TO 'root'@'%' WITH GRANT OPTION"
root_sql "CREATE DATABASE test1 DEFAULT CHARACTER SET utf8mb4; CREATE DATABASE test2 DEFAULT CHARACTER SET utf8mb4"
root_sql "CREATE USER test2 IDENTIFIED BY 'some password'; GRANT ALL ON test2.* TO test2"
root_sql "SET GLOBAL local_infile=on"
root_sql 'INSTALL SONAME "auth_ed25519"' 2>>"$W/mariadb-setup.log" || true
root_sql 'CREATE FUNCTION ed25519_password RETURNS STRING SONAME "auth_ed25519.so"' 2>>"$W/mariadb-setup.log" || true
M_VER=$(root_sql "select version()")
echo "[$(elapsed)] MariaDB $M_VER on 127.0.0.1:$M_PORT"

# --- Sumun: one listener per pool mode -----------------------------------------------------
VAULT=$W/vault
S_SESSION=$(free_port); S_TX=$(free_port); S_ADMIN=$(free_port)
CFG=$W/sumun.toml
listener() { # NAME PORT MODE
  cat <<TOML
[[listeners]]
name = "$1"
bind = "127.0.0.1:$2"
protocol = "mysql"
tls = "optional"
tls_config = "default"
target_group = "maria"
security_groups = ["local"]
pool = { mode = "$3", size = $POOL_SIZE }
TOML
}
{
  cat <<TOML
[gateway]
name = "compat-mysql"
[vault]
dir = "$VAULT"
key_file = "$VAULT/master.key"
token_max_ttl = "4h"
[tls.default]
cert = "$CERTS/server.pem"
key = "$CERTS/server-key.pem"
[[security_groups]]
name = "local"
ingress = [{ cidr = "127.0.0.0/8" }]
[audit]
path = "$W/audit.jsonl"
[admin]
listen = "127.0.0.1:$S_ADMIN"
TOML
  listener mysql-session "$S_SESSION" session
  listener mysql-transaction "$S_TX" transaction
  cat <<TOML
[[target_groups]]
name = "maria"
targets = [{ address = "127.0.0.1:$M_PORT" }]
[[users]]
name = "root"
auth = ["token"]
backend_credential = "maria/root"
[[users]]
name = "test2"
auth = ["token"]
backend_credential = "maria/test2"
TOML
} > "$CFG"
{
  "$SUMUN" vault init --config "$CFG"
  "$SUMUN" secrets put maria/root --value-file "$W/rootpass.txt" --kind mysql --address "127.0.0.1:$M_PORT" --username root --config "$CFG"
  "$SUMUN" secrets put maria/test2 --value-file "$W/test2pass.txt" --kind mysql --address "127.0.0.1:$M_PORT" --username test2 --config "$CFG"
} >"$W/sumun-setup.log" 2>&1 || { echo "sumun setup failed:" >&2; tail -5 "$W/sumun-setup.log" >&2; exit 1; }
ROOT_TOKEN=$("$SUMUN" token --user root --ttl 3h --config "$CFG" 2>>"$W/sumun-setup.log")
TEST2_TOKEN=$("$SUMUN" token --user test2 --ttl 3h --config "$CFG" 2>>"$W/sumun-setup.log")
[ -n "$ROOT_TOKEN" ] && [ -n "$TEST2_TOKEN" ] || { echo "sumun token failed:" >&2; tail -3 "$W/sumun-setup.log" >&2; exit 1; }
# debug for conn: every session's end with its I/O error, if any (no statements, no secrets)
SUMUN_LOG=${SUMUN_LOG:-info,sumun_gateway::conn=debug} "$SUMUN" serve --config "$CFG" >"$W/sumun.log" 2>&1 &
SUMUN_PID=$!; pids+=("$SUMUN_PID")
wait_port "$S_SESSION" "$SUMUN_PID" && wait_port "$S_TX" "$SUMUN_PID" \
  || { echo "sumun serve did not start:" >&2; tail -5 "$W/sumun.log" >&2; exit 1; }
SUMUN_VER="$("$SUMUN" --version | head -1) (${SUMUN_COMMIT:-commit $(git rev-parse --short HEAD)}, built $SUMUN_BUILT)"
echo "[$(elapsed)] Sumun on 127.0.0.1:$S_SESSION (session) and :$S_TX (transaction), pool size $POOL_SIZE"

# --- databases.json per run --------------------------------------------------------------------
# The suite connects with pymysql.connect(**entry): entry 0 is the main connection (root, test1),
# entry 1 the second (test2). ssl={"ca": ...} in every run; the passwords are the run's.
databases_json() { # PORT ROOTPW TEST2PW [AUTOCOMMIT]
  PORT=$1 RPW=$2 TPW=$3 AC=${4:-} CA=$CERTS/ca.pem python3 - <<'PY'
import json, os
ssl = {"ca": os.environ["CA"]}
port = int(os.environ["PORT"])
dbs = [
    {"host": "127.0.0.1", "port": port, "user": "root", "password": os.environ["RPW"],
     "database": "test1", "use_unicode": True, "local_infile": True, "ssl": ssl},
    {"host": "127.0.0.1", "port": port, "user": "test2", "password": os.environ["TPW"],
     "database": "test2", "ssl": ssl},
]
if os.environ["AC"]:
    for d in dbs:
        d["autocommit"] = True
print(json.dumps(dbs, indent=1))
PY
}
# One login per way in first, so a setup that does not work fails here, with its words.
check_login() { # PORT ROOTPW
  PORT=$1 RPW=$2 CA=$CERTS/ca.pem PYTHONPATH=$PM "$VENV/bin/python" - <<'PY'
import os, pymysql
c = pymysql.connect(host="127.0.0.1", port=int(os.environ["PORT"]), user="root",
                    password=os.environ["RPW"], database="test1", ssl={"ca": os.environ["CA"]})
with c.cursor() as cur:
    cur.execute("select 1")
    assert cur.fetchone() == (1,)
c.close()
PY
}
for p in "$M_PORT:$ROOTPASS" "$S_SESSION:$ROOT_TOKEN" "$S_TX:$ROOT_TOKEN"; do
  check_login "${p%%:*}" "${p#*:}" >"$W/check-login.log" 2>&1 \
    || { echo "login as root on port ${p%%:*} failed:" >&2; tail -3 "$W/check-login.log" >&2; exit 1; }
done

# --- the three runs ------------------------------------------------------------------------
metrics() { python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' \
  "http://127.0.0.1:$S_ADMIN/metrics" 2>/dev/null | grep '^sumun_mysql_' || true; }
run_suite() { # NAME PORT ROOTPW TEST2PW
  local name=$1 port=$2 mark t0 L=$W/logs/$1 shared="" plugin=()
  # the -shared runs: autocommit on and PyMySQL's login-time SET NAMES left out (unpinned.py)
  case $name in *-shared) shared=1; plugin=(-p unpinned) ;; esac
  mark=$(wc -l <"$W/audit.jsonl" 2>/dev/null || echo 0)
  mkdir -p "$L"
  # Sumun's MySQL counters before and after (pins are counted there, not in the audit log)
  metrics >"$L/metrics-before.txt"
  root_sql "SHOW GLOBAL STATUS WHERE Variable_name IN ('Aborted_clients', 'Connections')" >"$L/mariadb-before.txt"
  databases_json "$port" "$3" "$4" "$shared" > "$PM/pymysql/tests/databases.json"
  echo "[$(elapsed)] run $name: PyMySQL's tests against 127.0.0.1:$port"
  t0=$(date +%s)
  # A clean environment: the suite reads USER (its socket-auth tests, skipped without a socket).
  (cd "$PM" && env -i PATH="$VENV/bin:/usr/bin:/bin" HOME="$W" USER=root LANG=C.UTF-8 TZ="${TZ:-UTC}" PYTHONPATH="$HERE" PYTHONDONTWRITEBYTECODE=1 \
    "$VENV/bin/python" -m pytest "${plugin[@]}" -p no:cacheprovider -q -rfEs --durations=15 --timeout="$TEST_TIMEOUT" \
      --junitxml="$L/junit.xml" ${ONLY:+-k "$ONLY"} pymysql >"$L/pytest.txt" 2>&1) || true
  (cd "$PM" && env -i PATH="$VENV/bin:/usr/bin:/bin" HOME="$W" LANG=C.UTF-8 \
    "$VENV/bin/python" -m pytest -p no:cacheprovider -q --doctest-modules \
      --junitxml="$L/junit-doctest.xml" pymysql/converters.py >"$L/pytest-doctest.txt" 2>&1) || true
  echo $(( $(date +%s) - t0 )) > "$L/seconds"
  # the KILL checks test_issue_36 does not reach through Sumun (probes.py), same settings
  [ -n "$shared" ] || (cd "$W" && env -i PATH="$VENV/bin:/usr/bin:/bin" HOME="$W" LANG=C.UTF-8 PYTHONPATH="$PM" \
    timeout 180 "$VENV/bin/python" "$HERE/probes.py" "$PM/pymysql/tests/databases.json" "$L/probes.json" >"$L/probes.txt" 2>&1) || true
  metrics >"$L/metrics-after.txt"
  root_sql "SHOW GLOBAL STATUS WHERE Variable_name IN ('Aborted_clients', 'Connections')" >"$L/mariadb-after.txt"
  tail -1 "$L/pytest.txt"
  [ -f "$W/audit.jsonl" ] && tail -n +"$((mark + 1))" "$W/audit.jsonl" >"$L/audit.jsonl" || true
}
REPORT_ARGS=()
for r in $RUNS; do
  case $r in
    direct) run_suite direct "$M_PORT" "$ROOTPASS" "$TEST2PASS" ;;
    session) run_suite session "$S_SESSION" "$ROOT_TOKEN" "$TEST2_TOKEN" ;;
    transaction) run_suite transaction "$S_TX" "$ROOT_TOKEN" "$TEST2_TOKEN" ;;
    direct-shared) run_suite direct-shared "$M_PORT" "$ROOTPASS" "$TEST2PASS" ;;
    transaction-shared) run_suite transaction-shared "$S_TX" "$ROOT_TOKEN" "$TEST2_TOKEN" ;;
    *) echo "unknown run $r" >&2; exit 2 ;;
  esac
  REPORT_ARGS+=("$r=$W/logs/$r")
done
rm -f "$PM/pymysql/tests/databases.json"
alive "$SUMUN_PID" || echo "warning: sumun exited during the runs (see $W/sumun.log)" >&2
# Sumun's log of the runs (tokens never appear in it) for the reasons file.
cp "$W/sumun.log" "$W/logs/sumun.log" 2>/dev/null || true

# --- report --------------------------------------------------------------------------------
COMPAT_ENV="PyMySQL $SRC_VER ${SRC_TAG:+($SRC_TAG, }commit $SRC_REV${SRC_TAG:+)}, Python $PY_VER, pytest $PYTEST_VER, MariaDB $M_VER, Sumun $SUMUN_VER, pool size $POOL_SIZE, $(nproc) cores, Linux $(uname -r)" \
COMPAT_WHEN="$(date -u '+%Y-%m-%d %H:%M UTC'), total $(elapsed)" COMPAT_SRC="$PM" \
  python3 "$HERE/report.py" "$HERE/reasons.tsv" "$OUT" "${REPORT_ARGS[@]}"
echo "[$(elapsed)] wrote $OUT (Sumun binary: $SUMUN_ORIG)"
