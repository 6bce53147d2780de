"""Protocol-level prepared statements as drivers meet them: a second client's statement of the
same name (42P05), then a statement bound on a backend that never saw it (26000); the drivers'
own statement names, their documented fixes, and the poolers' prepared-statement support."""

from collections.abc import Callable
from dataclasses import dataclass

from lab import pg
from lab.config import ENDPOINTS, LabConfig
from lab.experiments import (
    MISSING,
    POOL2,
    WORKS,
    Context,
    Experiment,
    Lane,
    Observation,
    backends,
    describe_error,
    per_lane,
    pid,
)

EXISTS = "already-exists"  # 42P05: the backend holds another client's statement of that name
CLASH = f"{EXISTS}, then {MISSING}"  # what a driver meets first, and then
SHARED_ON, DEDICATED_ON = 200, 100  # max_prepared_statements of the switch-on lanes


@dataclass(frozen=True)
class Driver:
    """How a driver runs a statement the first time (prepare, then run) and the next time."""

    what: str  # for the detail: the driver and the statement name it sends
    first: Callable[[object, str, object], object]
    again: Callable[[object, str, object], object]
    prepare_threshold: int | None = None  # psycopg's own setting for the connection
    name: str = ""  # the statement name, for the hand-made Parse


def _psycopg(conn, query: str, value: object) -> object:
    return conn.execute(query.replace("$1", "%s"), (value,)).fetchone()[0]


def _named(driver: str, name: str) -> Driver:
    """A driver that names its statements itself: Parse + Sync, then Bind + Execute + Sync."""

    def first(conn, query, value):
        pg.protocol_parse(conn, name, query)
        return pg.protocol_bind(conn, name, value)[0][0]

    def again(conn, query, value):
        return pg.protocol_bind(conn, name, value)[0][0]

    return Driver(f'{driver}, "{name}" (Parse, later Bind)', first, again, name=name)


def _unnamed(conn, query: str, value: object) -> object:
    return pg.protocol_unnamed(conn, query, value)[0][0]


PSYCOPG = Driver('psycopg prepare_threshold=0, "_pg3_0"', _psycopg, _psycopg,
                 prepare_threshold=0)
DRIVERS = {
    # psycopg numbers its statements per connection: every new connection's first is _pg3_0.
    "psycopg": PSYCOPG,
    # asyncpg numbers them per process: each serverless instance's first is __asyncpg_stmt_1__.
    "asyncpg": _named("asyncpg", "__asyncpg_stmt_1__"),
    # Prisma's engine (tokio-postgres) too: s0, s1, ... per process.
    "prisma": _named("Prisma", "s0"),
    "psycopg-fix": Driver("psycopg prepare_threshold=None, unnamed statements", _psycopg,
                          _psycopg),
    "unnamed": Driver("unnamed statements (Parse, Bind, Execute, Sync at once)", _unnamed,
                      _unnamed),
}
# lane key -> driver, and the pooler setting the lane runs under (lanes with one come last:
# a SET lasts until the experiment ends).
LANES = {
    "direct": ("psycopg", None), "session": ("psycopg", None),
    "transaction": ("psycopg", None), "dedicated": ("psycopg", None),
    "transaction-asyncpg": ("asyncpg", None), "transaction-prisma": ("prisma", None),
    "transaction-no-prepare": ("psycopg-fix", None), "transaction-unnamed": ("unnamed", None),
    "transaction-mps-200": ("psycopg", ("transaction", SHARED_ON)),
    "dedicated-mps-100": ("psycopg", ("dedicated", DEDICATED_ON)),
}
A_QUERY = "select $1::int + 1"
B_QUERY = "select $1::text || ' from client B'"


def _step(fn: Callable[[], object], error_token: str, sqlstate: str) -> tuple[str, str]:
    try:
        return WORKS, repr(fn())
    except pg.Error as exc:
        token = error_token if getattr(exc, "sqlstate", None) == sqlstate else "error"
        return token, describe_error(exc)


@per_lane
def run(ctx: Context, lane: Lane) -> Observation:
    driver_key, setting = LANES[lane.key]
    driver = DRIVERS[driver_key]
    if setting is not None:
        ctx.set(setting[0], "max_prepared_statements", setting[1])
    # Client A prepares its first statement and runs it: one backend, released at once.
    a = ctx.connect(lane.endpoint, prepare_threshold=driver.prepare_threshold)
    driver.first(a, A_QUERY, 1)
    # Client B (another instance of the app) prepares its first statement, of the same name:
    # a transaction pooler hands it A's backend, where that name is taken.
    b = ctx.connect(lane.endpoint, prepare_threshold=driver.prepare_threshold)
    clash, clash_text = _step(lambda: driver.first(b, B_QUERY, "b"), EXISTS, "42P05")
    b.close()  # in session mode B's backend is free again, for C
    pid_before = pid(a)
    # Client C holds that backend in a transaction; A runs its statement again, which the
    # driver only binds: a transaction pooler gives A another backend, which never saw it.
    c = ctx.connect(lane.endpoint, autocommit=False)
    c.execute("select 1")
    try:
        missing, missing_text = _step(lambda: driver.again(a, A_QUERY, 2), MISSING, "26000")
        pid_after = pid(a)
    finally:
        c.rollback()
    outcome = WORKS if clash == missing == WORKS else f"{clash}, then {missing}"
    where = f"; {setting[0]} max_prepared_statements={setting[1]}" if setting else ""
    return Observation(outcome, f"{driver.what}{where}: client B's first statement: "
                                f"{clash_text}; client A again ({backends(pid_before, pid_after)})"
                                f": {missing_text}")


def expect(cfg: LabConfig) -> dict[str, str]:
    shared = WORKS if cfg.shared_max_prepared_statements > 0 else CLASH
    dedicated = WORKS if cfg.max_prepared_statements > 0 else CLASH
    return {"direct": WORKS, "session": WORKS, "transaction": shared, "dedicated": dedicated,
            "transaction-asyncpg": shared, "transaction-prisma": shared,
            "transaction-no-prepare": WORKS, "transaction-unnamed": WORKS,
            "transaction-mps-200": WORKS, "dedicated-mps-100": WORKS}


TX, DED = ENDPOINTS["transaction"].label, ENDPOINTS["dedicated"].label
EXPERIMENT = Experiment(
    name="protocol-prepared",
    title="Protocol-level prepared statements as drivers meet them",
    question="Two app instances whose driver prepares its statements (psycopg "
             "prepare_threshold=0, asyncpg, Prisma) share a pooler: what does each see?",
    why="Drivers name their statements predictably (psycopg _pg3_0 per connection, asyncpg "
        "__asyncpg_stmt_1__ and Prisma s0 per process), Parse them once and later only Bind "
        "them. Through a transaction pooler that does not track them, client B's first Parse "
        "lands on the backend where client A's statement of the same name lives: 'prepared "
        "statement \"_pg3_0\" already exists' (42P05). Client A's next Bind lands on another "
        "backend: 'prepared statement \"_pg3_0\" does not exist' (26000). Supavisor tracks them "
        "only behind its named_prepared_statements flag (off by default; here "
        "shared_max_prepared_statements), Supabase's dedicated PgBouncer not at all "
        "(max_prepared_statements = 0); PgBouncer 1.21+ with max_prepared_statements > 0 "
        "renames them per backend and re-prepares them where needed (the -mps- lanes flip it "
        "at runtime through the admin console). SQL PREPARE is never tracked: sql-prepare.",
    fix="Turn the driver's statement cache off: psycopg prepare_threshold=None, asyncpg "
        "statement_cache_size=0, postgres.js prepare: false, Prisma ?pgbouncer=true (drop it "
        "again once the pooler tracks statements: its DEALLOCATE ALL breaks the tracking). "
        "Or use session mode or direct, or a pooler that tracks them "
        "(shared_max_prepared_statements / max_prepared_statements > 0).",
    lanes=(
        Lane("direct", "direct", ENDPOINTS["direct"].label + ", psycopg"),
        Lane("session", "session", ENDPOINTS["session"].label + ", psycopg"),
        Lane("transaction", "transaction",
             TX + ", psycopg (as the lab is set; Supavisor: off by default)"),
        Lane("dedicated", "dedicated", DED + ", psycopg (as the lab is set; Supabase: "
             "max_prepared_statements = 0)"),
        Lane("transaction-asyncpg", "transaction", TX + ", asyncpg's __asyncpg_stmt_1__"),
        Lane("transaction-prisma", "transaction", TX + ", Prisma's s0"),
        Lane("transaction-no-prepare", "transaction",
             TX + ", the psycopg fix: prepare_threshold=None"),
        Lane("transaction-unnamed", "transaction",
             TX + ", unnamed statements: the asyncpg, postgres.js and Prisma fixes"),
        Lane("transaction-mps-200", "transaction",
             TX + f", the Supavisor flag on: max_prepared_statements={SHARED_ON}"),
        Lane("dedicated-mps-100", "dedicated",
             DED + f", max_prepared_statements={DEDICATED_ON} (PgBouncer 1.21+)"),
    ),
    expect=expect,
    run=run,
    settings=POOL2,
    also_changes=f"max_prepared_statements on the transaction pooler ({SHARED_ON}) and the "
                 f"dedicated pooler ({DEDICATED_ON}) for their last lanes",
)
