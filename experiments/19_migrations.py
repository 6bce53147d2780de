"""A migration tool's run through each endpoint: its session lock and its SET."""

from lab import pg
from lab.experiments import (
    ALL4,
    POOL2,
    Context,
    Experiment,
    Lane,
    Observation,
    endpoint_lanes,
    per_lane,
)

LOCK_KEY = 72_707_369  # the key Prisma Migrate takes with pg_advisory_lock
SCHEMA, TABLE = "lab_migration", "lab_migrated"
PLANNED = f"table in {SCHEMA}, next deploy gets the lock"
BROKEN = "table in public, next deploy blocked"


def where_is(observer, table: str) -> str:
    rows = pg.rows(observer, "select n.nspname from pg_class c join pg_namespace n "
                             "on n.oid = c.relnamespace where c.relname = %s", (table,))
    return ",".join(sorted(str(r["nspname"]) for r in rows)) or "nowhere"


@per_lane
def run(ctx: Context, lane: Lane) -> Observation:
    observer = ctx.connect("direct")
    observer.execute(f"create schema if not exists {SCHEMA}")
    observer.execute(f"drop table if exists {SCHEMA}.{TABLE}, public.{TABLE}")
    try:
        tool = ctx.connect(lane.endpoint)
        notices: list[str] = []
        tool.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
        tool.execute(f"select pg_advisory_lock({LOCK_KEY})")
        tool.execute(f"set search_path = {SCHEMA}")
        app = ctx.connect(lane.endpoint, autocommit=False)  # the application, still serving
        app.execute("select 1")
        try:
            with tool.transaction():
                tool.execute(f"create table {TABLE} (id int)")
            unlocked = tool.execute(f"select pg_advisory_unlock({LOCK_KEY})").fetchone()[0]
            app_path = app.execute("show search_path").fetchone()[0]
        finally:
            app.rollback()
        schema = where_is(observer, TABLE)
        # The next deploy, as a directUrl would run it: may it take the lock?
        nxt = ctx.connect("direct")
        nxt.execute("set lock_timeout = '500ms'")
        try:
            nxt.execute(f"select pg_advisory_lock({LOCK_KEY})")
            nxt.execute(f"select pg_advisory_unlock({LOCK_KEY})")
            lock = "next deploy gets the lock"
        except pg.Error:
            lock = "next deploy blocked"
        detail = (f"unlock returned {unlocked}" + (f" ({notices[0]})" if notices else "")
                  + f"; the application's search_path afterwards: {app_path}")
        return Observation(f"table in {schema}, {lock}", detail)
    finally:
        ctx.close_all()
        cleaner = ctx.connect("direct")
        cleaner.execute(f"drop table if exists {SCHEMA}.{TABLE}, public.{TABLE}")
        cleaner.execute(f"drop schema if exists {SCHEMA}")


EXPERIMENT = Experiment(
    name="migrations",
    title="Migrations through the transaction port",
    question="A migration tool takes its session advisory lock, sets search_path, creates a "
             "table and unlocks, while the application keeps serving on the same pooler. "
             "Where does the table land, and can the next deploy take the lock?",
    why="Migration tools keep session state across statements: Prisma Migrate holds "
        "pg_advisory_lock(72707369) for the run, others SET search_path or lock_timeout, "
        "and their drivers use named prepared statements. Through a transaction pooler each "
        "statement may run on another backend: the table lands in public, the SET and the "
        "lock stay on a backend the application now uses, the unlock returns false, and "
        "the next deploy waits for a lock no client holds (Prisma's P1002 timeout).",
    fix="Run migrations on the direct connection or session mode (Prisma's directUrl, "
        "drizzle-kit's and Flyway's own URL), and keep the transaction port for the "
        "application.",
    lanes=endpoint_lanes(*ALL4),
    expect={"direct": PLANNED, "session": PLANNED, "transaction": BROKEN,
            "dedicated": BROKEN},
    run=run,
    settings=POOL2,
)
