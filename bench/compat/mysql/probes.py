"""Checks beyond the suite, run by run.sh after each run against the same way in:

    python3 probes.py DATABASES.json OUT.json

The suite's `test_issue_36` stops at its first assertion through Sumun (`thread_id()` is the
gateway's id there, docs/mysql.md "Differences"), so what it goes on to check, KILL of another
client's connection, is never reached. These probes do the rest of it, and KILL with the id a
client sees (`thread_id()`, the greeting's id) as a user would, with PyMySQL and the suite's
own connection settings. Each writes passed/failed and what it saw.
"""

import json
import sys
import threading
import time

import pymysql

DBS = json.load(open(sys.argv[1]))


def connect(i=0, **kw):
    p = dict(DBS[i])
    p.update(kw)
    return pymysql.connect(**p)


def gone(conn):
    """True when the connection's next statement fails as a killed connection does."""
    try:
        with conn.cursor() as c:
            c.execute("select 1")
        return False
    except pymysql.err.OperationalError:
        return True
    except pymysql.err.InterfaceError:
        return True


def server_id(conn):
    with conn.cursor() as c:
        c.execute("select connection_id()")
        return c.fetchone()[0]


def processlist_ids(conn):
    with conn.cursor() as c:
        c.execute("show processlist")
        return [r[0] for r in c.fetchall()]


def issue_36_rest():
    """test_issue_36 after its first assertion: root kills test2's connection by the id that
    SHOW PROCESSLIST gives; test2's next statement fails; the id is gone from the list."""
    root, test2 = connect(0), connect(1)
    with test2.cursor() as c:
        c.execute("show processlist")
        kill_id = next(r[0] for r in c.fetchall() if r[7] == "show processlist")
    root.kill(kill_id)
    broken = gone(test2)
    time.sleep(0.1)  # as the suite's test does
    still = kill_id in processlist_ids(root)
    root.close()
    ok = broken and not still
    return ok, f"test2's next statement failed: {broken}; id still listed: {still}"


def kill_own_greeting_id():
    """Two connections of one user: the second KILLs the first by its thread_id()."""
    a, b = connect(0), connect(0)
    tid = a.thread_id()
    try:
        b.kill(tid)
        err = None
    except pymysql.err.MySQLError as e:
        err = e.args
    broken = gone(a)
    b.close()
    return broken and err is None, f"KILL {tid}: {err or 'OK'}; victim's next statement failed: {broken}"


def kill_other_users_greeting_id():
    """root KILLs test2's connection by test2's thread_id() (root has all privileges)."""
    root, test2 = connect(0), connect(1)
    tid = test2.thread_id()
    try:
        root.kill(tid)
        err = None
    except pymysql.err.MySQLError as e:
        err = e.args
    broken = gone(test2)
    root.close()
    if not broken:
        test2.close()
    return broken and err is None, f"KILL {tid}: {err or 'OK'}; victim's next statement failed: {broken}"


def kill_query_greeting_id():
    """KILL QUERY by thread_id() while the victim runs SELECT SLEEP(20): the sleep ends early
    (SLEEP returns 1 when interrupted) and the victim's connection stays usable."""
    a, b = connect(0), connect(0)
    tid = a.thread_id()
    out = {}

    def run():
        t0 = time.monotonic()
        try:
            with a.cursor() as c:
                c.execute("select sleep(20)")
                out["result"] = c.fetchone()[0]
        except pymysql.err.MySQLError as e:
            out["result"] = e.args
        out["seconds"] = time.monotonic() - t0

    t = threading.Thread(target=run)
    t.start()
    time.sleep(1)
    try:
        b.query(f"KILL QUERY {tid:d}")
        err = None
    except pymysql.err.MySQLError as e:
        err = e.args
    t.join(30)
    usable = not gone(a)
    a.close()
    b.close()
    fast = out.get("seconds", 99) < 10
    return (
        err is None and fast and usable,
        f"KILL QUERY {tid}: {err or 'OK'}; sleep answered {out.get('result')!r} after "
        f"{out.get('seconds', 0):.1f} s; connection usable after: {usable}",
    )


def connection_id_matches_processlist():
    """CONNECTION_ID() is a row of SHOW PROCESSLIST (the server's own id)."""
    a = connect(0)
    cid = server_id(a)
    ids = processlist_ids(a)
    a.close()
    return cid in ids, f"CONNECTION_ID() {cid} listed: {cid in ids}"


PROBES = [
    ("test_issue_36, the rest of it (KILL by the SHOW PROCESSLIST id)", issue_36_rest),
    ("KILL by thread_id(), same user", kill_own_greeting_id),
    ("KILL by thread_id(), another user's connection (by root)", kill_other_users_greeting_id),
    ("KILL QUERY by thread_id() during SELECT SLEEP(20)", kill_query_greeting_id),
    ("CONNECTION_ID() is in SHOW PROCESSLIST", connection_id_matches_processlist),
]

results = []
for name, f in PROBES:
    try:
        ok, seen = f()
    except Exception as e:  # a probe that breaks is a failed probe, with its error
        ok, seen = False, f"{type(e).__name__}: {e}"
    results.append({"probe": name, "status": "passed" if ok else "failed", "seen": seen})
    print(f"{'passed' if ok else 'FAILED'}  {name}: {seen}")
json.dump(results, open(sys.argv[2], "w"), indent=1)
