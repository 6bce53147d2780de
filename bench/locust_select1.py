"""Bench only: SELECT 1 with the lab's users, the shapes pgbench runs (bench/load_vs_pgbench.py).

`query` replaces SELECT 1 (the rate test also runs a query that takes 2 ms on the server).

mode=persistent  closed loop, one held connection per user, SELECT 1 back to back (pgbench -S),
                 or `user_rate` requests/s each (bench/lean_path.py --rate)
mode=connect     closed loop, a new connection per request, closed after it (pgbench -C)
mode=rate        open loop at `rate` requests/s over `servers` app servers with pools of
                 `pool_size` held connections, Poisson arrivals, latency from the intended
                 start (pgbench -R: one Poisson schedule per thread, shared by its clients)

    lab run bench/locust_select1.py --users 8 -P mode=persistent
    lab run bench/locust_select1.py --users 2 -P mode=rate -P rate=200 -P pool_size=4 -P servers=2
"""

import os
import time

from locust import constant_throughput, events

from lab import users

PARAMS = {
    "query": {"default": "SELECT 1", "help": "the one query of every request"},
    "mode": {"default": "persistent", "choices": ["persistent", "connect", "rate"],
             "help": "persistent, connect (per request) or rate (open loop)"},
    "rate": {"default": 200.0, "help": "mode=rate: requests per second over all users"},
    "pool_size": {"default": 4, "help": "mode=rate: held connections per user"},
    "servers": {"default": 2, "help": "mode=rate: --users, to share out the rate"},
    "user_rate": {"default": 0.0, "help": "mode=persistent: requests/s of each user "
                  "(Locust's constant_throughput; 0: back to back)"},
    "prepare_threshold": {"default": None, "help": "psycopg prepare_threshold (see users)"},
    "connect_timeout": {"default": 10, "help": "connect timeout (s)"},
}
DEFAULT_USERS = 8

P = users.params(PARAMS)


def select1(req: users.Request) -> None:
    req.execute(P["query"])


if P["mode"] == "persistent":

    class Persistent(users.SessionUser):
        params = P
        phase = "persistent"
        if float(P["user_rate"]) > 0:
            wait_time = constant_throughput(float(P["user_rate"]))

        @users.task
        def select(self) -> None:
            self.request(select1, name="select1")

elif P["mode"] == "connect":

    class ConnectPerRequest(users.SessionUser):
        params = P
        phase = "serverless"

        def make_connector(self, endpoint, uri, app_name):
            return users.PerRequest(uri, self.connect_kwargs(endpoint, uri, app_name))

        @users.task
        def select(self) -> None:
            self.request(select1, name="select1")

else:

    class FixedRate(users.AppServerUser):
        params = {**P, "rate_per_server": P["rate"] / max(1, P["servers"]),
                  "arrivals": "poisson"}
        request_name = "select1"

        def handle(self, req: users.Request) -> None:
            select1(req)


# bench/lean_instructions.py: (time, requests so far) four times a second, as
# bench/locust_plain.py's PLAIN_COUNTS
COUNTS = os.environ.get("BENCH_COUNTS")
if COUNTS:

    @events.test_start.add_listener
    def _count(environment, **_kwargs) -> None:
        import gevent

        from lab import samples

        stats = environment.stats.total

        def loop() -> None:
            # Locust's statistics get successes a chunk at a time (lab.locust_stats): the
            # ones still in the writer's buffer are counted too, so the count is exact
            with open(COUNTS, "w") as out:
                while True:
                    writer = users.PROCESS.writer
                    pending = len(writer.oks) // samples.OK_STRUCT.size if writer else 0
                    out.write(f"{time.time()} {stats.num_requests + pending}\n")
                    out.flush()
                    gevent.sleep(0.25)

        gevent.spawn(loop)
