"""Direct connections until Postgres refuses one."""

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

TOO_MANY_CLIENTS_ERROR = "sorry, too many clients already"


@per_lane
def run(ctx: Context, lane: Lane) -> Observation:
    probe = ctx.connect("direct")
    existing = probe.execute(
        "select count(*) from pg_stat_activity where backend_type = 'client backend'"
    ).fetchone()[0]
    limit = int(probe.execute("show max_connections").fetchone()[0])
    opened, refused = connect_until_refused(ctx, "direct", limit + 5)
    if refused is None:
        return Observation("never refused", f"{opened} connections opened")
    text = server_message(refused)
    return Observation(text, f"max_connections {limit}, {existing} client backends "
                             f"already; {opened} more connected, the next one got: {text}")


EXPERIMENT = Experiment(
    name="max-connections",
    title="More direct clients than max_connections",
    question="Direct connections until Postgres refuses one: what does it say?",
    why="Every direct client is a backend. When all max_connections slots are taken "
        "(the postgres role may use the superuser-reserved ones too), Postgres refuses "
        "the next connection.",
    fix="Put a pooler in front (transaction mode for many short-lived clients), or "
        "lower each application's pool; max_connections follows the compute tier.",
    lanes=endpoint_lanes("direct"),
    expect={"direct": TOO_MANY_CLIENTS_ERROR},
    run=run,
)
