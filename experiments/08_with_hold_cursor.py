"""A WITH HOLD cursor declared in one transaction, fetched from in a later one."""

from lab.experiments import ALL4, MISSING, POOL2, WORKS, Experiment, endpoint_lanes, state_lost

EXPERIMENT = Experiment(
    name="with-hold-cursor",
    title="WITH HOLD cursors",
    question="DECLARE ... CURSOR WITH HOLD, then FETCH in a later transaction: "
             "does it fetch?",
    why="A held cursor outlives its transaction but not its backend.",
    fix="Declare and fetch the cursor inside one transaction, or use session mode / "
        "direct.",
    lanes=endpoint_lanes(*ALL4),
    expect={"direct": WORKS, "session": WORKS, "transaction": MISSING,
            "dedicated": MISSING},
    run=state_lost("DECLARE pooler_lab_cur CURSOR WITH HOLD FOR "
                   "SELECT generate_series(1, 3)",
                   "FETCH 1 FROM pooler_lab_cur", MISSING, "34000"),
    settings=POOL2,
)
