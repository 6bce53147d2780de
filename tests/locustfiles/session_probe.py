"""Test probe: closed-loop session users that each run one query (tests/test_load_users.py)."""

from locust import events

from lab import users

PARAMS = {
    "query": {"default": "select 1", "help": "the query every request runs"},
    "once": {"default": False, "help": "each user runs one request, then stops"},
    "events": {"default": False, "help": "LabUser.request_events: an event per success"},
}
DEFAULT_USERS = 1

P = users.params(PARAMS)
FIRED = [0]  # successes seen by a listener of events.request


class Probe(users.SessionUser):
    params = P
    request_events = bool(P["events"])

    @users.task
    def probe(self) -> None:
        self.request(lambda req: req.execute(P["query"]), name="probe")
        if P["once"]:
            raise users.StopUser()


@events.request.add_listener
def _count(exception=None, **_kwargs) -> None:
    if exception is None:
        FIRED[0] += 1


@events.quitting.add_listener
def _report(**_kwargs) -> None:
    print(f"probe events: {FIRED[0]}", flush=True)
