"""Bench peer: plain Locust with psycopg, no pooler-lab code (bench/load_vs_pgbench.py).

The least a Locust user can do for SELECT 1: time it with perf_counter and fire
events.request. PLAIN_URI is the database; PLAIN_MODE=persistent keeps one connection per
user, PLAIN_MODE=connect opens and closes one per request; PLAIN_USER_RATE paces each user
(constant_throughput) instead of back to back.

    PLAIN_URI=postgresql://... locust -f bench/locust_plain.py --headless -u 8 -t 10s
"""

import os
import time

import locust  # noqa: F401  (first: gevent patches the process before psycopg is imported)
import psycopg
from locust import User, constant, constant_throughput, events, task

URI = os.environ["PLAIN_URI"]
# bench/load_vs_pgbench.py's CPU accounting: (time, requests so far) four times a second
COUNTS = os.environ.get("PLAIN_COUNTS")
DONE = [0]
MODE = os.environ.get("PLAIN_MODE", "persistent")
RATE = float(os.environ.get("PLAIN_USER_RATE") or 0)  # requests/s of each user; 0: no wait
KWARGS = {"autocommit": True, "prepare_threshold": None}


class Plain(User):
    wait_time = constant_throughput(RATE) if RATE > 0 else constant(0)

    def on_start(self) -> None:
        self.conn = psycopg.connect(URI, **KWARGS) if MODE == "persistent" else None

    @task
    def select1(self) -> None:
        started = time.perf_counter()
        error = None
        try:
            if self.conn is None:
                with psycopg.connect(URI, **KWARGS) as conn:
                    conn.execute("SELECT 1").fetchall()
            else:
                self.conn.execute("SELECT 1").fetchall()
        except Exception as exc:
            error = exc
        events.request.fire(request_type="plain", name="select1",
                            response_time=(time.perf_counter() - started) * 1000.0,
                            response_length=0, exception=error, context={})
        DONE[0] += 1


@events.test_start.add_listener
def _count(environment, **_kwargs) -> None:
    if not COUNTS:
        return
    import gevent

    def loop() -> None:
        with open(COUNTS, "w") as out:
            while True:
                out.write(f"{time.time()} {DONE[0]}\n")
                out.flush()
                gevent.sleep(0.25)

    gevent.spawn(loop)
