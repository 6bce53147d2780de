"""Test probe: closed-loop session users that each run one query (tests/test_load_users.py)."""

from lab import users

PARAMS = {
    "query": {"default": "select 1", "help": "the query every request runs"},
    "once": {"default": False, "help": "each user runs one request, then stops"},
}
DEFAULT_USERS = 1

P = users.params(PARAMS)


class Probe(users.SessionUser):
    params = P

    @users.task
    def probe(self) -> None:
        self.request(lambda req: req.execute(P["query"]), name="probe")
        if P["once"]:
            raise users.StopUser()
