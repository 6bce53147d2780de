"""A temporary table made in one transaction, read in the next."""

from lab.experiments import ALL4, MISSING, POOL2, WORKS, Experiment, endpoint_lanes, state_lost

EXPERIMENT = Experiment(
    name="temp-table",
    title="Temporary tables",
    question="CREATE TEMP TABLE in one transaction, SELECT from it in the next: "
             "is it there?",
    why="Temporary tables belong to the backend's session; the next transaction runs "
        "on another backend (and the table stays behind on the first one).",
    fix="CREATE TEMP TABLE ... ON COMMIT DROP and use it inside one transaction; or "
        "session mode / direct.",
    lanes=endpoint_lanes(*ALL4),
    expect={"direct": WORKS, "session": WORKS, "transaction": MISSING,
            "dedicated": MISSING},
    run=state_lost("CREATE TEMP TABLE pooler_lab_tmp (x int)",
                   "SELECT count(*) FROM pooler_lab_tmp", MISSING, "42P01"),
    settings=POOL2,
)
