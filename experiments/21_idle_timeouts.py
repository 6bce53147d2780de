"""Idle clients and idle backends: which timeout does a client holding a connection feel?"""

import time

from lab import pg
from lab.classify import classify
from lab.experiments import (
    Context,
    Experiment,
    Lane,
    Observation,
    endpoint_lanes,
    first_line,
    pid,
)

IDLE_TIMEOUT_S = 1  # client_idle_timeout / server_idle_timeout while a lane runs
IDLE_S = 2.0  # how long the client sits idle
SAME, NEW = "works, same backend", "works, new backend"
# PgBouncer's text, sent as 08P01 (psycopg: ProtocolViolation): connection_lost.
DROPPED = "connection_lost: client_idle_timeout"


def outcome(exc: BaseException) -> str:
    cls, _, message = classify(exc)
    return f"{cls}: {pg_text(message)}"


def pg_text(message: str) -> str:
    # libpq: "consuming input failed: FATAL:  client_idle_timeout" or the bare server text
    text = message.removeprefix("consuming input failed: ")
    return text.split("FATAL:", 1)[-1].strip()


def run(ctx: Context) -> dict[str, Observation]:
    # Every lane's client idles at the same time: one wait for the whole experiment.
    lanes = ctx.experiment.lanes
    conns = {lane.key: ctx.connect(lane.endpoint) for lane in lanes}
    before = {key: pid(conn) for key, conn in conns.items()}
    time.sleep(IDLE_S)  # the clients hold their connections and do nothing
    result = {}
    for key, conn in conns.items():
        try:
            after = pid(conn)
            result[key] = Observation(SAME if after == before[key] else NEW,
                                      f"idle {IDLE_S} s; backend {before[key]} -> {after}")
        except pg.Error as exc:
            result[key] = Observation(outcome(exc), f"idle {IDLE_S} s, then: "
                                      f"{type(exc).__name__}: {first_line(exc)}")
    # client_idle_timeout may also have closed the idle admin console connections: the
    # restore afterwards opens new ones.
    ctx.close_admins()
    return result


EXPERIMENT = Experiment(
    name="idle-timeouts",
    title="Idle clients, idle backends",
    question=f"A client opens a connection, runs a query and sits idle for {IDLE_S} s, with "
             f"the pooler's client_idle_timeout (or server_idle_timeout) at {IDLE_TIMEOUT_S} s."
             " What does its next query see?",
    why="client_idle_timeout closes a client's connection once it has been idle that long: "
        "the client finds out only at its next query, where psycopg raises "
        "ProtocolViolation (08P01) client_idle_timeout, classified connection_lost. "
        "PgBouncer applies it only to clients without a server, so in session mode, where a "
        "client keeps its server for the whole session, it never fires. "
        "server_idle_timeout closes idle backends instead, which a transaction-mode client "
        "never notices: its next transaction gets a new backend. Supavisor's closing of "
        "idle transaction-mode backends after 5 minutes is of that second kind; its "
        "client_idle_timeout defaults to 0 (off), like PgBouncer's. Postgres' own "
        "idle_session_timeout is 0 too, so the direct client keeps its backend.",
    fix="Expect a pooled connection to be closed while idle (idle timeouts, restarts, "
        "deploys): use a client-side pool that checks connections before use or recycles "
        "them (psycopg_pool check, max_idle), or reconnect on connection_lost.",
    lanes=(
        *endpoint_lanes("direct"),
        Lane("session", "session", "Shared pooler, session mode: client_idle_timeout"),
        Lane("transaction", "transaction",
             "Shared pooler, transaction mode: client_idle_timeout"),
        Lane("dedicated-server-idle", "dedicated",
             "Dedicated pooler (transaction mode): server_idle_timeout"),
    ),
    expect={"direct": SAME, "session": SAME, "transaction": DROPPED,
            "dedicated-server-idle": NEW},
    run=run,
    settings={"session": {"client_idle_timeout": IDLE_TIMEOUT_S},
              "transaction": {"client_idle_timeout": IDLE_TIMEOUT_S},
              "dedicated": {"server_idle_timeout": IDLE_TIMEOUT_S}},
)
