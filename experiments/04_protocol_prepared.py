"""Protocol-level prepared statements through each pooler, with and without pooler support."""

from lab import pg
from lab.config import ENDPOINTS
from lab.experiments import (
    MISSING,
    POOL2,
    POOLERS,
    WORKS,
    Context,
    Experiment,
    Lane,
    Observation,
    backends,
    describe_error,
    pid,
)


def run(ctx: Context) -> dict[str, Observation]:
    result = {}
    for lane in ctx.experiment.lanes:
        threshold: int | None = 0
        if lane.key == "dedicated-mps-0":
            ctx.set("dedicated", "max_prepared_statements", 0)
        elif lane.key == "dedicated-mps-100":
            ctx.set("dedicated", "max_prepared_statements", 100)
        elif lane.key == "transaction-no-prepare":
            threshold = None
        query = "select %s::int + 1"
        a = ctx.connect(lane.endpoint, prepare_threshold=threshold)
        first = a.execute(query, (1,)).fetchone()[0]
        pid_before = pid(a)
        b = ctx.connect(lane.endpoint, autocommit=False)
        b.execute("select 1")
        try:
            try:
                second = a.execute(query, (2,)).fetchone()[0]
                error = None
            except pg.Error as exc:
                error = exc
            pid_after = pid(a)
        finally:
            b.rollback()
        where = backends(pid_before, pid_after)
        how = "prepare_threshold=None" if threshold is None else "prepare_threshold=0"
        if error is None:
            result[lane.key] = Observation(WORKS, f"{how}; {where}: {first}, then {second}")
        elif getattr(error, "sqlstate", None) == "26000":
            result[lane.key] = Observation(MISSING, f"{how}; {where}: {describe_error(error)}")
        else:
            result[lane.key] = Observation("error", f"{how}; {where}: {describe_error(error)}")
        a.close()
        b.close()
        if lane.endpoint in POOLERS:
            ctx.drain(lane.endpoint)
    return result


EXPERIMENT = Experiment(
    name="protocol-prepared",
    title="Protocol-level prepared statements (psycopg prepare_threshold=0)",
    question="A driver that prepares its statements (psycopg prepare_threshold=0, "
             "asyncpg, pgbench -M prepared): does it work through each pooler?",
    why="The driver prepares a named statement on one backend and later only binds it. "
        "Without pooler support the bind reaches another backend: 'prepared statement "
        "\"_pg3_0\" does not exist'. PgBouncer 1.21+ with max_prepared_statements > 0 "
        "re-prepares it on whichever backend the client gets (this experiment flips the "
        "setting at runtime through the admin console, which PgBouncer allows).",
    fix="Turn the driver's statement cache off (psycopg prepare_threshold=None, asyncpg "
        "statement_cache_size=0, postgres.js prepare:false, Prisma ?pgbouncer=true), "
        "or use session mode, direct, or a pooler with max_prepared_statements > 0.",
    lanes=(
        Lane("direct", "direct", ENDPOINTS["direct"].label),
        Lane("session", "session", ENDPOINTS["session"].label),
        Lane("transaction", "transaction", ENDPOINTS["transaction"].label
             + " (Supavisor: off by default)"),
        Lane("dedicated-mps-0", "dedicated", "Dedicated pooler, max_prepared_statements=0 "
             "(as Supabase documents)"),
        Lane("dedicated-mps-100", "dedicated", "Dedicated pooler, max_prepared_statements=100 "
             "(PgBouncer 1.21+)"),
        Lane("transaction-no-prepare", "transaction",
             "Shared pooler, transaction mode, with the fix prepare_threshold=None"),
    ),
    expect={"direct": WORKS, "session": WORKS, "transaction": MISSING,
            "dedicated-mps-0": MISSING, "dedicated-mps-100": WORKS,
            "transaction-no-prepare": WORKS},
    run=run,
    settings=POOL2,
    also_changes="max_prepared_statements on the dedicated pooler (0, then 100)",
)
