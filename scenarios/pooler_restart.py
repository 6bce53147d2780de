"""A pooler restart under load: serverless invocations and app servers on the same endpoint.

The workshop's fault run. On each endpoint in turn, `servers` persistent app servers (each a
psycopg_pool of `pool_size` connections, as persistent-server) and serverless invocations (a
new connection each, as serverless-burst, at a steady `base_rate`) load the same endpoint,
and the shared pooler's host is restarted 10 s after the load starts (FAULTS below; --fault
replaces it). The report's fault table then shows, per endpoint and workload, what failed
during and after the restart and how long each took to recover: an app server's pool
reconnects by itself, a serverless function fails once per invocation until the pooler is
back. Direct and the dedicated pooler do not go through the shared pooler's host: their rows
show what a restart there costs them (nothing).

    lab run pooler-restart -e all --duration 25s
    lab run pooler-restart -e transaction --fault 10s:pooler:kill:3s
"""

from lab import users

PARAMS = {
    "servers": {"default": 2, "help": "persistent app servers (the rest of --users are "
                                      "invocation slots)"},
    "rate_per_server": {"default": 20.0, "help": "requests per second arriving at each server"},
    "pool_size": {"default": 5, "help": "connections in each server's pool (min = max)"},
    "checkout_timeout": {"default": 5.0, "help": "seconds a request waits for a connection"},
    "max_inflight": {"default": 50, "help": "requests one server handles at once"},
    "base_rate": {"default": 10.0, "help": "invocations per second"},
    "spike_rate": {"default": 0.0, "help": "invocations per second during a spike (0: none)"},
    "spike_every": {"default": 0.0, "help": "seconds from one spike start to the next (0: none)"},
    "spike_length": {"default": 0.0, "help": "seconds each spike lasts"},
    "spike_offset": {"default": 0.0, "help": "seconds from the start to the first spike"},
    "arrivals": {"default": "poisson", "choices": ["poisson", "even"],
                 "help": "arrival process (both workloads): seeded Poisson or evenly spaced"},
    "queries": {"default": 1, "help": "queries per request or invocation"},
    "hold_ms": {"default": 20.0,
                "help": "invocations: client-side work while the connection stays open (ms)"},
    "prepare_threshold": {"default": None,
                          "help": "psycopg prepare_threshold: none = off on transaction "
                                  "endpoints, else psycopg's; off; or a number (0 = always)"},
    "connect_timeout": {"default": 3, "help": "connect timeout (s)"},
}
DEFAULT_USERS = 40
FAULTS = ["10s:pooler:restart"]

P = users.params(PARAMS)


class AppServer(users.AppServerUser):
    params = P
    fixed_count = P["servers"]

    def handle(self, req: users.Request) -> None:
        for i in range(P["queries"]):
            req.execute("SELECT %s::int + 1", (i,))


class ServerlessFunction(users.InvocationUser):
    params = P

    def invoke(self, req: users.Request) -> None:
        for i in range(P["queries"]):
            req.execute("SELECT %s::int + 1", (i,))
        req.hold(P["hold_ms"])
