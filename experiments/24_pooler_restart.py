"""The shared pooler's container restarts while serverless clients connect per request: which
endpoints refuse, for how long, and which do not notice."""

import threading
import time
from collections import Counter

from lab import pg
from lab.classify import classify
from lab.experiments import ALL4, Context, Experiment, Observation, endpoint_lanes
from lab.faults import actions, parse_fault

FAULT = "0s:pooler:restart"
CONNECT_TIMEOUT_S = 3  # a serverless function's short connect_timeout (libpq's least is 2 s)
BASELINE_S = 0.5  # requests before the restart
PAUSE_S = 0.05  # between two requests of one client
SETTLE_S = 10.0  # after the restart: how long to wait for every lane to connect again
UNAFFECTED = "unaffected"
RECOVERED = "fails while the pooler restarts, then connects again"
STILL_FAILING = "still failing after the restart"


class Requests:
    """One serverless client: connect, one query, close, again and again until stopped."""

    def __init__(self, ctx: Context, endpoint: str):
        self.ctx, self.endpoint = ctx, endpoint
        self.stop = threading.Event()
        self.log: list[tuple[float, float, str | None]] = []  # (start, end, error class)
        self.thread = threading.Thread(target=self._loop, daemon=True,
                                       name=f"lab-restart-{endpoint}")

    def _loop(self) -> None:
        while not self.stop.is_set():
            started, error = time.monotonic(), None
            try:
                conn = pg.connect(self.ctx.eps[self.endpoint], self.ctx.password,
                                  timeout=CONNECT_TIMEOUT_S,
                                  application_name=f"lab-restart-{self.endpoint}")
                try:
                    conn.execute("select 1")
                finally:
                    conn.close()
            except pg.Error as exc:
                error = classify(exc)[0]
            self.log.append((started, time.monotonic(), error))
            self.stop.wait(PAUSE_S)

    def ok_since(self, t: float) -> tuple[float, float] | None:
        """The first request that started at or after ``t`` and succeeded: (start, end)."""
        return next(((start, end) for start, end, error in list(self.log)
                     if start >= t and error is None), None)


def observe(req: Requests, began: float, done: float) -> Observation:
    failed = [(start, end, error) for start, end, error in req.log if error is not None]
    total = len(req.log)
    took = f"the restart took {done - began:.2f} s"
    if not failed:
        return Observation(UNAFFECTED, f"{total} requests, none failed; {took}")
    classes = ", ".join(f"{cls} x{n}" for cls, n in Counter(e for *_, e in failed).items())
    first_ok = req.ok_since(failed[-1][0])
    span = (f"{len(failed)} of {total} requests failed ({classes}) from "
            f"+{failed[0][0] - began:.2f} s to +{failed[-1][1] - began:.2f} s; {took}")
    if first_ok is None:
        return Observation(STILL_FAILING, span)
    start, end = first_ok
    return Observation(RECOVERED, f"{span}; first success +{end - began:.2f} s after the "
                                  f"restart began (that request started at "
                                  f"+{start - began:.2f} s and took {end - start:.2f} s)")


def run(ctx: Context) -> dict[str, Observation]:
    lanes = ctx.experiment.lanes
    clients = {lane.key: Requests(ctx, lane.endpoint) for lane in lanes}
    fault = parse_fault(FAULT)
    fctx = actions.context_for_lab(ctx.cfg, ctx.state, ctx.eps)
    try:
        for req in clients.values():
            req.thread.start()
        time.sleep(BASELINE_S)
        began = time.monotonic()
        answer = actions.inject(fault, fctx)  # docker restart: returns once it runs again
        done = time.monotonic()
        if not answer["ok"]:
            raise RuntimeError(f"could not restart the pooler: {answer['error']}")
        deadline = done + SETTLE_S
        while time.monotonic() < deadline and any(req.ok_since(done) is None
                                                  for req in clients.values()):
            time.sleep(0.1)
    finally:
        for req in clients.values():
            req.stop.set()
        for req in clients.values():
            if req.thread.ident is not None:  # started
                req.thread.join(CONNECT_TIMEOUT_S + 2)
        # A fault that failed half-way: start the container if it is not running (idempotent).
        actions.recover(parse_fault("0s:pooler:kill"), fctx)
        fctx.close()
        # The admin consoles were connections to the old PgBouncer processes: the restore
        # afterwards opens new ones.
        ctx.close_admins()
    return {key: observe(req, began, done) for key, req in clients.items()}


EXPERIMENT = Experiment(
    name="pooler-restart",
    title="Pooler restart under serverless load",
    question="A serverless client connects per request, over and over, to every endpoint while "
             "the shared pooler's container restarts (a Supavisor deploy or crash). Which "
             "endpoints fail, with what, and for how long?",
    why="Session and transaction mode are two PgBouncers in one container (one Supavisor "
        "cluster): while it restarts nothing listens on 5432 and 6543, so every new "
        "connection is refused at once (connection_refused) for about a second, then connects "
        "again; any connection open through it at that moment is lost. Direct connections "
        "and the dedicated pooler, which lives beside Postgres, do not go through it and do "
        "not notice. A serverless function, which connects per invocation, sees the restart "
        "as a burst of failed invocations; a persistent server sees it once per pooled "
        "connection, as connection_lost.",
    fix="In serverless functions retry connection_refused and connection_lost with backoff "
        "and jitter (a second or two is enough here), and only then fail the request; in app "
        "servers use a pool that checks or replaces broken connections. Keep a direct or "
        "dedicated path for work that must not wait on the shared pooler.",
    lanes=endpoint_lanes(*ALL4),
    expect={"direct": UNAFFECTED, "session": RECOVERED, "transaction": RECOVERED,
            "dedicated": UNAFFECTED},
    run=run,
)
