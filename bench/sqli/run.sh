#!/usr/bin/env bash
# The SQL-injection detector's numbers (issue 21): false positives on the benign corpus,
# detection rate on sqlmap's payloads, inspect() cost per statement next to the lexer passes
# the gateway already runs per query, and libinjection on the same inputs for comparison.
#
# Needs the Debian packages sqlmap, sysbench and postgresql-client (pgbench), python3-venv,
# and PyPI for libinjection-python. Usage: bench/sqli/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

[ -d /usr/share/sqlmap/data/xml/payloads ] || { echo "install sqlmap: apt-get install -y sqlmap" >&2; exit 1; }
[ -f /usr/share/sysbench/oltp_common.lua ] || { echo "install sysbench: apt-get install -y sysbench" >&2; exit 1; }
command -v pgbench >/dev/null || { echo "install pgbench: apt-get install -y postgresql-client" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== sumun-sqli (cargo run --release -p sumun-sqli --example sqli_bench)"
cargo run --release -q -p sumun-sqli --example sqli_bench -- --dump "$work"

echo
echo "== libinjection (PyPI libinjection-python 1.1.6) on the same inputs"
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q 'libinjection-python==1.1.6'
"$work/venv/bin/python" bench/sqli/peer_libinjection.py "$work"
