"""LOAD a library in one transaction; its settings in the next."""

from lab.experiments import ALL4, POOL2, WORKS, Experiment, endpoint_lanes, state_lost

NOT_LOADED = "not-loaded"

EXPERIMENT = Experiment(
    name="load-library",
    title="LOAD a library in one transaction, use it in the next",
    question="LOAD 'auto_explain' in one transaction: are its settings there in the "
             "next one?",
    why="LOAD brings a library into the backend that ran it, for that backend's "
        "life. The next transaction may run on another backend, which never loaded "
        "it: its settings are unknown there (42704).",
    fix="Load libraries for every backend: session_preload_libraries (ALTER ROLE ... "
        "SET session_preload_libraries) or shared_preload_libraries; or session mode / "
        "direct.",
    lanes=endpoint_lanes(*ALL4),
    expect={"direct": WORKS, "session": WORKS, "transaction": NOT_LOADED,
            "dedicated": NOT_LOADED},
    run=state_lost("LOAD 'auto_explain'", "SHOW auto_explain.log_min_duration",
                   NOT_LOADED, "42704"),
    settings=POOL2,
)
