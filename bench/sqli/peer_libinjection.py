#!/usr/bin/env python3
"""libinjection (the libinjection-python wrapper from PyPI) on the same inputs as the
detector: sqlmap's inputs and the benign literal values that sqli_bench dumped as JSON lines.

libinjection judges one input value (not a statement), so it is compared with
sumun_sqli::inspect_param, the detector's entry point for bound values.
"""
import json
import sys
import time

import libinjection


def load(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def main(dump):
    attacks = load(f"{dump}/sqlmap.jsonl")
    benign = load(f"{dump}/benign-values.jsonl")
    hit = sum(1 for s in attacks if libinjection.is_sql_injection(s)["is_sqli"])
    fps = [s for s in benign if libinjection.is_sql_injection(s)["is_sqli"]]
    print(f"libinjection on {len(attacks)} sqlmap inputs: {hit} detected ({100.0 * hit / len(attacks):.2f}%)")
    print(f"libinjection on {len(benign)} benign values: {len(fps)} false positives")
    distinct = sorted(set(fps))
    print(f"  distinct values among them: {len(distinct)}")
    for s in distinct[:10]:
        print(f"  FP: {s[:100]!r}")
    sample = "48213"
    n = 200_000
    t = time.perf_counter()
    for _ in range(n):
        libinjection.is_sql_injection(sample)
    ns = (time.perf_counter() - t) / n * 1e9
    print(f"libinjection per call on a short value, through Python: {ns:.0f} ns")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/sqli-dump")
