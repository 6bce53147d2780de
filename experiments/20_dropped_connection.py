"""A connection dropped in the middle of a transaction: what psycopg reports, and its class."""

from lab import pg
from lab.experiments import (
    ALL4,
    Context,
    Experiment,
    Lane,
    Observation,
    classified,
    endpoint_lanes,
    first_line,
    pid,
)

LOST_BACKEND = "connection_lost: terminating connection due to administrator command"
# PgBouncer's text (admin.c) for KILL_CLIENT, sent as 08P01: classified connection_lost.
KILLED = "connection_lost: admin forced disconnect"




def client_id(ctx: Context, endpoint: str, app: str) -> str:
    for row in pg.rows(ctx.admin(endpoint), "SHOW CLIENTS"):
        if row.get("application_name") == app:
            return str(row.get("id") or row.get("ptr"))
    raise RuntimeError(f"the {endpoint} pooler shows no client {app}")


def run(ctx: Context) -> dict[str, Observation]:
    result = {}
    for lane in ctx.experiment.lanes:
        app = f"lab-drop-{lane.key}"
        conn = ctx.connect(lane.endpoint, autocommit=False, application_name=app)
        backend = pid(conn)  # a transaction is open now, on this backend
        how = f"backend {backend} ended with pg_terminate_backend"
        if lane.key.endswith("-pooler-kill"):
            cid = client_id(ctx, lane.endpoint, app)
            pg.rows(ctx.admin(lane.endpoint), f"KILL_CLIENT {int(cid)}")
            how = f"the pooler's admin console: KILL_CLIENT {cid}"
        else:
            observer = ctx.connect("direct")
            observer.execute("select pg_terminate_backend(%s)", (backend,))
        try:
            conn.execute("select 1")
            result[lane.key] = Observation("no error", f"{how}; the next query worked")
        except pg.Error as exc:
            result[lane.key] = Observation(classified(exc), f"{how}; psycopg raised "
                                           f"{type(exc).__name__}: {first_line(exc)}; "
                                           f"conn.closed = {conn.closed}")
        ctx.close_all()
        if lane.endpoint != "direct":
            ctx.drain(lane.endpoint)
    return result


EXPERIMENT = Experiment(
    name="dropped-connection",
    title="A connection dropped mid-transaction",
    question="In the middle of a transaction the connection goes away: its backend is "
             "terminated, or the pooler drops the client. What does psycopg raise on the next "
             "statement, through each endpoint, and how does the lab classify it?",
    why="A terminated backend says why before it closes (FATAL 57P01, terminating "
        "connection due to administrator command), and PgBouncer passes that message on "
        "and closes the client too: psycopg raises AdminShutdown through every endpoint, "
        "classified connection_lost. When the pooler itself drops the client (admin "
        "KILL_CLIENT; Supavisor's {:shutdown, :client_termination}) psycopg raises "
        "ProtocolViolation (08P01) 'admin forced disconnect', also classified connection_lost. "
        "Either way the "
        "transaction is rolled back and conn.closed is True. Supavisor users read DbHandler "
        "exited; node-postgres prints Connection terminated unexpectedly.",
    fix="Retry the whole transaction on a new connection (it was rolled back), with "
        "backoff; a client-side pool should check connections out fresh and discard closed "
        "ones.",
    lanes=(*endpoint_lanes(*ALL4),
           Lane("session-pooler-kill", "session",
                "Shared pooler, session mode: the pooler drops the client"),
           Lane("transaction-pooler-kill", "transaction",
                "Shared pooler, transaction mode: the pooler drops the client")),
    expect={"direct": LOST_BACKEND, "session": LOST_BACKEND, "transaction": LOST_BACKEND,
            "dedicated": LOST_BACKEND, "session-pooler-kill": KILLED,
            "transaction-pooler-kill": KILLED},
    run=run,
)
