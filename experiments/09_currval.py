"""currval in a later transaction than its nextval."""

from lab import pg
from lab.experiments import (
    ALL4,
    APP,
    POOL2,
    WORKS,
    Context,
    Experiment,
    Observation,
    endpoint_lanes,
    state_lost,
)

NOT_DEFINED = "not-yet-defined"
SEQUENCE = "pooler_lab_experiment_seq"


def run(ctx: Context) -> dict[str, Observation]:
    with pg.connect(ctx.eps["direct"], ctx.password, application_name=APP) as admin:
        admin.execute(f"CREATE SEQUENCE IF NOT EXISTS {SEQUENCE}")
        try:
            return state_lost(f"select nextval('{SEQUENCE}')",
                              f"select currval('{SEQUENCE}')", NOT_DEFINED, "55000")(ctx)
        finally:
            admin.execute(f"DROP SEQUENCE IF EXISTS {SEQUENCE}")


EXPERIMENT = Experiment(
    name="currval",
    title="currval after nextval in another transaction",
    question="nextval('s') in one transaction, currval('s') in the next: "
             "what comes back?",
    why="currval reports the last nextval of this backend's session; on another "
        "backend it is undefined (55000).",
    fix="INSERT ... RETURNING id, or nextval and its use in the same transaction.",
    lanes=endpoint_lanes(*ALL4),
    expect={"direct": WORKS, "session": WORKS, "transaction": NOT_DEFINED,
            "dedicated": NOT_DEFINED},
    run=run,
    settings=POOL2,
    also_changes=f"creates sequence {SEQUENCE} and drops it after",
)
