"""PgBouncer's PAUSE and RESUME: clients wait instead of failing; which ones wait, and where."""

import threading
import time

from lab import pg
from lab.experiments import (
    Context,
    Experiment,
    Lane,
    Observation,
    classified,
    endpoint_lanes,
    first_line,
)
from lab.faults import actions, parse_fault

PAUSE_S = 1.5  # how long every pooler stays paused
PAUSE_WAIT_S = 0.2  # how long an inject waits for PAUSE's answer (session mode never answers)
TARGETS = ("session", "transaction", "dedicated")
WAITED = "waits for RESUME, then succeeds, no error"
AT_ONCE = "runs at once, no error"
CONNECT_WAITS = "connect waits for RESUME, then succeeds, no error"
QUERY_WAITS = "connects at once, first query waits for RESUME, then succeeds, no error"
UNAFFECTED = "unaffected, no error"




class Step:
    """One timed step of a lane (a connect or a query)."""

    def __init__(self) -> None:
        self.start = self.end = 0.0
        self.error: BaseException | None = None

    def run(self, fn) -> None:
        self.start = time.monotonic()
        try:
            fn()
        except pg.Error as exc:
            self.error = exc
        self.end = time.monotonic()

    def took(self) -> str:
        return f"{self.end - self.start:.2f} s"


def held(ctx: Context, lane: Lane):
    """A client connected before the PAUSE (idle, no transaction open) runs one query."""
    conn = ctx.connect(lane.endpoint, application_name=f"lab-pause-{lane.key}")
    conn.execute("select 1")
    query = Step()
    return (lambda: query.run(lambda: conn.execute("select 1"))), {"query": query}


def new(ctx: Context, lane: Lane):
    """A client that connects while the pooler is paused, then runs one query."""
    connect, query = Step(), Step()
    conns = []

    def go() -> None:
        connect.run(lambda: conns.append(
            ctx.connect(lane.endpoint, application_name=f"lab-pause-{lane.key}")))
        if connect.error is None:
            query.run(lambda: conns[0].execute("select 1"))
    return go, {"connect": connect, "query": query}


def observe(lane: Lane, steps: dict[str, Step], resumed: dict[str, float]) -> Observation:
    for name, step in steps.items():
        if step.error is not None:
            return Observation(classified(step.error), f"{name} after {step.took()}: "
                                                    f"{first_line(step.error)}")
    # Direct: compared with the first RESUME (every pooler was paused until then).
    at = resumed.get(lane.endpoint, min(resumed.values(), default=None))

    def waited(step: Step) -> bool:  # it ended only after RESUME was issued
        return at is not None and step.end >= at

    query = steps["query"]
    if "connect" not in steps:
        if lane.endpoint not in TARGETS:
            return Observation(UNAFFECTED if not waited(query) else WAITED,
                               f"the query took {query.took()} while every pooler was paused")
        if waited(query):
            return Observation(WAITED, f"the query waited {query.took()} (PAUSE for "
                                       f"{PAUSE_S:g} s), then returned its row")
        return Observation(AT_ONCE, f"the query took {query.took()}: this session-mode client "
                                    "holds its server connection, which PAUSE waits for")
    connect = steps["connect"]
    both = f"connect {connect.took()}, first query {query.took()}"
    if waited(connect):
        return Observation(CONNECT_WAITS, both)
    if waited(query):
        return Observation(QUERY_WAITS, both)
    return Observation(UNAFFECTED, both)


def run(ctx: Context) -> dict[str, Observation]:
    lanes = ctx.experiment.lanes
    # Clients connected before the PAUSE, each after the last has connected.
    work = {lane.key: held(ctx, lane) for lane in lanes if not lane.key.endswith("-new")}
    faults = {t: parse_fault(f"0s:{t}:pool-pause:{PAUSE_S:g}s") for t in TARGETS}
    fctx = actions.context_for_lab(ctx.cfg, ctx.state, ctx.eps)
    fctx.pause_wait = PAUSE_WAIT_S
    resumed: dict[str, float] = {}
    threads: list[threading.Thread] = []
    try:
        for target, fault in faults.items():
            answer = actions.inject(fault, fctx)
            if not answer["ok"]:
                raise RuntimeError(f"PAUSE on the {target} pooler failed: {answer['error']}")
        paused = time.monotonic()
        work.update({lane.key: new(ctx, lane) for lane in lanes if lane.key.endswith("-new")})

        def resume() -> None:
            time.sleep(max(0.0, paused + PAUSE_S - time.monotonic()))
            for target, fault in faults.items():
                resumed[target] = time.monotonic()
                actions.recover(fault, fctx)

        threads = [threading.Thread(target=fn, daemon=True, name=f"lab-pause-{key}")
                   for key, (fn, _) in work.items()]
        threads.append(threading.Thread(target=resume, daemon=True, name="lab-resume"))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(PAUSE_S + 10)
    finally:
        for fault in faults.values():  # idempotent: "not paused" when already resumed
            actions.recover(fault, fctx)
        fctx.close()
    return {lane.key: observe(lane, work[lane.key][1], resumed) for lane in lanes}


EXPERIMENT = Experiment(
    name="pool-pause",
    title="PAUSE and RESUME: maintenance without errors",
    question=f"Each PgBouncer gets PAUSE, and RESUME {PAUSE_S:g} s later. What does a client "
             "that is connected already see when it runs a query meanwhile, and a client "
             "that connects meanwhile?",
    why="PAUSE lets every server connection be released (a transaction ends, a session-mode "
        "client disconnects), closes them and holds new work: a transaction-mode client's "
        "next query waits inside the pooler until RESUME and then runs, with no error, only "
        "later. A session-mode client keeps the server it holds, so its queries run at once "
        "and PAUSE keeps waiting for it; a new session-mode client connects at once and its "
        "first query waits. The dedicated pooler looks every login up with auth_query, which "
        "needs a server connection: there the connect itself waits. Direct connections know "
        "nothing of it. A serverless function only sees slower requests (mind its own "
        "timeout, and query_wait_timeout); a persistent server's pooled connections stay "
        "open. This is how a restart or failover of Postgres behind PgBouncer is done without "
        "errors: PAUSE, restart, RESUME.",
    fix="For planned maintenance behind PgBouncer use PAUSE (or PAUSE db), do the work, then "
        "RESUME; RECONNECT or RELOAD to move to a new server without dropping clients. Keep "
        "the pause shorter than the clients' statement and request timeouts and "
        "query_wait_timeout. Session-mode clients that hold servers delay PAUSE until they "
        "disconnect: give it a deadline, or KILL what is left.",
    lanes=(
        *endpoint_lanes("direct"),
        Lane("session", "session", "Shared pooler, session mode: a client connected before"),
        Lane("session-new", "session", "Shared pooler, session mode: a new client"),
        Lane("transaction", "transaction",
             "Shared pooler, transaction mode: a client connected before"),
        Lane("transaction-new", "transaction", "Shared pooler, transaction mode: a new client"),
        Lane("dedicated", "dedicated", "Dedicated pooler: a client connected before"),
        Lane("dedicated-new", "dedicated", "Dedicated pooler: a new client"),
    ),
    expect={"direct": UNAFFECTED, "session": AT_ONCE, "session-new": QUERY_WAITS,
            "transaction": WAITED, "transaction-new": QUERY_WAITS, "dedicated": WAITED,
            "dedicated-new": CONNECT_WAITS},
    run=run,
)
