"""Persistent app servers: each holds a fixed-size connection pool and serves a steady stream.

Each Locust user is one long-lived app server (a VM or container) with its own
psycopg_pool.ConnectionPool of `pool_size` connections, opened at start and kept. Requests
arrive at `rate_per_server` per second on each server (seeded, open loop) and each runs in its
own greenlet, at most `max_inflight` at once: when every pooled connection is busy a request
waits for a checkout, and that wait is its connect_ms and part of its latency (a checkout
beyond `checkout_timeout` fails as pool_timeout, or as connection_refused when the pool could
not connect meanwhile: a server or pooler that is gone is not a pool that is too small).
Arrivals still waiting for one of the `max_inflight` slots when the load stops are not_started
rows. Backends needed: users x pool_size, all the time; the recommended endpoints are direct,
or the session pooler when IPv4 is needed.

    lab run persistent-server -e direct -e session
    locust -f scenarios/persistent_server.py --headless -u 4 -r 4 -t 60s \
        --host postgresql://postgres:PASSWORD@127.0.0.2:5432/postgres
"""

from lab import users

PARAMS = {
    "rate_per_server": {"default": 50.0, "help": "requests per second arriving at each server"},
    "arrivals": {"default": "poisson", "choices": ["poisson", "even"],
                 "help": "arrival process: seeded Poisson or evenly spaced"},
    "pool_size": {"default": 10, "help": "connections in each server's pool (min = max)"},
    "checkout_timeout": {"default": 10.0, "help": "seconds a request waits for a connection"},
    "max_inflight": {"default": 100, "help": "requests one server handles at once"},
    "queries": {"default": 2, "help": "queries per request (SELECT $1::int + 1)"},
    "sleep_ms": {"default": 0.0, "help": "server-side work per request: one pg_sleep (ms)"},
    "prepare_threshold": {"default": None,
                          "help": "psycopg prepare_threshold: none = off on transaction "
                                  "endpoints, else psycopg's; off; or a number (0 = always)"},
    "connect_timeout": {"default": 10, "help": "connect timeout (s)"},
}
DEFAULT_USERS = 4

P = users.params(PARAMS)


class AppServer(users.AppServerUser):
    params = P

    def handle(self, req: users.Request) -> None:
        for i in range(P["queries"]):
            req.execute("SELECT %s::int + 1", (i,))
        if P["sleep_ms"] > 0:
            req.execute("SELECT pg_sleep(%s)", (P["sleep_ms"] / 1000.0,))
