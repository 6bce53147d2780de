"""TLS on every endpoint: what a connection pays for it, what pg_stat_ssl shows, what
verify-full refuses, and what ssl_enforce does to a plaintext client."""

import statistics
import time

from lab import pg
from lab.classify import classify
from lab.config import LabConfig
from lab.experiments import Context, Experiment, Lane, Observation, endpoint_lanes

CONNECTS = 15  # per endpoint and sslmode, interleaved
COSTS_MORE = "TLS connect slower"
REFUSED = "plaintext refused (tls)"
SSL_TRUE = "pg_stat_ssl.ssl = true"
WRONG_NAME = "wrong.example"
MISMATCH = "tls: certificate does not match the host name"
ENDPOINTS = ("direct", "session", "transaction", "dedicated")


def expected(cfg: LabConfig) -> dict[str, str]:
    plain = REFUSED if cfg.ssl_enforce else COSTS_MORE
    return {**{e: plain for e in ENDPOINTS}, "direct-backend": SSL_TRUE,
            "transaction-backend": SSL_TRUE, "direct-wrong-name": MISMATCH}


def connect_ms(ctx: Context, endpoint: str, sslmode: str) -> float:
    started = time.perf_counter()
    conn = ctx.connect(endpoint, sslmode=sslmode)
    elapsed = (time.perf_counter() - started) * 1000
    conn.execute("select 1")
    conn.close()
    return elapsed


def cost(ctx: Context, endpoint: str) -> Observation:
    times: dict[str, list[float]] = {"verify-full": [], "disable": []}
    for i in range(CONNECTS):
        for mode in (("verify-full", "disable") if i % 2 == 0 else ("disable", "verify-full")):
            try:
                times[mode].append(connect_ms(ctx, endpoint, mode))
            except pg.Error as exc:
                cls, _, message = classify(exc)
                if mode == "disable" and cls == "tls":
                    return Observation(REFUSED, f"sslmode=disable: {message}")
                raise
    tls, plain = statistics.median(times["verify-full"]), statistics.median(times["disable"])
    outcome = COSTS_MORE if tls > plain else "TLS connect no slower"
    return Observation(outcome, f"median connect {tls:.2f} ms with TLS (verify-full), "
                                f"{plain:.2f} ms without: {tls - plain:+.2f} ms per connection")


def backend_ssl(ctx: Context, endpoint: str) -> Observation:
    conn = ctx.connect(endpoint)
    row = conn.execute("select ssl, version, cipher from pg_stat_ssl "
                       "where pid = pg_backend_pid()").fetchone()
    whose = "the client's own backend" if endpoint == "direct" else \
        "the pooler's server connection that ran the query"
    return Observation(f"pg_stat_ssl.ssl = {str(row[0]).lower()}",
                       f"{whose}: {row[1]} {row[2]}")


def wrong_name(ctx: Context) -> Observation:
    try:
        ctx.connect("direct", verify_as=WRONG_NAME).close()
    except pg.Error as exc:
        cls, _, message = classify(exc)
        if cls == "tls" and "does not match host name" in message:
            return Observation(MISMATCH, message)
        return Observation(f"{cls}: {message}")
    return Observation("connected", f"verify-full accepted the name {WRONG_NAME}")


def run(ctx: Context) -> dict[str, Observation]:
    result = {e: cost(ctx, e) for e in ENDPOINTS}
    result["direct-backend"] = backend_ssl(ctx, "direct")
    result["transaction-backend"] = backend_ssl(ctx, "transaction")
    result["direct-wrong-name"] = wrong_name(ctx)
    return result


EXPERIMENT = Experiment(
    name="tls",
    title="TLS on every endpoint",
    question=f"{CONNECTS} connections per endpoint with sslmode=verify-full and {CONNECTS} "
             "with sslmode=disable, interleaved: which connects faster, and does "
             "pg_stat_ssl say the connection is encrypted? What does a client that checks the "
             "certificate against another host name see?",
    why="Postgres and both poolers serve TLS with the lab's own CA, as Supabase serves its "
        "endpoints. The handshake adds round trips and a private-key operation to every "
        "connection: a serverless function that connects per request pays it every time, a "
        "pooled app server once. pg_stat_ssl (the join in Supabase's monitoring queries) "
        "shows ssl for the direct client's backend, and for a pooler's server connection "
        "because the poolers speak TLS to Postgres too. verify-full checks the CA and the "
        "host name, so a client using a name the certificate does not carry is refused "
        "before it sends its password. With ssl_enforce on (lab up --ssl-enforce), a "
        "plaintext client is refused on every endpoint: PgBouncer says \"SSL required\", "
        "Postgres \"no pg_hba.conf entry ... no encryption\".",
    fix="Connect with sslmode=verify-full and the lab's CA (lab connect --ssl-cert FILE), the "
        "host name the certificate carries; to stop paying the handshake per request, keep "
        "connections open (a pool in a persistent server) instead of turning TLS off.",
    lanes=(
        *endpoint_lanes(*ENDPOINTS),
        Lane("direct-backend", "direct", "Direct: the client's backend in pg_stat_ssl"),
        Lane("transaction-backend", "transaction",
             "Transaction pooler: its server connection in pg_stat_ssl"),
        Lane("direct-wrong-name", "direct",
             f"Direct, verify-full against the name {WRONG_NAME}"),
    ),
    expect=expected,
    run=run,
)
