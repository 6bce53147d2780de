"""Every pooler saturated: the Postgres backends they hold, against max_connections."""

import threading
import time

from lab.config import LabConfig
from lab.experiments import APP, Context, Experiment, Lane, Observation, first_line


def expected(cfg: LabConfig) -> dict[str, str]:
    p = cfg.pool_size
    shared_session, shared_transaction = (p, p) if cfg.pool_sharing == "per-mode" else (p, 0)
    total = shared_session + shared_transaction + p + 1 + 1
    return {"session": str(shared_session), "transaction": str(shared_transaction),
            "dedicated": str(p), "dedicated-auth": "1", "direct": "1",
            "total": f"{total} <= {cfg.max_connections}"}


class Holder(threading.Thread):
    """A client that opens a transaction and keeps it open until released."""

    def __init__(self, ctx: Context, endpoint: str, app: str, release: threading.Event):
        super().__init__(name=f"experiment-holder-{endpoint}", daemon=True)
        self.ctx, self.endpoint, self.app, self.release = ctx, endpoint, app, release
        self.holding = threading.Event()
        self.error: str | None = None

    def run(self) -> None:
        try:
            conn = self.ctx.connect(self.endpoint, autocommit=False,
                                    application_name=self.app)
            conn.execute("select 1")
            self.holding.set()
            self.release.wait(60)
            conn.rollback()
            conn.close()  # in session mode only a disconnect gives the backend back
        except Exception as exc:  # recorded, shown in the detail
            self.error = first_line(exc)


def run(ctx: Context) -> dict[str, Observation]:
    p = ctx.cfg.pool_size
    release = threading.Event()
    holders: dict[str, list[Holder]] = {}
    try:
        for endpoint in ("session", "transaction", "dedicated"):
            group = [Holder(ctx, endpoint, f"{APP}-{endpoint}", release) for _ in range(p)]
            holders[endpoint] = group
            # One login at a time, as the formula assumes: concurrent logins to the dedicated
            # pooler would each open an auth_query backend (up to pool size of them).
            queued = endpoint == "transaction" and ctx.cfg.pool_sharing == "shared"
            for h in group:
                h.start()
                if not queued:
                    h.holding.wait(10)
            if queued:  # they queue behind session mode's backends in the inner pool
                time.sleep(1)
        observer = ctx.connect("direct")
        seen = ctx.backends_by_origin(observer)
    finally:
        release.set()
    apps = seen.get("app:shared", {})
    dedicated = seen.get("dedicated", {})
    direct = sum(seen.get("direct", {}).values())
    total = sum(sum(seen.get(o, {}).values()) for o in ("direct", "shared", "dedicated"))
    session_n = apps.get(f"{APP}-session", 0)
    transaction_n = apps.get(f"{APP}-transaction", 0)
    holding = {ep: sum(h.holding.is_set() for h in group) for ep, group in holders.items()}
    errors = [h.error for group in holders.values() for h in group if h.error]

    def detail(ep: str) -> str:
        text = f"{holding[ep]} of {p} clients hold a transaction"
        return text + (f"; {errors[0]}" if errors else "")

    result = {
        "session": Observation(str(session_n), detail("session")),
        "transaction": Observation(str(transaction_n), detail("transaction")),
        "dedicated": Observation(str(dedicated.get("postgres", 0)), detail("dedicated")),
        "dedicated-auth": Observation(str(dedicated.get("pgbouncer", 0)),
                                      "the dedicated pooler's auth_query connection (role "
                                      "pgbouncer), idle in its own pool"),
        "direct": Observation(str(direct), "this experiment's observer connection"),
        "total": Observation(f"{total} <= {ctx.cfg.max_connections}"
                             if total <= ctx.cfg.max_connections
                             else f"{total} > {ctx.cfg.max_connections}",
                             f"direct {direct} + shared {sum(seen.get('shared', {}).values())}"
                             f" + dedicated {sum(dedicated.values())}; local socket backends "
                             f"(healthchecks) not counted"),
    }
    for endpoint in ("session", "dedicated", "transaction"):
        if endpoint == "transaction" and ctx.cfg.pool_sharing == "shared":
            # Transaction-mode clients queue in the inner pool behind session mode's backends:
            # closing session mode's server connections lets them through, so they finish.
            ctx.reconnect("session")
        deadline = time.monotonic() + 10
        for h in holders.get(endpoint, []):
            h.join(max(0.0, deadline - time.monotonic()))
    return result


EXPERIMENT = Experiment(
    name="backend-budget",
    title="The backend budget",
    question="With both shared-pooler modes and the dedicated pooler saturated, how "
             "many Postgres backends exist, and does it fit max_connections?",
    why="Supabase's formula: direct + shared-pooler backends + dedicated-pooler "
        "backends <= max_connections. Each pooler opens up to its pool size; with "
        "one pool per mode (Supavisor's code) the shared pooler can hold twice the "
        "pool size, with a shared pool (Supabase's docs since Nov 2025) once. The "
        "dedicated pooler also keeps one backend for its auth_query (role pgbouncer). "
        "Expected numbers follow the lab's settings (here: a default micro lab).",
    fix="Size pools so that 2 x shared + dedicated + your direct clients stay below "
        "max_connections (Studio warns above 80% of it; keep 40% when the Data API is "
        "busy).",
    lanes=(
        Lane("session", "session", "Shared pooler, session mode: backends"),
        Lane("transaction", "transaction",
             "Shared pooler, transaction mode: backends"),
        Lane("dedicated", "dedicated", "Dedicated pooler: backends (role postgres)"),
        Lane("dedicated-auth", "dedicated",
             "Dedicated pooler: auth_query backend (role pgbouncer)"),
        Lane("direct", "direct", "Direct: backends"),
        Lane("total", "direct", "All client backends vs max_connections"),
    ),
    expect=expected,
    run=run,
)
