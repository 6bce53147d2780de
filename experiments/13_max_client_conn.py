"""One client more than a pooler's max_client_conn."""

import time

from lab import pg
from lab.experiments import (
    Context,
    Experiment,
    Lane,
    Observation,
    connect_until_refused,
    endpoint_lanes,
    per_lane,
    server_message,
)

MAX_CLIENT_CONN_ERROR = "no more connections allowed (max_client_conn)"
# The session pooler's own cap (session_overflow = refuse) would refuse client pool_size + 1
# first; with --real-limits it is lifted for the experiment, so max_client_conn is what counts.
SESSION_CAP = "max_user_client_connections"
TOP_UP_TRIES, TOP_UP_PAUSE_S = 20, 0.2


def clients(ctx: Context, endpoint: str) -> int:
    """Clients the pooler holds, its admin console connections included (SHOW CLIENTS)."""
    return len(pg.rows(ctx.admin(endpoint), "SHOW CLIENTS"))


@per_lane
def run(ctx: Context, lane: Lane) -> Observation:
    fill = real_limit if ctx.real_limits else lowered_limit
    refused, what = fill(ctx, lane.endpoint)
    if refused is None:
        return Observation("never refused", f"{what}: none was refused")
    text = server_message(refused)
    return Observation(text, f"{what}: {text}")


def lowered_limit(ctx: Context, endpoint: str) -> tuple[BaseException | None, str]:
    """max_client_conn lowered to 2 above the clients already there: quick, at any tier."""
    existing = clients(ctx, endpoint)
    limit = existing + 2
    ctx.set(endpoint, "max_client_conn", limit)
    # One login at a time: exactly 2 more connect (see connect_until_refused).
    opened, refused = connect_until_refused(ctx, endpoint, limit + 3, concurrency=1)
    return refused, (f"max_client_conn set to {limit} ({existing} connected, admin console "
                     f"included): {opened} more connected, the next one got")


def real_limit(ctx: Context, endpoint: str) -> tuple[BaseException | None, str]:
    """The pooler's own max_client_conn (the tier's max pooler clients): every slot filled,
    counted by the pooler itself while held, then one more."""
    limit = int(ctx.config_value(endpoint, "max_client_conn"))
    if endpoint == "session" and int(ctx.config_value(endpoint, SESSION_CAP)) > 0:
        ctx.set(endpoint, SESSION_CAP, 0)
    existing = clients(ctx, endpoint)
    started = time.monotonic()
    try:
        opened, refused = ctx.connect_many(endpoint, limit - existing + 3)
        took = time.monotonic() - started
        held = clients(ctx, endpoint)
        # A client that comes and goes (the healthcheck's pg_isready, once a second) may have
        # held the last slot when the fill was refused: take the slot it gives back.
        for _ in range(TOP_UP_TRIES):
            if refused is None or held >= limit:
                break
            time.sleep(TOP_UP_PAUSE_S)
            more, _ = ctx.connect_many(endpoint, 1)
            opened, held = opened + more, clients(ctx, endpoint)
        if refused is not None:
            _, refused = ctx.connect_many(endpoint, 1)
    finally:
        ctx.close_all()
    return refused, (f"max_client_conn {limit:,}: {existing} connected before (admin console "
                     f"included) + {opened:,} opened ({took:.1f} s to fill); the pooler held "
                     f"{held:,} clients, and client {held + 1:,} got")


EXPERIMENT = Experiment(
    name="max-client-conn",
    title="More clients than max pooler clients",
    question="What does the client after the last allowed one see?",
    why="Each pooler accepts at most max_client_conn client connections (its admin "
        "console connections included) and refuses the next at login. The experiment "
        "lowers max_client_conn to 2 above the clients already connected.",
    fix="Raise max pooler clients (a bigger compute tier on Supabase), or use fewer "
        "connections per application instance (a client-side pool).",
    lanes=endpoint_lanes("session", "transaction", "dedicated"),
    expect={"session": MAX_CLIENT_CONN_ERROR, "transaction": MAX_CLIENT_CONN_ERROR,
            "dedicated": MAX_CLIENT_CONN_ERROR},
    run=run,
    also_changes="max_client_conn on each pooler (2 above its current clients)",
    real_limits="max_client_conn stays the tier's (200 on micro, 12,000 on 16xl): each pooler "
                "is filled to it, logged-in clients counted by the pooler while held, and the "
                "next client is refused; the session pooler's cap at pool size "
                "(max_user_client_connections) is lifted meanwhile. About a minute per pooler "
                "for 12,000 clients on 2 cores: docs/benchmarks.md.",
)
