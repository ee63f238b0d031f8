"""Writes bench/compat/mysql/RESULTS.md from the runs of run.sh:

    python3 report.py REASONS.tsv OUT.md NAME=DIR...   (the first NAME is the baseline: direct)

Each DIR holds junit.xml and junit-doctest.xml (pytest's JUnit reports), seconds (the run's
wall time) and audit.jsonl (Sumun's audit records of that run). Every test whose status differs
from the baseline in any run is listed with its reason from REASONS.tsv (tab-separated: test id
or a prefix of one ending in `*`, kind, reason); one without a reason is reported as not yet
explained. NOTES.md next to this file is appended as the prose part.
"""

import json
import os
import sys
import xml.etree.ElementTree as ET
from collections import Counter


SRC = os.environ.get("COMPAT_SRC", "")


def test_id(case):
    """`test_basic.py::TestConversion::test_datatypes` from a JUnit testcase."""
    cls = case.get("classname", "")
    name = case.get("name", "")
    parts = cls.split(".")
    # pymysql.tests.test_basic.TestConversion -> test_basic.py::TestConversion; the module is
    # the longest prefix that is a file of the suite (a class may be named like a module).
    for i in range(len(parts), 0, -1):
        mod = "/".join(parts[:i]) + ".py"
        if os.path.isfile(os.path.join(SRC, mod)):
            mod = mod.removeprefix("pymysql/tests/").removeprefix("pymysql/")
            return "::".join([mod, *parts[i:], name])
    return f"{cls}::{name}"


def read_run(arg):
    name, d = arg.split("=", 1)
    results = {}
    for f in ("junit.xml", "junit-doctest.xml"):
        path = os.path.join(d, f)
        if not os.path.exists(path):
            continue
        for case in ET.parse(path).getroot().iter("testcase"):
            status, msg = "passed", ""
            for child in case:
                if child.tag in ("failure", "error"):
                    status, msg = "failed", child.get("message") or (child.text or "")
                    break
                if child.tag == "skipped":
                    status, msg = "skipped", child.get("message") or ""
                    if child.get("type") == "pytest.xfail":
                        msg = "expected to fail (`xfail`)" + (f": {msg}" if msg else "")
            tid = test_id(case)
            prev = results.get(tid)
            # a test reported twice (a failed teardown after a pass) keeps its worst result
            if not prev or status == "failed":
                results[tid] = (status, " ".join(msg.split()))
    seconds = ""
    try:
        with open(os.path.join(d, "seconds")) as f:
            seconds = f.read().strip()
    except OSError:
        pass
    audit = []
    try:
        with open(os.path.join(d, "audit.jsonl")) as f:
            audit = [json.loads(line) for line in f if line.strip()]
    except OSError:
        pass
    metrics = {}
    for which in ("before", "after"):
        try:
            with open(os.path.join(d, f"metrics-{which}.txt")) as f:
                for line in f:
                    k, _, v = line.strip().rpartition(" ")
                    if k:
                        metrics.setdefault(k, [0.0, 0.0])[which == "after"] = float(v)
        except (OSError, ValueError):
            pass
    for which in ("before", "after"):
        try:
            with open(os.path.join(d, f"mariadb-{which}.txt")) as f:
                for line in f:
                    k, _, v = line.strip().partition("\t")
                    if k:
                        metrics.setdefault("mariadb_" + k, [0.0, 0.0])[which == "after"] = float(v)
        except (OSError, ValueError):
            pass
    deltas = {k: int(a - b) for k, (b, a) in metrics.items()}
    probes = []
    try:
        with open(os.path.join(d, "probes.json")) as f:
            probes = json.load(f)
    except (OSError, ValueError):
        pass
    return {
        "name": name,
        "results": results,
        "seconds": seconds,
        "audit": audit,
        "metrics": deltas,
        "probes": probes,
    }


def main():
    reasons_path, out_path, *run_args = sys.argv[1:]
    runs = [read_run(a) for a in run_args]
    reasons = []
    with open(reasons_path) as f:
        for line in f:
            if not line.strip() or line.startswith("#"):
                continue
            tid, kind, reason = (line.rstrip("\n").split("\t") + ["", ""])[:3]
            reasons.append((tid, kind, reason))

    def reason_for(tid, scope="shared"):
        # A line whose test id starts with "main:" applies to the direct/session/transaction
        # table only (where a test can fail for another reason than in the -shared runs); the
        # first matching line wins, so put such lines before the unscoped one.
        for pat, kind, reason in reasons:
            if pat.startswith("main:"):
                if scope != "main":
                    continue
                pat = pat[len("main:"):]
            if pat == tid or (pat.endswith("*") and tid.startswith(pat[:-1])):
                return kind, reason
        return "**not yet explained**", ""

    def esc(s):
        return s.replace("|", "\\|").replace("\n", " ")

    status = lambda run, t: run["results"].get(t, ("missing", ""))[0]  # noqa: E731
    by_name = {r["name"]: r for r in runs}
    # direct is the baseline of every run; direct-shared of the *-shared runs
    def base_of(run):
        if run["name"].endswith("-shared") and "direct-shared" in by_name:
            return by_name["direct-shared"]
        return by_name.get("direct", runs[0])

    base = by_name.get("direct", runs[0])
    main_runs = [r for r in runs if not r["name"].endswith("-shared")]
    shared_runs = [r for r in runs if r["name"].endswith("-shared")]

    def differing(group):
        b = base_of(group[0])
        ids = sorted({t for r in group for t in r["results"]})
        return [t for t in ids if any(status(r, t) != status(b, t) for r in group if r is not b)]

    explained = set()

    def diff_table(group):
        b = base_of(group[0])
        scope = "shared" if b["name"] == "direct-shared" else "main"
        diffs = differing(group)
        if not diffs:
            md.append("None.")
            return diffs
        md.append(f"| test | {' | '.join(r['name'] for r in group)} | kind | reason |")
        md.append("|---|" + "---|" * len(group) + "---|---|")
        for t in diffs:
            kind, reason = reason_for(t, scope)
            if t in explained and reason_for(t, "main") == reason_for(t, "shared"):
                reason = "As in the table above."
            explained.add(t)
            marks = []
            errs = []
            for r in group:
                s, msg = r["results"].get(t, ("missing", ""))
                marks.append(f"**{s.upper()}**" if s != status(b, t) else s)
                if s == "failed" and msg:
                    errs.append(f"{r['name']}: `{msg[:200]}`")
            text = " ".join(x for x in [reason, f"(error {'; '.join(errs)})" if errs else ""] if x)
            md.append(f"| `{esc(t)}` | {' | '.join(marks)} | {kind} | {esc(text)} |")
        return diffs

    md = ["# PyMySQL's own test suite: direct vs through Sumun (MySQL front end)", ""]
    md.append(f"Run: `PYMYSQL_SRC=... bench/compat/mysql/run.sh` on {os.environ.get('COMPAT_WHEN', '?')}.")
    md.append(os.environ.get("COMPAT_ENV", "") + ".")
    md.append("")
    md.append(
        "Suite: `pytest pymysql` (every `pymysql/tests/**/test_*.py`: the driver's tests and the bundled"
    )
    md.append(
        "MySQLdb DB-API tests) and `pytest --doctest-modules pymysql/converters.py`, as upstream CI runs"
    )
    md.append(
        "them against MariaDB; 60 s at most per test. Every run connects over TCP with TLS (`ssl = {\"ca\": ...}`"
    )
    md.append(
        "in the suite's own `databases.json`): directly with MariaDB's passwords, through Sumun with a"
    )
    md.append("Sumun token per user sent as `mysql_clear_password` after the gateway's auth switch.")
    md.append(
        "`direct`, `session`, `transaction` run the suite as it is; the `-shared` runs are explained"
    )
    md.append("under [Transaction mode with shared servers](#transaction-mode-with-shared-servers).")
    md.append("")
    md.append("## Counts")
    md.append("")
    md.append(
        "MariaDB connections: the server's `Connections` (and `Aborted_clients`, connections that ended"
    )
    md.append("without `COM_QUIT`) over the run: the suite's own logins directly, the gateway's through Sumun.")
    md.append("")
    md.append(
        "| run | tests | passed | failed | skipped | differ from | time | MariaDB connections (aborted) |"
    )
    md.append("|---|---|---|---|---|---|---|---|")
    for run in runs:
        c = Counter(s for s, _ in run["results"].values())
        b = base_of(run)
        n = sum(1 for t in set(run["results"]) | set(b["results"]) if status(run, t) != status(b, t))
        differ = "" if run is b else f"{b['name']}: {n}"
        md.append(
            f"| {run['name']} | {len(run['results'])} | {c['passed']} | {c['failed']} | {c['skipped']} "
            f"| {differ} | {run['seconds']} s | {run['metrics'].get('mariadb_Connections', 1) - 1} "
            f"({run['metrics'].get('mariadb_Aborted_clients', '?')}) |"
        )
    md.append("")
    md.append("## Every difference from the direct run")
    md.append("")
    diffs = diff_table(main_runs)
    md.append("")
    if shared_runs:
        md.append("## Transaction mode with shared servers")
        md.append("")
        md.append(
            "PyMySQL sends `SET NAMES utf8mb4` after every login (and `SET AUTOCOMMIT = 0` unless autocommit is"
        )
        md.append(
            "on). Before commit a6c471b Sumun pinned a transaction-mode client that did so to its server, so every"
        )
        md.append(
            "stock PyMySQL client was pinned; since then both settings are carried to whichever server the client"
        )
        md.append(
            "lands on, and pins come from the tests' own statements only (see the pinning table). The `-shared`"
        )
        md.append(
            "runs still leave that `SET NAMES` out (`unpinned.py`, a pytest plugin of ours: the login packet"
        )
        md.append(
            "already asks for the same character set and collation) and give `autocommit = true` in databases.json,"
        )
        md.append(
            "as the runs before a6c471b did, to compare. `direct-shared` is the same suite with the same two changes,"
        )
        md.append("directly; `transaction-shared` is compared with it.")
        md.append("")
        diff_table([by_name.get("direct-shared", base)] + [r for r in shared_runs if r["name"] != "direct-shared"])
        md.append("")
        if "direct-shared" in by_name:
            ds = by_name["direct-shared"]
            own = [t for t in sorted(ds["results"]) if status(ds, t) != status(base, t)]
            if own:
                md.append(
                    "Autocommit on changes these results directly already (the tests expect PyMySQL's default,"
                )
                md.append("autocommit off), in every `-shared` run alike:")
                md.append("")
                md.append("| test | direct | direct-shared | reason |")
                md.append("|---|---|---|---|")
                for t in own:
                    md.append(
                        f"| `{esc(t)}` | {status(base, t)} | {status(ds, t)} | {esc(reason_for(t)[1])} |"
                    )
                md.append("")
    ids = sorted({t for r in main_runs for t in r["results"]})
    always = [t for t in ids if status(base, t) == "failed" and t not in diffs]
    md.append("## Failing in every run, directly too")
    md.append("")
    if not always:
        md.append("None.")
    else:
        md.append("| test | error (direct) | reason |")
        md.append("|---|---|---|")
        for t in always:
            md.append(
                f"| `{esc(t)}` | `{esc(base['results'][t][1][:160])}` | {esc(reason_for(t)[1])} |"
            )
    md.append("")
    skipped = Counter(
        msg for t, (s, msg) in base["results"].items() if s == "skipped" and t not in diffs
    )
    md.append("## Skipped in every run")
    md.append("")
    md.append("By the suite itself (the reason it gives), the same in every run:")
    md.append("")
    md.append("| tests | skip reason |")
    md.append("|---|---|")
    for msg, n in skipped.most_common():
        md.append(f"| {n} | {esc(msg[:200])} |")
    md.append("")
    probe_runs = [r for r in main_runs if r["probes"]]
    if probe_runs:
        md.append("## Beyond the suite: KILL")
        md.append("")
        md.append(
            "`test_issue_36` stops at its first assertion through Sumun, so the KILL it goes on to test is never"
        )
        md.append(
            "reached. `probes.py` does the rest of it, and KILL with the id a client sees (`thread_id()`, the"
        )
        md.append(
            "victim idle between statements unless the probe says otherwise),"
        )
        md.append(
            "after each of these runs with the same settings. `seen`: what the direct run saw, and each run that"
        )
        md.append("differs from it.")
        md.append("")
        md.append(f"| probe | {' | '.join(r['name'] for r in probe_runs)} | seen |")
        md.append("|---|" + "---|" * len(probe_runs) + "---|")
        names = [p["probe"] for p in probe_runs[0]["probes"]]
        for name in names:
            got = {r["name"]: next((p for p in r["probes"] if p["probe"] == name), None) for r in probe_runs}
            b = got.get(base["name"])
            marks, seen = [], []
            for r in probe_runs:
                p = got[r["name"]]
                st = p["status"] if p else "missing"
                marks.append(f"**{st.upper()}**" if b and st != b["status"] else st)
                if p and (r is base or st != (b or {}).get("status")):
                    seen.append(f"{r['name']}: {p['seen']}")
            md.append(f"| {esc(name)} | {' | '.join(marks)} | {esc('; '.join(seen))} |")
        md.append("")
    md.append("## Pinning and session ends seen by Sumun")
    md.append("")
    md.append(
        "Per run through Sumun: client sessions and how they ended (the audit log's `session.end`"
    )
    md.append(
        "records), and from `/metrics` (difference over the run) logins, statements and the transaction-mode"
    )
    md.append("clients pinned to their server, by reason (`sumun_mysql_pinned_clients_total`).")
    md.append("")
    md.append("| run | sessions | ends | logins | statements | pinned (by reason) |")
    md.append("|---|---|---|---|---|---|")
    for run in [r for r in runs if not r["name"].startswith("direct")]:
        ends = [e for e in run["audit"] if e.get("event") == "session.end"]
        c = Counter(e.get("end") for e in ends if e.get("end"))
        end_text = ", ".join(f"{k} {v}" for k, v in c.most_common()) or "none"
        m = run["metrics"]
        pins = sorted(
            ((k.split('reason="')[1].rstrip('"}'), v) for k, v in m.items() if k.startswith("sumun_mysql_pinned_clients_total{") and v),
            key=lambda kv: -kv[1],
        )
        pin_text = ", ".join(f"{k} {v}" for k, v in pins) or "none"
        md.append(
            f"| {run['name']} | {len(ends)} | {end_text} | {m.get('sumun_mysql_logins_total', '?')} "
            f"| {m.get('sumun_mysql_queries_total', '?')} | {pin_text} |"
        )
    md.append("")
    notes = os.path.join(os.path.dirname(os.path.abspath(__file__)), "NOTES.md")
    if os.path.exists(notes):
        with open(notes) as f:
            md.append(f.read())
    with open(out_path, "w") as f:
        f.write("\n".join(md).rstrip("\n") + "\n")
    sdiffs = set(differing([by_name.get("direct-shared", base)] + shared_runs)) if shared_runs else set()
    alld = set(diffs) | sdiffs
    unexplained = sum(
        1
        for t in alld
        if (t in diffs and reason_for(t, "main")[0] == "**not yet explained**")
        or (t in sdiffs and reason_for(t, "shared")[0] == "**not yet explained**")
    )
    diffs = sorted(alld)
    print(f"{len(diffs)} differences from {base['name']}, {unexplained} not yet explained")


if __name__ == "__main__":
    main()
