#!/usr/bin/env python3
"""Runs the SQL files given on the command line with DuckDB over a flow log (default format,
space separated, '-' for missing values), as `sumun flows query` does, and prints for each:
name, wall seconds, CPU seconds (all threads), rows, then the rows as CSV to the file named by --out (if given).

The `flows` view has AWS's Athena column names plus `dt` ('YYYY/MM/DD' of start);
`vpc_flow_logs` adds the names of seed 000's table. `from_unixtime` and `date_format` are
macros over DuckDB's own functions, and `current_date` is replaced by the fixed date given
with --now (what `sumun flows query --now` does), so both engines run the same text.
"""
import argparse
import csv
import sys
import time

import duckdb

p = argparse.ArgumentParser()
p.add_argument("log")
p.add_argument("queries", nargs="+")
p.add_argument("--now", default="2024-01-02")
p.add_argument("--threads", type=int, default=0)
p.add_argument("--out")
a = p.parse_args()

con = duckdb.connect()
if a.threads:
    con.execute(f"SET threads = {a.threads}")
cols = {
    "version": "INTEGER", "account_id": "VARCHAR", "interface_id": "VARCHAR",
    "srcaddr": "VARCHAR", "dstaddr": "VARCHAR", "srcport": "INTEGER", "dstport": "INTEGER",
    "protocol": "INTEGER", "packets": "BIGINT", "bytes": "BIGINT", "start": "BIGINT",
    "end": "BIGINT", "action": "VARCHAR", "log_status": "VARCHAR",
}
spec = "{" + ", ".join(f"'{k}': '{v}'" for k, v in cols.items()) + "}"
con.execute("CREATE MACRO from_unixtime(x) AS make_timestamp(CAST(x AS BIGINT) * 1000000)")
con.execute("CREATE MACRO date_format(d, f) AS strftime(d, f)")
con.execute(
    f"""CREATE VIEW flows AS SELECT *, strftime(make_timestamp("start" * 1000000), '%Y/%m/%d') AS dt
    FROM read_csv('{a.log}', delim=' ', header=false, nullstr='-', auto_detect=false, columns={spec})"""
)
con.execute(
    """CREATE VIEW vpc_flow_logs AS SELECT *, srcaddr AS sourceaddress,
    dstaddr AS destinationaddress, srcport AS sourceport, dstport AS destinationport,
    packets AS numpackets, bytes AS numbytes, "start" AS starttime, "end" AS endtime,
    log_status AS logstatus, account_id AS account, interface_id AS interfaceid FROM flows"""
)
out = open(a.out, "w", newline="") if a.out else None
w = csv.writer(out) if out else None
for path in a.queries:
    sql = open(path).read().replace("current_date", f"DATE '{a.now}'")
    t = time.perf_counter()
    c = time.process_time()
    rows = con.execute(sql).fetchall()
    dt = time.perf_counter() - t
    dc = time.process_time() - c
    print(f"{path}\t{dt:.3f}\t{dc:.3f}\t{len(rows)}", flush=True)
    if w:
        w.writerow([f"# {path}"])
        w.writerows(rows)
