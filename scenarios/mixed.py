"""Serverless bursts and persistent servers at once, each on its recommended endpoint.

The two workloads of serverless-burst and persistent-server share one database: `servers` app
servers with pools of `pool_size` on `persistent_endpoint` (default direct, Supabase's advice
for persistent servers), and invocations on `serverless_endpoint` (default transaction, the
advice for serverless). Every backend counts against one max_connections, so this is the
scenario to watch the backend budget: direct + shared pooler + dedicated pooler backends.
The `phase` column (serverless / persistent) and `endpoint` column tell the rows apart. Routing
needs the URIs of several endpoints (LAB_TARGET_URIS, set by `lab run`); without them (plain
locust, or --target) both workloads go to the one target. --users is the servers plus the
invocation slots.

    lab run mixed --users 100
"""

from lab import users

PARAMS = {
    "servers": {"default": 2, "help": "persistent app servers (the rest of --users are "
                                      "invocation slots)"},
    "persistent_endpoint": {"default": "direct",
                            "choices": ["direct", "session", "transaction", "dedicated"],
                            "help": "where the app servers connect"},
    "serverless_endpoint": {"default": "transaction",
                            "choices": ["direct", "session", "transaction", "dedicated"],
                            "help": "where the invocations connect"},
    "rate_per_server": {"default": 50.0, "help": "requests per second arriving at each server"},
    "pool_size": {"default": 10, "help": "connections in each server's pool (min = max)"},
    "checkout_timeout": {"default": 10.0, "help": "seconds a request waits for a connection"},
    "max_inflight": {"default": 100, "help": "requests one server handles at once"},
    "base_rate": {"default": 5.0, "help": "invocations per second between spikes"},
    "spike_rate": {"default": 120.0, "help": "invocations per second during a spike"},
    "spike_every": {"default": 20.0, "help": "seconds from one spike start to the next (0: none)"},
    "spike_length": {"default": 5.0, "help": "seconds each spike lasts"},
    "spike_offset": {"default": 5.0, "help": "seconds from the start to the first spike"},
    "arrivals": {"default": "poisson", "choices": ["poisson", "even"],
                 "help": "arrival process (both workloads): seeded Poisson or evenly spaced"},
    "queries": {"default": 2, "help": "queries per request or invocation"},
    "hold_ms": {"default": 500.0,
                "help": "invocations: client-side work while the connection stays open (ms)"},
    "prepare_threshold": {"default": None,
                          "help": "psycopg prepare_threshold: none = off on transaction "
                                  "endpoints, else psycopg's; off; or a number (0 = always)"},
    "connect_timeout": {"default": 10, "help": "connect timeout (s)"},
}
DEFAULT_USERS = 100

P = users.params(PARAMS)


class AppServer(users.AppServerUser):
    params = P
    endpoint = P["persistent_endpoint"]
    fixed_count = P["servers"]

    def handle(self, req: users.Request) -> None:
        for i in range(P["queries"]):
            req.execute("SELECT %s::int + 1", (i,))


class ServerlessFunction(users.InvocationUser):
    params = P
    endpoint = P["serverless_endpoint"]

    def invoke(self, req: users.Request) -> None:
        for i in range(P["queries"]):
            req.execute("SELECT %s::int + 1", (i,))
        req.hold(P["hold_ms"])
