"""Every tier for real: the limit experiments at each tier's own limits on the real stack.

`lab experiment run max-client-conn max-connections session-exhaustion backend-budget
--real-limits` on a lab brought up with `--tier T`: each pooler holds its max_client_conn
clients (12,000 on 16xl, counted by the pooler itself) and refuses the next with PgBouncer's
documented text; Postgres holds max_connections (500) and refuses the next; the session pool
at the tier's pool size refuses client pool size + 1; the backend budget fits.

Heavy (about 10 minutes for the four tiers on 2 cores; docs/benchmarks.md has the times): not
part of `make test`, run by `make test-heavy` and by .ci/run after it."""

from __future__ import annotations

import json

import pytest

from lab.config import TIERS

pytestmark = [pytest.mark.stack, pytest.mark.heavy]

LIMIT_EXPERIMENTS = ("max-client-conn", "max-connections", "session-exhaustion",
                     "backend-budget")


@pytest.mark.timeout(1200)
@pytest.mark.parametrize("tier", ["micro", "large", "4xl", "16xl"])
def test_the_limit_experiments_hold_the_tiers_real_limits(lab_factory, tier):
    t = TIERS[tier]
    lab = lab_factory("--tier", tier)
    try:
        proc = lab.cli("experiment", "run", *LIMIT_EXPERIMENTS, "--real-limits", "--json",
                       timeout=1000)
    finally:
        # One tier's containers at a time: the next tier starts on a machine without them.
        lab.cli("down", "--volumes", check=False)
    data = json.loads(proc.stdout)
    by_name = {e["name"]: {ln["lane"]: ln for ln in e["lanes"]} for e in data["experiments"]}
    for e in data["experiments"]:
        assert e["error"] is None and e["passed"], (e["name"], e)
    for pooler in ("session", "transaction", "dedicated"):
        lane = by_name["max-client-conn"][pooler]
        assert lane["observed"] == "no more connections allowed (max_client_conn)"
        # Held for real: the pooler counted max_client_conn clients, the next one refused.
        assert (f"the pooler held {t.max_client_conn:,} clients, and client "
                f"{t.max_client_conn + 1:,} got" in lane["detail"]), lane["detail"]
    direct = by_name["max-connections"]["direct"]
    assert direct["observed"] == "sorry, too many clients already"
    assert f"max_connections {t.max_connections}," in direct["detail"]
    session = by_name["session-exhaustion"]["session"]
    assert session["observed"] == "client connections exceeded (max_user_client_connections)"
    assert f"client {t.pool_size + 1} was refused" in session["detail"]
    budget = 2 * t.pool_size + t.pool_size + 1 + 1
    assert by_name["backend-budget"]["total"]["observed"] == f"{budget} <= {t.max_connections}"
