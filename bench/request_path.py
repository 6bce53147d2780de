"""The lab's own cost per request, without a network: `LabUser.request` beside the least a
plain Locust user does (perf_counter around the query, `events.request.fire`).

Issue "Scale", a lean load path: the distance between `lab run` and plain Locust is the lab's
per-request work (timing, the sample row, classification, Locust's event). Here both run the
same stand-in connection (a query that returns at once), so what is left is that work alone,
in microseconds per request: the minimum of --rounds runs of --requests each (the machine's
noise only ever adds). Run it beside an older checkout to see a change:

    .venv/bin/python bench/request_path.py [--requests 100000 --rounds 7]
    PYTHONPATH=/path/to/old/checkout .venv/bin/python bench/request_path.py

The stand-in's attributes are plain ones: on a real psycopg connection some cost far more
(measured on 2026-12-01: `cursor.description` 2.4 us, `conn.info.transaction_status` 1.4 us,
`conn.closed` 0.14 us, against 0.02-0.04 us for `cursor.pgresult` and `conn.pgconn.status`), so
the request path reads only the cheap ones; the bench below is the judge.

With real round trips (bench/load_vs_pgbench.py, SELECT 1 through the transaction pooler,
about 80-100 us each) the difference printed here is what the lab costs per request.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ONE_ROUND = r"""
import sys, tempfile, time
from pathlib import Path
import locust  # noqa: F401  (gevent first)
from locust.env import Environment
import lab.users as u

class Info:
    transaction_status = u.psycopg.pq.TransactionStatus.IDLE
    status = u.psycopg.pq.ConnStatus.OK

class Conn:  # a query that returns at once (older checkouts read info and description)
    closed = broken = False
    info = pgconn = Info()
    description = rownumber = pgresult = None
    def execute(self, query, params=None):
        return self
    def fetchall(self):
        return []

CONN = Conn()

class Connector(u._Connector):
    def __init__(self): pass
    def get(self): return CONN
    def put(self, conn, failed): pass
    def close(self): pass

class User(u.SessionUser):
    host = "stand-in"

def work(req):
    req.execute("SELECT 1")

env = Environment(user_classes=[User])
u.PROCESS.environment = env
u.PROCESS.run_dir = Path(tempfile.mkdtemp())
user = User(env)
user.connector = Connector()
n, mode = int(sys.argv[1]), sys.argv[2]
fire = env.events.request.fire
perf = time.perf_counter
began = perf()
if mode == "lab":
    for i in range(n):
        user.request(work)
        if i % 5000 == 4999:  # the flusher's once a second at 5,000 requests/s: rows written
            u.PROCESS.flush()
    u.PROCESS.flush()
else:
    for _ in range(n):
        started = perf()
        CONN.execute("SELECT 1").fetchall()
        fire(request_type="transaction", name="request",
             response_time=(perf() - started) * 1000.0, response_length=0, exception=None,
             context={})
print((perf() - began) / n * 1e6)
"""


def one(mode: str, requests: int) -> float:
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(ONE_ROUND)
    out = subprocess.run([sys.executable, f.name, str(requests), mode], capture_output=True,
                         text=True, check=True)
    Path(f.name).unlink()
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    best = {"lab": float("inf"), "plain": float("inf")}
    started = time.monotonic()
    for _ in range(args.rounds):
        for mode in best:  # alternating: the machine's drift hits both
            best[mode] = min(best[mode], one(mode, args.requests))
    import lab

    print(f"lab.users from {Path(lab.__file__).parent}")
    own = best["lab"] - best["plain"]
    print(f"per request, best of {args.rounds} x {args.requests:,}: lab {best['lab']:.2f} us, "
          f"plain Locust {best['plain']:.2f} us: the lab's own work {own:.2f} us per request "
          f"({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
