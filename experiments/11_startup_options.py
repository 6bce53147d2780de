"""A setting in the connection string's options, through each pooler."""

from lab import pg
from lab.experiments import (
    ALL4,
    LEAKED,
    POOL2,
    Context,
    Experiment,
    Lane,
    Observation,
    describe_error,
    endpoint_lanes,
    per_lane,
    pid,
    server_message,
)

APPLIED = "applied"
STARTUP_TIMEOUT = "4321ms"
# PgBouncer's text (client.c) for a parameter in options that it neither tracks nor ignores.
STARTUP_REFUSED = "unsupported startup parameter in options: statement_timeout"


@per_lane
def run(ctx: Context, lane: Lane) -> Observation:
    try:
        conn = ctx.connect(lane.endpoint, options=f"-c statement_timeout={STARTUP_TIMEOUT}")
    except pg.Error as exc:  # refused at login: the pooler's own text is the outcome
        return Observation(server_message(exc), f"at connect: {describe_error(exc)}")
    pid(conn)  # a transaction first, so a pooled backend is in use
    value = conn.execute("show statement_timeout", prepare=False).fetchone()[0]
    return Observation(APPLIED if value == STARTUP_TIMEOUT else LEAKED,
                       f"statement_timeout = {value}")


EXPERIMENT = Experiment(
    name="startup-options",
    title="A setting in the connection string (options=-c ...)",
    question=f"A client connects with options='-c statement_timeout={STARTUP_TIMEOUT}'"
             ": which endpoints accept it, and does the setting hold?",
    why="Postgres applies startup options to the client's backend. A pooler shares "
        "backends, so PgBouncer (1.20+) accepts in options only the parameters it "
        "tracks per client and sets on whichever backend the client gets "
        "(client_encoding, DateStyle, TimeZone, standard_conforming_strings, "
        "application_name, plus track_extra_parameters: IntervalStyle by default) and "
        "refuses any other at login, in session mode too.",
    fix="ALTER ROLE ... SET statement_timeout (or ALTER DATABASE), SET LOCAL inside "
        "each transaction, or add the parameter to PgBouncer's track_extra_parameters "
        "(1.20+) where you run the pooler yourself.",
    lanes=endpoint_lanes(*ALL4),
    expect={"direct": APPLIED, "session": STARTUP_REFUSED,
            "transaction": STARTUP_REFUSED, "dedicated": STARTUP_REFUSED},
    run=run,
    settings=POOL2,
)
