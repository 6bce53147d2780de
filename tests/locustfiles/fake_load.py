"""Test locustfile: the lab's three user shapes on a stand-in connection, no database
(tests/test_users_import.py). Every request holds its "connection" for ``hold_ms``; pick the
shape with a class name on Locust's command line (Invocations, Servers, Sessions)."""

from lab import users

PARAMS = {
    "base_rate": {"default": 50.0, "help": "invocations per second"},
    "spike_rate": {"default": 0.0, "help": "invocations per second during a spike"},
    "spike_every": {"default": 0.0, "help": "seconds between spike starts"},
    "spike_length": {"default": 0.0, "help": "seconds each spike lasts"},
    "spike_offset": {"default": 0.0, "help": "seconds to the first spike"},
    "arrivals": {"default": "poisson", "help": "poisson or even"},
    "rate_per_server": {"default": 50.0, "help": "requests per second per app server"},
    "max_inflight": {"default": 2, "help": "requests one app server handles at once"},
    "hold_ms": {"default": 200.0, "help": "how long each request holds its connection"},
}
DEFAULT_USERS = 2

P = users.params(PARAMS)


class StandIn:
    """A connector without a database: ``get`` hands out a placeholder connection."""

    def get(self):
        return object()

    def put(self, conn, failed: bool) -> None:
        pass

    def close(self) -> None:
        pass


class Invocations(users.InvocationUser):
    params = P

    def make_connector(self, endpoint, uri, app_name):
        return StandIn()

    def invoke(self, req: users.Request) -> None:
        req.hold(P["hold_ms"])


class Servers(users.AppServerUser):
    params = P

    def make_connector(self, endpoint, uri, app_name):
        return StandIn()

    def handle(self, req: users.Request) -> None:
        req.hold(P["hold_ms"])


class Sessions(users.SessionUser):
    params = P

    def make_connector(self, endpoint, uri, app_name):
        return StandIn()

    @users.task
    def hold(self) -> None:
        self.request(lambda req: req.hold(P["hold_ms"]), name="hold")
