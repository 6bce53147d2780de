"""Serverless clients that keep their connection open exhaust a session-mode pool."""

import time

from lab import pg
from lab.experiments import (
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


@per_lane
def run(ctx: Context, lane: Lane) -> Observation:
    size = int(ctx.config_value(lane.endpoint, "default_pool_size"))
    functions = []
    for _ in range(size):
        conn = ctx.connect(lane.endpoint)
        conn.execute("select 1")  # a function's query; the connection stays open, idle
        functions.append(conn)
    started = time.monotonic()
    try:
        extra = ctx.connect(lane.endpoint)
        connected = time.monotonic() - started
        extra.execute("select 1")
    except pg.Error as exc:
        text = server_message(exc)
        return Observation(text, f"{size} idle clients hold the pool (size {size}); client "
                                 f"{size + 1} connected in {connected:.2f} s, then its first "
                                 f"query waited {time.monotonic() - started:.1f} s: {text}")
    return Observation(SERVED, f"{size} idle clients connected (pool size {size}); client "
                               f"{size + 1} served in {time.monotonic() - started:.2f} s")


EXPERIMENT = Experiment(
    name="session-exhaustion",
    title="Session-mode exhaustion by serverless clients",
    question="Pool size 2 and two serverless functions that keep their connection "
             "open: what does the third function see, in session and in transaction "
             "mode?",
    why="In session mode every connected client holds a backend until it "
        "disconnects, idle or not, so client N+1 cannot get one. PgBouncer queues it "
        "until query_wait_timeout; Supavisor 2.8+ refuses it at once with "
        "'(EMAXCONNSESSION) max clients reached in session mode - max clients are "
        "limited to pool_size: N'. Transaction mode lends the backends per "
        "transaction and serves it.",
    fix="Serverless and edge functions use transaction mode (port 6543); session mode "
        "is for persistent servers with a bounded number of connections.",
    lanes=endpoint_lanes("session", "transaction"),
    expect={"session": QUERY_WAIT_TIMEOUT_ERROR, "transaction": SERVED},
    run=run,
    settings={"session": {"default_pool_size": 2,
                          "query_wait_timeout": WAIT_TIMEOUT_S},
              "transaction": {"default_pool_size": 2}},
)
