"""pg_dump through each endpoint: does the dump work, and what does it leave behind?"""

from lab import engine
from lab.config import ENDPOINTS
from lab.experiments import (
    ALL4,
    Context,
    Experiment,
    Lane,
    Observation,
    backends,
    endpoint_lanes,
    per_lane,
    pid,
)

POOL1 = {"default_pool_size": 1}
DEFAULT_PATH = '"$user", public'
KEPT = "dump ok, search_path kept"


def pg_dump(ctx: Context, endpoint: str) -> tuple[int, str]:
    """The lab image's own pg_dump (the server's major version; a host's older pg_dump
    refuses a newer server), run in the db container against the endpoint's service."""
    db = engine.container(ctx.cfg.project, "db")
    host = "127.0.0.1" if ENDPOINTS[endpoint].host == "db" else ENDPOINTS[endpoint].host
    code, output = db.exec_run(
        ["pg_dump", "--schema-only", "-h", host, "-p", str(ENDPOINTS[endpoint].container_port),
         "-U", ctx.eps[endpoint].user, "-d", ctx.eps[endpoint].database],
        environment={"PGPASSWORD": ctx.password, "PGAPPNAME": "pooler-lab-pg-dump"},
        user="postgres", demux=True)
    out, err = output
    return code, (err or b"").decode(errors="replace").strip() or f"{len(out or b'')} bytes"


@per_lane
def run(ctx: Context, lane: Lane) -> Observation:
    first = ctx.connect(lane.endpoint)
    before = pid(first)  # pool size 1: the backend pg_dump gets next
    first.close()
    code, text = pg_dump(ctx, lane.endpoint)
    if code != 0:
        return Observation("dump failed", text.splitlines()[0] if text else f"exit {code}")
    app = ctx.connect(lane.endpoint)  # the application's next client, on the same pool
    after = pid(app)
    path = app.execute("show search_path").fetchone()[0]
    state = "search_path kept" if path == DEFAULT_PATH else f"search_path {path} leaked"
    return Observation(f"dump ok, {state}", f"pg_dump: {text}; the next client: "
                                           f"{backends(before, after)}, search_path {path}")


EXPERIMENT = Experiment(
    name="pg-dump",
    title="pg_dump through each endpoint",
    question="pg_dump --schema-only through each endpoint, then the application's next "
             "client on the same pool: does the dump work, and which search_path does that "
             "client get?",
    why="pg_dump reads everything inside one repeatable-read transaction, so it works "
        "through every endpoint, transaction mode included. Before that transaction it sets "
        "session state (set_config('search_path', '', false), statement_timeout = 0, "
        "row_security = off, ...), which a transaction pooler could hand to the next client; "
        "here it does not, because pg_dump disconnects with its transaction still open and "
        "PgBouncer closes a server connection its client left inside a transaction: the next "
        "client gets a new backend (the detail shows it). Under load, pg_dump's SETs before "
        "BEGIN may still run on a backend other clients then use (not shown here). A host's "
        "pg_dump older than the server refuses it (server version mismatch): the lab runs the "
        "image's own.",
    fix="Dump and restore on the direct connection or session mode, with a pg_dump of the "
        "server's major version; through a transaction pooler it works, but its session "
        "settings can reach the application's clients.",
    lanes=endpoint_lanes(*ALL4),
    expect={lane: KEPT for lane in ALL4},
    run=run,
    settings={"session": POOL1, "transaction": POOL1, "dedicated": POOL1},
)
