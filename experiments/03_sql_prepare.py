"""SQL PREPARE in one transaction, EXECUTE in the next."""

from lab.config import ENDPOINTS
from lab.experiments import (
    ALL4,
    MISSING,
    POOL2,
    WORKS,
    Context,
    Experiment,
    Lane,
    Observation,
    backends,
    describe_error,
    endpoint_lanes,
    later_transaction,
    per_lane,
)

SHARED_ON = 200  # the transaction pooler's max_prepared_statements in the switch-on lane
PREPARE, EXECUTE = "PREPARE pooler_lab_stmt AS SELECT 1", "EXECUTE pooler_lab_stmt"


@per_lane
def run(ctx: Context, lane: Lane) -> Observation:
    if lane.key == "transaction-mps-200":
        ctx.set("transaction", "max_prepared_statements", SHARED_ON)
    before, after, result, error, _ = later_transaction(ctx, lane.endpoint, PREPARE, EXECUTE)
    where = backends(before, after)
    if error is None:
        return Observation(WORKS, f"{where}: {EXECUTE} -> {result}")
    if getattr(error, "sqlstate", None) == "26000":
        return Observation(MISSING, f"{where}: {describe_error(error)}")
    return Observation("error", f"{where}: {describe_error(error)}")


EXPERIMENT = Experiment(
    name="sql-prepare",
    title="SQL PREPARE / EXECUTE across transactions",
    question="PREPARE in one transaction, EXECUTE in the next: does it work?",
    why="A prepared statement lives in the backend that prepared it; the next "
        "transaction may run on another backend. Poolers never track SQL PREPARE: not "
        "PgBouncer with max_prepared_statements > 0 (the last lane), not Supavisor, whose "
        "named_prepared_statements flag covers protocol-level statements only (SQL PREPARE "
        "as a simple query: EPSSIMPLEQUERY).",
    fix="Never use SQL-level PREPARE through a transaction pooler; use session mode "
        "or direct.",
    lanes=(*endpoint_lanes(*ALL4),
           Lane("transaction-mps-200", "transaction", ENDPOINTS["transaction"].label
                + f", prepared statements on (max_prepared_statements={SHARED_ON})")),
    expect={"direct": WORKS, "session": WORKS, "transaction": MISSING,
            "dedicated": MISSING, "transaction-mps-200": MISSING},
    run=run,
    settings=POOL2,
    also_changes=f"max_prepared_statements on the transaction pooler ({SHARED_ON}) for the "
                 "last lane",
)
