"""Postgres restarts (fast shutdown, in place) under persistent servers: what a held
connection sees next, through each endpoint, and what a client-side pool hands out."""

import contextlib
import logging

from psycopg_pool import ConnectionPool

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
from lab.faults import actions, parse_fault

FAULT = "0s:db:fast-restart"
POOL_SIZE = 1  # min_size = max_size: one backend each, so every lane fits a pool_size of 3
CHECKOUTS = POOL_SIZE + 2  # at most this many checkouts until one works
POOL_TIMEOUT_S = 10
# psycopg_pool >= 3.2: a checkout runs an empty query first and replaces a broken connection.
CHECK = getattr(ConnectionPool, "check_connection", None)
LOST = "connection_lost: terminating connection due to administrator command"
NEW_BACKEND = "works, new backend"
POOL_BROKEN = "hands out broken connections (connection_lost), then works"
POOL_WORKS = "works"




class Held:
    """An app server's one connection, opened (and used) before the restart."""

    def __init__(self, ctx: Context, lane: Lane):
        self.in_transaction = lane.key.endswith("-in-transaction")
        self.conn = ctx.connect(lane.endpoint, autocommit=not self.in_transaction,
                                application_name=f"lab-restart-{lane.key}")
        self.before = pid(self.conn)  # in a transaction: it stays open, on this backend

    def observe(self) -> Observation:
        what = "in an open transaction, " if self.in_transaction else ""
        try:
            after = pid(self.conn)
        except pg.Error as exc:
            return Observation(classified(exc), f"{what}backend {self.before}; the next query: "
                                             f"{type(exc).__name__}: {first_line(exc)}; "
                                             f"conn.closed = {self.conn.closed}")
        return Observation(NEW_BACKEND if after != self.before else "works, same backend",
                           f"{what}backend {self.before} -> {after}, no error")


class Pool:
    """A psycopg_pool.ConnectionPool of the app server, with or without a check on checkout."""

    def __init__(self, ctx: Context, lane: Lane):
        self.checked = lane.key.endswith("-check")
        ep = ctx.eps[lane.endpoint]
        kwargs = dict(ep.conn_params(bench=True), user=ep.user, password=ctx.password,
                      dbname=ep.database, application_name=f"lab-restart-{lane.key}",
                      connect_timeout=POOL_TIMEOUT_S, autocommit=True, prepare_threshold=None)
        self.pool = ConnectionPool(kwargs=kwargs, min_size=POOL_SIZE, max_size=POOL_SIZE,
                                   open=False, timeout=POOL_TIMEOUT_S,
                                   check=CHECK if self.checked else None,
                                   name=f"lab-restart-{lane.key}")
        self.pool.open(wait=True, timeout=POOL_TIMEOUT_S)
        # Every pooled connection used once (a session-mode client gets its server).
        with contextlib.ExitStack() as stack:
            for _ in range(POOL_SIZE):
                stack.enter_context(self.pool.connection()).execute("select 1")

    def observe(self) -> Observation:
        failures: list[str] = []
        for _ in range(CHECKOUTS):
            try:
                with self.pool.connection() as conn:
                    conn.execute("select 1")
            except pg.Error as exc:
                failures.append(classified(exc))
                continue
            how = "without check"
            if self.checked:
                lost = self.pool.get_stats().get("connections_lost", 0)
                how = f"with check ({lost} broken connection(s) found and replaced)"
            if not failures:
                return Observation(POOL_WORKS, f"{how}: the first checkout worked")
            classes = {f.split(":", 1)[0] for f in failures}
            token = (POOL_BROKEN if classes == {"connection_lost"}
                     else f"hands out broken connections ({', '.join(sorted(classes))}), "
                          "then works")
            return Observation(token, f"{how}: {len(failures)} checkout(s) failed "
                                      f"({'; '.join(sorted(set(failures)))}), then one worked")
        return Observation("every checkout fails", f"{CHECKOUTS} checkouts: "
                                                   f"{'; '.join(sorted(set(failures)))}")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.pool.close(timeout=2)


def run(ctx: Context) -> dict[str, Observation]:
    if CHECK is None:
        raise RuntimeError("psycopg_pool has no ConnectionPool.check_connection (3.2 or later "
                           "needed)")
    lanes = ctx.experiment.lanes
    clients: dict[str, Held | Pool] = {}
    fctx = actions.context_for_lab(ctx.cfg, ctx.state, ctx.eps)
    # psycopg_pool warns about each broken connection it discards: that is the point here.
    pool_log = logging.getLogger("psycopg.pool")
    level = pool_log.level
    pool_log.setLevel(logging.ERROR)
    try:
        for lane in lanes:
            clients[lane.key] = (Pool if "-pool" in lane.key else Held)(ctx, lane)
        answer = actions.inject(parse_fault(FAULT), fctx)
        if not answer["ok"]:
            raise RuntimeError(f"the fast restart failed: {answer['error']}")
        if "in place" not in answer["answer"]:
            # docker restart: the dedicated pooler was restarted too, another experiment
            raise RuntimeError(f"Postgres was not restarted in place: {answer['answer']}")
        return {key: client.observe() for key, client in clients.items()}
    finally:
        for client in clients.values():
            if isinstance(client, Pool):
                client.close()
        # db (and with it dedicated) started again if the restart failed half-way.
        actions.recover(parse_fault("0s:db:kill"), fctx)
        fctx.close()
        ctx.close_admins()  # a docker restart would have restarted the dedicated pooler too
        pool_log.setLevel(level)


EXPERIMENT = Experiment(
    name="postgres-restart",
    title="Postgres restart under persistent servers",
    question="Postgres does a fast restart (a minor-version upgrade, a config change, a "
             "failover) while app servers hold connections, one each and in a client-side "
             "pool, through every endpoint. What does the next query on a held connection "
             "see, and what does the pool hand out?",
    why="A fast shutdown ends every backend with FATAL 57P01 (terminating connection due to "
        "administrator command). A direct client finds out at its next query: psycopg raises "
        "AdminShutdown, connection_lost. A pooler passes that on only to a client linked to "
        "the dying server: a session-mode client always, a transaction-mode client inside a "
        "transaction. A transaction-mode client between transactions holds no server: "
        "PgBouncer drops its dead server connections, and the next query gets a new backend "
        "with no error. A client-side pool without a check hands its dead connections out, "
        "one failed request each; with check=ConnectionPool.check_connection it tests each "
        "connection on checkout and replaces the broken ones.",
    fix="App servers: a pool that checks connections on checkout (psycopg_pool check=, "
        "SQLAlchemy pool_pre_ping) or retries once on connection_lost; retry a transaction "
        "that was cut (it was rolled back). Behind a pooler in transaction mode idle clients "
        "ride through a restart; for planned ones, PAUSE the pooler, restart, RESUME (lab "
        "experiment run pool-pause).",
    lanes=(
        *endpoint_lanes(*ALL4),
        Lane("transaction-in-transaction", "transaction",
             "Shared pooler, transaction mode: a client inside a transaction"),
        Lane("direct-pool", "direct", "Direct connection: psycopg_pool, no check"),
        Lane("direct-pool-check", "direct", "Direct connection: psycopg_pool, check"),
        Lane("session-pool", "session", "Shared pooler, session mode: psycopg_pool, no check"),
        Lane("session-pool-check", "session",
             "Shared pooler, session mode: psycopg_pool, check"),
        Lane("transaction-pool", "transaction",
             "Shared pooler, transaction mode: psycopg_pool, no check"),
        Lane("dedicated-pool", "dedicated", "Dedicated pooler: psycopg_pool, no check"),
    ),
    expect={"direct": LOST, "session": LOST, "transaction": NEW_BACKEND,
            "dedicated": NEW_BACKEND, "transaction-in-transaction": LOST,
            "direct-pool": POOL_BROKEN, "direct-pool-check": POOL_WORKS,
            "session-pool": POOL_BROKEN, "session-pool-check": POOL_WORKS,
            "transaction-pool": POOL_WORKS, "dedicated-pool": POOL_WORKS},
    run=run,
)
