"""Bench peer: the client library alone, psycopg under gevent (bench/load_vs_pgbench.py).

CLIENTS greenlets in one process (as Locust's users are) run SELECT 1 back to back for
SECONDS, on a held connection each (persistent) or a new one per query (connect), without
Locust or any pooler-lab code. Prints one JSON line: requests/s counted as the lab counts
them (requests that started from 1 s after the start to the end of the last one). The gap
between this and pgbench is the price of Python + psycopg + gevent; between this and Locust,
the price of Locust's task loop and statistics.

    .venv/bin/python bench/psycopg_loop.py URI persistent|connect CLIENTS SECONDS
"""

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
import psycopg  # noqa: E402
import psycopg.waiting  # noqa: E402

WARMUP_S = 1.0
KWARGS = {"autocommit": True, "prepare_threshold": None}


def main() -> None:
    uri, mode, clients, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    assert psycopg.waiting.wait.__name__ != "wait_c", "psycopg would block under gevent"
    t0 = time.perf_counter()
    begin, stop = t0 + WARMUP_S, t0 + seconds
    counted = [0]
    ended = [begin]
    errors = [0]

    def client() -> None:
        conn = psycopg.connect(uri, **KWARGS) if mode == "persistent" else None
        while True:
            start = time.perf_counter()
            if start >= stop:
                break
            try:
                if conn is None:
                    with psycopg.connect(uri, **KWARGS) as c:
                        c.execute("SELECT 1").fetchall()
                else:
                    conn.execute("SELECT 1").fetchall()
            except psycopg.Error:
                errors[0] += 1
                continue
            if start >= begin:
                counted[0] += 1
                ended[0] = max(ended[0], time.perf_counter())
        if conn is not None:
            conn.close()

    gevent.joinall([gevent.spawn(client) for _ in range(clients)], raise_error=True)
    rate = counted[0] / (ended[0] - begin) if ended[0] > begin else 0.0
    print(json.dumps({"rate": rate, "requests": counted[0], "errors": errors[0]}))


if __name__ == "__main__":
    main()
