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

# PgBouncer 1.24's text when the session pooler refuses client pool_size+1 at login
# (session_overflow = "refuse"): the lab's (EMAXCONNSESSION).
SESSION_REFUSED = "client connections exceeded (max_user_client_connections)"
CAP = "max_user_client_connections"


@per_lane
def run(ctx: Context, lane: Lane) -> Observation:
    size = int(ctx.config_value(lane.endpoint, "default_pool_size"))
    refusing = lane.endpoint == "session" and int(ctx.config_value(lane.endpoint, CAP)) > 0
    if refusing:
        # The lab caps session clients at pool_size (session_overflow = "refuse"): the same
        # cap at the experiment's pool size. A lab that queues keeps no cap (0).
        ctx.set(lane.endpoint, CAP, size)
    functions = []
    for _ in range(size):
        conn = ctx.connect(lane.endpoint)
        conn.execute("select 1")  # a function's query; the connection stays open, idle
        functions.append(conn)
    held = f"{size} idle clients hold the pool (size {size}); client {size + 1}"
    started = time.monotonic()
    try:
        extra = ctx.connect(lane.endpoint)
    except pg.Error as exc:
        text = server_message(exc)
        return Observation(text, f"{held} was refused at connect after "
                                 f"{time.monotonic() - started:.2f} s: {text} (Supavisor 2.8+: "
                                 f"(EMAXCONNSESSION) max clients reached in session mode)")
    connected = time.monotonic() - started
    try:
        extra.execute("select 1")
    except pg.Error as exc:
        text = server_message(exc)
        return Observation(text, f"{held} connected in {connected:.2f} s, then its first "
                                 f"query waited {time.monotonic() - started:.1f} s: {text}")
    return Observation(SERVED, f"{held} served in {time.monotonic() - started:.2f} s")


def expect(cfg) -> dict[str, str]:
    session = SESSION_REFUSED if cfg.session_overflow == "refuse" else QUERY_WAIT_TIMEOUT_ERROR
    return {"session": session, "transaction": SERVED}


EXPERIMENT = Experiment(
    name="session-exhaustion",
    title="Session-mode exhaustion by serverless clients",
    question="Pool size 2 and two serverless functions that keep their connection "
             "open: what does the third function see, in session and in transaction "
             "mode?",
    why="In session mode every connected client holds a backend until it "
        "disconnects, idle or not, so client N+1 cannot get one. Supavisor 2.8+ "
        "refuses it at once with '(EMAXCONNSESSION) max clients reached in session "
        "mode - max clients are limited to pool_size: N'; the lab (session_overflow = "
        "refuse, the default) refuses it at login with PgBouncer's 'client connections "
        "exceeded (max_user_client_connections)'. With session_overflow = queue (Supavisor "
        "before 2.8) it logs in and its first query waits until query_wait_timeout. "
        "Transaction mode lends the backends per transaction and serves it.",
    fix="Serverless and edge functions use transaction mode (port 6543); session mode "
        "is for persistent servers with a bounded number of connections.",
    lanes=endpoint_lanes("session", "transaction"),
    expect=expect,
    run=run,
    settings={"session": {"default_pool_size": 2,
                          "query_wait_timeout": WAIT_TIMEOUT_S},
              "transaction": {"default_pool_size": 2}},
    also_changes="max_user_client_connections on the session pooler, to the pool size (2), "
                 "when the lab refuses (session_overflow = refuse)",
    real_limits="the tier's own pool size (15 on micro, 128 on 16xl): that many idle clients "
                "hold the session pool, and client pool size + 1 is refused (or waits) there, "
                "served in transaction mode.",
    real_settings={"session": {"query_wait_timeout": WAIT_TIMEOUT_S}},
)
