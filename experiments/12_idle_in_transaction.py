"""An idle-in-transaction client holds the only backend; the next client waits."""

import threading
import time
from typing import Any

from lab import pg
from lab.experiments import (
    POOLERS,
    QUERY_WAIT_TIMEOUT_ERROR,
    SERVED,
    WAIT_TIMEOUT_S,
    Context,
    Experiment,
    Lane,
    Observation,
    endpoint_lanes,
    per_lane,
    server_message,
)

STARVED = "starved"
WAIT = {"default_pool_size": 1, "query_wait_timeout": WAIT_TIMEOUT_S}


@per_lane
def run(ctx: Context, lane: Lane) -> Observation:
    holder = ctx.connect(lane.endpoint, autocommit=False)
    holder.execute("select 1")  # ... and never commits: idle in transaction
    outcome: dict[str, Any] = {}

    def waiter() -> None:
        started = time.monotonic()
        try:
            conn = ctx.connect(lane.endpoint)
            conn.execute("select 1")
            outcome["ok"] = True
        except pg.Error as exc:
            outcome["error"] = exc
        outcome["waited_s"] = time.monotonic() - started

    thread = threading.Thread(target=waiter, name="experiment-waiter", daemon=True)
    thread.start()
    most_waiting, maxwait_us = 0, 0
    try:
        while thread.is_alive():
            if lane.endpoint in POOLERS:
                pools = ctx.pools(lane.endpoint)
                most_waiting = max(most_waiting, pools["cl_waiting"])
                maxwait_us = max(maxwait_us, pools["maxwait_us"])
            thread.join(0.2)
    finally:
        # Also on Ctrl-C: query_wait_timeout ends the wait soon; never close a connection
        # under a thread that is still using it.
        thread.join(WAIT_TIMEOUT_S + 10)
    holder.rollback()
    waited = outcome.get("waited_s", 0.0)
    if outcome.get("ok"):
        return Observation(SERVED, f"second client served after {waited:.2f} s")
    error = outcome.get("error")
    if error is None:
        return Observation("error", "the waiting client did not finish")
    text = server_message(error)
    detail = (f"cl_waiting reached {most_waiting}, maxwait climbed to "
              f"{maxwait_us / 1e6:.1f} s; after {waited:.1f} s: {text}")
    starved = text == QUERY_WAIT_TIMEOUT_ERROR and most_waiting >= 1 and maxwait_us >= 1e6
    return Observation(STARVED if starved else "error", detail)


EXPERIMENT = Experiment(
    name="idle-in-transaction",
    title="Idle-in-transaction clients starve the pool",
    question="Pool size 1: one client opens a transaction and goes idle. What happens "
             "to the next client?",
    why="An open transaction keeps its backend even when the client does nothing. "
        "The next client queues: SHOW POOLS shows cl_waiting 1 and maxwait climbing "
        "until query_wait_timeout ends the wait with an error.",
    fix="Commit promptly; set idle_transaction_timeout (PgBouncer) or "
        "idle_in_transaction_session_timeout (Postgres); never wait for user input "
        "inside a transaction.",
    lanes=endpoint_lanes("direct", "transaction", "dedicated"),
    expect={"direct": SERVED, "transaction": STARVED, "dedicated": STARVED},
    run=run,
    settings={"transaction": WAIT, "dedicated": WAIT},
)
