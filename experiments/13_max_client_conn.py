"""One client more than a pooler's max_client_conn."""

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


@per_lane
def run(ctx: Context, lane: Lane) -> Observation:
    clients = len(pg.rows(ctx.admin(lane.endpoint), "SHOW CLIENTS"))
    limit = clients + 2
    ctx.set(lane.endpoint, "max_client_conn", limit)
    opened, refused = connect_until_refused(ctx, lane.endpoint, limit + 3)
    if refused is None:
        return Observation("never refused", f"{opened} clients connected with "
                                            f"max_client_conn {limit}")
    text = server_message(refused)
    return Observation(text, f"max_client_conn set to {limit} ({clients} connected, "
                             f"admin console included): {opened} more connected, the next "
                             f"one got: {text}")


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
)
