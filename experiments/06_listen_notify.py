"""LISTEN on one client, NOTIFY from another."""

import time

from lab.experiments import (
    ALL4,
    POOL2,
    Context,
    Experiment,
    Lane,
    Observation,
    endpoint_lanes,
    per_lane,
)

RECEIVED, MISSED = "received", "missed"


@per_lane
def run(ctx: Context, lane: Lane) -> Observation:
    listener = ctx.connect(lane.endpoint)
    listener.execute("LISTEN pooler_lab_experiment")
    sender = ctx.connect("direct")
    sender.execute("NOTIFY pooler_lab_experiment, 'hello'")
    # The notification reaches the listening backend at once; in transaction mode that
    # backend sits unlinked in the pool then. Only afterwards does the listener query again.
    time.sleep(0.3)
    listener.execute("select 1")
    got = list(listener.notifies(timeout=1.0, stop_after=1))
    if got:
        return Observation(RECEIVED, f"got {got[0].payload!r} from backend {got[0].pid}")
    return Observation(MISSED, "nothing arrived within 1 s of NOTIFY")


EXPERIMENT = Experiment(
    name="listen-notify",
    title="LISTEN / NOTIFY",
    question="A client LISTENs; another client NOTIFYs. Does the listener hear it?",
    why="LISTEN registers the backend, not the client. In transaction mode the "
        "notification reaches a backend that sits idle in the pool; PgBouncer drops "
        "it ('got packet 'A' from server when not linked').",
    fix="Listen on a session-mode or direct connection (Supabase Realtime is the "
        "managed alternative).",
    lanes=endpoint_lanes(*ALL4),
    expect={"direct": RECEIVED, "session": RECEIVED, "transaction": MISSED,
            "dedicated": MISSED},
    run=run,
    settings=POOL2,
)
