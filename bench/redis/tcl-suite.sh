#!/usr/bin/env bash
# Redis's own Tcl test suite (tests/ of the redis source at the installed server's version) in
# external-server mode, once directly against a private redis-server and once through Sumun's
# redis listener (TLS, a token login on every connection, multiplexed), issue 19. Writes
# bench/redis/TCL-SUITE.md: per unit, the tests that passed and failed each way, and the tests
# whose outcome differs.
#
#   REDIS_SRC=/path/to/redis-7.0.15 bench/redis/tcl-suite.sh
#   UNITS="unit/type/string unit/multi" bench/redis/tcl-suite.sh
#
# The suite's client speaks plain text and sends no AUTH, so the gateway path runs through a
# small local tunnel (python3) that opens TLS to the listener and logs in with `AUTH root
# $TOKEN` first on each connection; everything after that is the suite's own bytes. The
# gateway user `root` has `redis_acl = "+@all ~* &*"` (the suite runs FLUSHALL, DEBUG, CONFIG
# SET, scripts...). LOGS=dir keeps every unit's log there. Getting the source: `apt-get source redis` with a deb-src line (an
# apt-get run with its own source list and lists directory is enough; see the report).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
HERE=$ROOT/bench/redis
REDIS_SRC=${REDIS_SRC:?set REDIS_SRC to the redis source tree matching redis-server --version}
SUMUN=${SUMUN:-$ROOT/target/release/sumun}
OUT=${OUT:-$HERE/TCL-SUITE.md}
UNIT_TIMEOUT=${UNIT_TIMEOUT:-300}
UNITS=${UNITS:-"unit/type/string unit/type/incr unit/type/list unit/type/hash unit/type/set unit/type/zset unit/type/stream unit/type/stream-cgroups unit/keyspace unit/expire unit/scan unit/sort unit/bitops unit/bitfield unit/hyperloglog unit/geo unit/dump unit/multi unit/pubsub unit/pubsubshard unit/protocol unit/info-command unit/scripting unit/functions unit/tracking unit/introspection-2 unit/quit unit/auth unit/acl unit/other"}

W=$(mktemp -d /tmp/sumun-tclsuite.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 0.3
  if [ -n "${LOGS:-}" ]; then mkdir -p "$LOGS" && cp "$W"/*.log "$LOGS"/ 2>/dev/null || true; fi
  rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 300); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

# The suite runs src/redis-server, src/redis-cli, src/redis-benchmark for some tests.
mkdir -p "$REDIS_SRC/src"
for b in redis-server redis-cli redis-benchmark; do
  [ -e "$REDIS_SRC/src/$b" ] || ln -s "$(command -v $b)" "$REDIS_SRC/src/$b"
done

"$SUMUN" cert dev --out "$W/certs" >/dev/null
RPASS=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
printf '%s\n' "$RPASS" > "$W/rpass.txt"
R_PORT=$(free_port)
# The default user has the password too: the direct run sends no AUTH, so for it the server
# is started a second time without one (see below).
cat > "$W/redis.conf" <<CONF
bind 127.0.0.1
port $R_PORT
save ""
appendonly no
dir $W
user app on >$RPASS ~* &* +@all
enable-debug-command yes
CONF
redis-server "$W/redis.conf" > "$W/redis.log" 2>&1 & pids+=($!)
wait_port "$R_PORT"

S_PORT=$(free_port)
cat > "$W/sumun.toml" <<TOML
[gateway]
name = "tcl"
workers = 1
[vault]
dir = "$W/vault"
key_file = "$W/vault/master.key"
[tls.default]
cert = "$W/certs/server.pem"
key = "$W/certs/server-key.pem"
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
pool = { size = 4 }
[[target_groups]]
name = "redis"
targets = [{ address = "127.0.0.1:$R_PORT" }]
[[users]]
name = "root"
backend_credential = "redis/app"
redis_acl = "+@all ~* &*"
TOML
"$SUMUN" vault init --config "$W/sumun.toml" > /dev/null 2>&1
"$SUMUN" secrets put redis/app --value-file "$W/rpass.txt" --kind redis --address "127.0.0.1:$R_PORT" --username app --config "$W/sumun.toml" > /dev/null 2>&1
TOKEN=$("$SUMUN" token --user root --ttl 1h --config "$W/sumun.toml" 2>/dev/null)
SUMUN_LOG=warn "$SUMUN" serve --config "$W/sumun.toml" > "$W/sumun.log" 2>&1 & pids+=($!)
wait_port "$S_PORT"

# The AUTH-injecting tunnel: plain text in, TLS + `AUTH root TOKEN` out.
T_PORT=$(free_port)
cat > "$W/tunnel.py" <<'PY'
import asyncio, ssl, sys
listen, target, ca, token = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], open(sys.argv[4]).read().strip()
ctx = ssl.create_default_context(cafile=ca)
async def pipe(r, w):
    try:
        while True:
            b = await r.read(65536)
            if not b:
                break
            w.write(b)
            await w.drain()
    except Exception:
        pass
    finally:
        try:
            w.close()
        except Exception:
            pass
async def handle(cr, cw):
    try:
        sr, sw = await asyncio.open_connection("127.0.0.1", target, ssl=ctx, server_hostname="localhost")
    except Exception:
        cw.close()
        return
    sw.write(b"AUTH root " + token.encode() + b"\r\n")
    await sw.drain()
    ok = await sr.readexactly(5)
    if ok != b"+OK\r\n":
        cw.close(); sw.close(); return
    await asyncio.gather(pipe(cr, sw), pipe(sr, cw))
async def main():
    srv = await asyncio.start_server(handle, "127.0.0.1", listen)
    async with srv:
        await srv.serve_forever()
asyncio.run(main())
PY
printf '%s\n' "$TOKEN" > "$W/token.txt"
python3 "$W/tunnel.py" "$T_PORT" "$S_PORT" "$W/certs/ca.pem" "$W/token.txt" > "$W/tunnel.log" 2>&1 & pids+=($!)
wait_port "$T_PORT"

# A second server for the direct run (no password: the suite sends no AUTH).
D_PORT=$(free_port)
cat > "$W/direct.conf" <<CONF
bind 127.0.0.1
port $D_PORT
save ""
appendonly no
dir $W
enable-debug-command yes
CONF
redis-server "$W/direct.conf" > "$W/direct.log" 2>&1 & pids+=($!)
wait_port "$D_PORT"

run_units() { # LABEL PORT
  local label=$1 port=$2 u log
  for u in $UNITS; do
    log="$W/$label-$(echo "$u" | tr / _).log"
    (cd "$REDIS_SRC" && timeout "$UNIT_TIMEOUT" ./runtest --host 127.0.0.1 --port "$port" --single "$u" --tags -needs:repl --clients 1 > "$log" 2>&1) || true
    sed -i 's/\x1b\[[0-9;]*m//g' "$log"
    echo "$label $u: $(grep -c '^\[ok\]' "$log" || true) ok, $(grep -c '^\[err\]\|^\[exception\]' "$log" || true) err"
  done
}
STARTED=$(date -u '+%Y-%m-%d %H:%M UTC')
run_units direct "$D_PORT"
run_units sumun "$T_PORT"

{
  echo "# Redis's Tcl test suite through Sumun"
  echo
  echo "Run: \`REDIS_SRC=... bench/redis/tcl-suite.sh\` started $STARTED; redis $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/') source (\`apt-get source redis\`, $(basename "$REDIS_SRC")), tclsh $(echo 'puts [info patchlevel]' | tclsh)."
  echo "Each unit runs with \`./runtest --host 127.0.0.1 --port P --single UNIT --tags -needs:repl --clients 1\` (external-server mode:"
  echo "tests that need to start servers of their own are skipped by the suite itself), once against a redis-server"
  echo "directly and once through a \`redis\` listener (TLS, \`AUTH root TOKEN\` on every connection via a local tunnel,"
  echo "\`pool = { size = 4 }\`, multiplexed), to a redis-server logged in to as an ACL user from the vault."
  echo
  echo "| unit | direct ok | direct err | Sumun ok | Sumun err |"
  echo "|---|---|---|---|---|"
  for u in $UNITS; do
    d="$W/direct-$(echo "$u" | tr / _).log"; s="$W/sumun-$(echo "$u" | tr / _).log"
    echo "| $u | $(grep -c '^\[ok\]' "$d" || true) | $(grep -c '^\[err\]\|^\[exception\]' "$d" || true) | $(grep -c '^\[ok\]' "$s" || true) | $(grep -c '^\[err\]\|^\[exception\]' "$s" || true) |"
  done
  echo
  echo "## Tests whose outcome differs"
  echo
  for u in $UNITS; do
    d="$W/direct-$(echo "$u" | tr / _).log"; s="$W/sumun-$(echo "$u" | tr / _).log"
    diffs=$(diff <(grep '^\[ok\]\|^\[err\]\|^\[exception\]' "$d" | sed 's/ (.*ms)$//' | sort) \
                 <(grep '^\[ok\]\|^\[err\]\|^\[exception\]' "$s" | sed 's/ (.*ms)$//' | sort) | grep '^[<>]' || true)
    if [ -n "$diffs" ]; then
      echo "### $u"; echo; echo '```'
      echo "$diffs" | sed 's/^</direct:/; s/^>/sumun: /' | head -40
      grep -A6 '^\[err\]\|^\[exception\]' "$s" | head -60
      echo '```'; echo
    fi
  done
  [ -f "$HERE/TCL-NOTES.md" ] && cat "$HERE/TCL-NOTES.md"
} > "$OUT"
echo "wrote $OUT"
