"""Session advisory locks: unlock in a later transaction."""

from lab.experiments import (
    ALL4,
    POOL2,
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

UNLOCKED, LOCK_LEAKED = "unlocked", "lock-leaked"
LOCK_KEY = 7_317_001


@per_lane
def run(ctx: Context, lane: Lane) -> Observation:
    before, after, result, error, notices = later_transaction(
        ctx, lane.endpoint, f"select pg_advisory_lock({LOCK_KEY})",
        f"select pg_advisory_unlock({LOCK_KEY})")
    if error is not None:
        return Observation("error", describe_error(error))
    watcher = ctx.connect("direct")
    held = watcher.execute(
        "select count(*) from pg_locks where locktype = 'advisory' and objid = %s",
        (LOCK_KEY,)).fetchone()[0]
    unlocked = result[0][0]
    detail = f"{backends(before, after)}: unlock returned {unlocked}"
    if notices:
        detail += f" ({notices[0]})"
    detail += f"; locks still held: {held}"
    return Observation(UNLOCKED if unlocked and held == 0 else LOCK_LEAKED, detail)


EXPERIMENT = Experiment(
    name="advisory-lock",
    title="Session advisory locks",
    question="pg_advisory_lock(k) in one transaction, pg_advisory_unlock(k) in the "
             "next: is the lock released?",
    why="A session lock belongs to the backend. The unlock runs on another backend, "
        "returns false with a WARNING, and the lock stays held by a pooled backend "
        "that no client controls.",
    fix="pg_advisory_xact_lock (released at commit) inside one transaction, or "
        "session mode / direct for session locks.",
    lanes=endpoint_lanes(*ALL4),
    expect={"direct": UNLOCKED, "session": UNLOCKED, "transaction": LOCK_LEAKED,
            "dedicated": LOCK_LEAKED},
    run=run,
    settings=POOL2,
)
