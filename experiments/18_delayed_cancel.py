"""A cancel meant for one query arrives late: which query does it cancel?"""

import threading
import time

from lab import pg
from lab.experiments import (
    ALL4,
    Context,
    Experiment,
    Lane,
    Observation,
    describe_error,
    endpoint_lanes,
    pid,
)

LATER_CANCELLED, LATER_RAN = "later-query-cancelled", "later-query-ran"
OTHER_UNTOUCHED, OTHER_CANCELLED = "other-client-untouched", "other-client-cancelled"
QUERY_CANCELED = "57014"
DELAY_S = 0.3  # how late the cancel arrives, into the next query
SLEEP_S = 1.0  # the next query's length
POOL1 = {"default_pool_size": 1}


def late_cancel(conn) -> threading.Timer:
    """psycopg's conn.cancel(), fired DELAY_S from now (a timer meant for an earlier query)."""
    timer = threading.Timer(DELAY_S, conn.cancel)
    timer.daemon = True
    timer.start()
    return timer


def timed(conn, query: str):
    started = time.monotonic()
    try:
        row = conn.execute(query).fetchone()
        return row, None, time.monotonic() - started
    except pg.Error as exc:
        return None, exc, time.monotonic() - started


def same_client(ctx: Context, lane: Lane) -> Observation:
    a = ctx.connect(lane.endpoint)
    a.execute("select 1")  # query 1, the one the cancel was meant for: already finished
    timer = late_cancel(a)
    _, error, took = timed(a, f"select pg_sleep({SLEEP_S})")  # query 2
    timer.join()
    if error is None:
        return Observation(LATER_RAN, f"query 2 ran its {took:.2f} s; the cancel was lost")
    if error.sqlstate == QUERY_CANCELED:
        return Observation(LATER_CANCELLED, f"query 2 cancelled after {took:.2f} s: "
                                            f"{describe_error(error)}")
    return Observation("error", describe_error(error))


def other_client(ctx: Context, lane: Lane) -> Observation:
    a = ctx.connect(lane.endpoint)
    a_backend = pid(a)  # A's query 1 ran on this backend, which went back to the pool
    b = ctx.connect(lane.endpoint)
    timer = late_cancel(a)  # A is idle now: no backend of its own
    row, error, took = timed(b, f"select pg_backend_pid(), pg_sleep({SLEEP_S})")
    timer.join()
    if error is not None:
        token = OTHER_CANCELLED if error.sqlstate == QUERY_CANCELED else "error"
        return Observation(token, f"B on A's former backend {a_backend}: "
                                  f"{describe_error(error)} after {took:.2f} s")
    where = "A's former backend" if row[0] == a_backend else "another backend"
    return Observation(OTHER_UNTOUCHED, f"B's query ran its {took:.2f} s on {where} "
                                        f"({a_backend}); A's cancel was dropped")


def run(ctx: Context) -> dict[str, Observation]:
    result = {}
    for lane in ctx.experiment.lanes:
        fn = other_client if lane.key.endswith("-other-client") else same_client
        result[lane.key] = fn(ctx, lane)
        ctx.close_all()
        if lane.endpoint != "direct":
            ctx.drain(lane.endpoint)
    return result


EXPERIMENT = Experiment(
    name="delayed-cancel",
    title="A late cancel hits the next query",
    question="A timer calls psycopg's conn.cancel() for a query that has just finished; the "
             "cancel arrives while the same connection runs its next query. Which query is "
             "cancelled, and can it hit another client's query on a pooled backend?",
    why="A CancelRequest names a connection (its process id and secret key), never a query: "
        "Postgres cancels whatever that backend runs when the request arrives, so a late "
        "cancel kills the connection's next query, directly and through every pooler alike "
        "(PgBouncer forwards it to the server the client is linked to at that moment). "
        "In transaction mode a client that is idle has no backend: PgBouncer drops its "
        "cancel, and the client now running on that backend is not touched (PgBouncer keeps "
        "a server out of the pool until the cancels sent to it are done). Supavisor had a "
        "late cancel hit a later query in session mode (issue #1148), as PgBouncer once did "
        "(#245).",
    fix="Cancel only while you know the query still runs, and treat any 57014 as "
        "possibly meant for an earlier query; for time limits prefer a server-side "
        "SET LOCAL statement_timeout inside the transaction over client-side cancel timers.",
    lanes=(
        *endpoint_lanes(*ALL4),
        Lane("transaction-other-client", "transaction",
             "Shared pooler, transaction mode: another client on A's former backend"),
        Lane("dedicated-other-client", "dedicated",
             "Dedicated pooler: another client on A's former backend"),
    ),
    expect={"direct": LATER_CANCELLED, "session": LATER_CANCELLED,
            "transaction": LATER_CANCELLED, "dedicated": LATER_CANCELLED,
            "transaction-other-client": OTHER_UNTOUCHED,
            "dedicated-other-client": OTHER_UNTOUCHED},
    run=run,
    settings={"transaction": POOL1, "dedicated": POOL1},
)
