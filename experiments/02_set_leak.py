"""SET leaks between clients in transaction mode, and SET LOCAL as the fix."""

from lab.experiments import (
    ALL4,
    ISOLATED,
    LEAKED,
    POOL2,
    Context,
    Experiment,
    Lane,
    Observation,
    endpoint_lanes,
    per_lane,
)

SET_LOCAL = "transaction-set-local"


@per_lane
def run(ctx: Context, lane: Lane) -> Observation:
    endpoint = lane.endpoint
    a = ctx.connect(endpoint, autocommit=lane.key != SET_LOCAL)
    if lane.key == SET_LOCAL:
        a.execute("SET LOCAL statement_timeout = '4321ms'")
        seen_by_a = a.execute("show statement_timeout").fetchone()[0]
        a.commit()
    else:
        a.execute("SET statement_timeout = '4321ms'")
        seen_by_a = a.execute("show statement_timeout").fetchone()[0]
    b = ctx.connect(endpoint)
    seen_by_b = b.execute("show statement_timeout").fetchone()[0]
    detail = f"A set 4321ms (A sees {seen_by_a}); client B sees {seen_by_b}"
    return Observation(LEAKED if seen_by_b == "4321ms" else ISOLATED, detail)


EXPERIMENT = Experiment(
    name="set-leak",
    title="SET leaks between clients in transaction mode",
    question="Client A runs SET statement_timeout = '4321ms'. Which statement_timeout "
             "does client B see?",
    why="A plain SET changes the backend, not the client. In transaction mode the "
        "backend goes back to the pool with A's setting, and the next client gets it "
        "(transaction-mode PgBouncer runs no reset query between clients).",
    fix="SET LOCAL inside a transaction, ALTER ROLE ... SET, or a connection startup "
        "parameter; never a plain SET through a transaction pooler.",
    lanes=(*endpoint_lanes(*ALL4),
           Lane(SET_LOCAL, "transaction",
                "Shared pooler, transaction mode, with the fix SET LOCAL")),
    expect={"direct": ISOLATED, "session": ISOLATED, "transaction": LEAKED,
            "dedicated": LEAKED, SET_LOCAL: ISOLATED},
    run=run,
    settings=POOL2,
)
