"""SQL PREPARE in one transaction, EXECUTE in the next."""

from lab.experiments import ALL4, MISSING, POOL2, WORKS, Experiment, endpoint_lanes, state_lost

EXPERIMENT = Experiment(
    name="sql-prepare",
    title="SQL PREPARE / EXECUTE across transactions",
    question="PREPARE in one transaction, EXECUTE in the next: does it work?",
    why="A prepared statement lives in the backend that prepared it; the next "
        "transaction may run on another backend (poolers do not track SQL PREPARE).",
    fix="Never use SQL-level PREPARE through a transaction pooler; use session mode "
        "or direct.",
    lanes=endpoint_lanes(*ALL4),
    expect={"direct": WORKS, "session": WORKS, "transaction": MISSING,
            "dedicated": MISSING},
    run=state_lost("PREPARE pooler_lab_stmt AS SELECT 1", "EXECUTE pooler_lab_stmt",
                   MISSING, "26000"),
    settings=POOL2,
)
