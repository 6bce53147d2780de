"""Backend identity across transactions: the one fact behind every transaction-mode pitfall."""

from lab.experiments import (
    ALL4,
    POOL2,
    Context,
    Experiment,
    Lane,
    Observation,
    backends,
    endpoint_lanes,
    later_transaction,
    per_lane,
)

SAME, OTHER = "same-backend", "other-backend"


@per_lane
def run(ctx: Context, lane: Lane) -> Observation:
    before, after, _, _, _ = later_transaction(ctx, lane.endpoint, "select 1", "select 1")
    return Observation(SAME if before == after else OTHER, backends(before, after))


EXPERIMENT = Experiment(
    name="backend-identity",
    title="Backend identity across transactions",
    question="Two transactions on one connection, with another client in between: "
             "do they run on the same Postgres backend?",
    why="Session mode and direct keep one backend per client for its whole "
        "connection. Transaction mode lends a backend for one transaction only: "
        "when another client takes it, the next transaction runs on another backend.",
    fix="Keep no state between transactions in transaction mode; anything that must "
        "outlive a transaction needs session mode or a direct connection.",
    lanes=endpoint_lanes(*ALL4),
    expect={"direct": SAME, "session": SAME, "transaction": OTHER, "dedicated": OTHER},
    run=run,
    settings=POOL2,
)
