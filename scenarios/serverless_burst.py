"""Serverless functions in bursts: every invocation opens a connection, runs a few queries, closes.

Open loop: invocations arrive on a seeded schedule (a low base rate with periodic spikes) whether
or not earlier ones have finished, as requests reach a serverless platform. Each Locust user is
one slot of concurrency, so --users is the most invocations running at once; further arrivals
queue (the wait is in their latency), and those still queued when the load stops are
not_started rows. An invocation
connects, runs `queries` short parameterised queries (plus an optional server-side pg_sleep),
keeps its connection for `hold_ms` of other work, and closes. Against `direct` a spike needs one
Postgres backend per running invocation (watch for too_many_clients); through the transaction
pooler it needs one only while a query runs.

    lab run serverless-burst -e direct -e transaction
    locust -f scenarios/serverless_burst.py --headless -u 150 -r 150 -t 60s \
        --host postgresql://postgres:PASSWORD@127.0.0.3:6543/postgres
"""

from lab import users

PARAMS = {
    "base_rate": {"default": 5.0, "help": "invocations per second between spikes"},
    "spike_rate": {"default": 120.0, "help": "invocations per second during a spike"},
    "spike_every": {"default": 20.0, "help": "seconds from one spike start to the next (0: none)"},
    "spike_length": {"default": 5.0, "help": "seconds each spike lasts"},
    "spike_offset": {"default": 5.0, "help": "seconds from the start to the first spike"},
    "arrivals": {"default": "poisson", "choices": ["poisson", "even"],
                 "help": "arrival process: seeded Poisson or evenly spaced"},
    "queries": {"default": 3, "help": "queries per invocation (SELECT $1::int + 1)"},
    "sleep_ms": {"default": 0.0, "help": "server-side work per invocation: one pg_sleep (ms)"},
    "hold_ms": {"default": 500.0,
                "help": "client-side work while the connection stays open (ms)"},
    "prepare_threshold": {"default": None,
                          "help": "psycopg prepare_threshold: none = off on transaction "
                                  "endpoints, else psycopg's; off; or a number (0 = always)"},
    "connect_timeout": {"default": 10, "help": "connect timeout (s)"},
}
DEFAULT_USERS = 150

P = users.params(PARAMS)


class ServerlessFunction(users.InvocationUser):
    params = P

    def invoke(self, req: users.Request) -> None:
        for i in range(P["queries"]):
            req.execute("SELECT %s::int + 1", (i,))
        if P["sleep_ms"] > 0:
            req.execute("SELECT pg_sleep(%s)", (P["sleep_ms"] / 1000.0,))
        req.hold(P["hold_ms"])
