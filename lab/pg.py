"""psycopg for the orchestrator process (status, sampler, experiments).

psycopg picks its wait function once, at import: imported before gevent patches the process,
it locks in the blocking C function and Locust's greenlets run one at a time. The orchestrator
therefore never loads Locust (it runs Locust as a child process), and this module refuses to be
imported where Locust already is. Load users import psycopg through ``lab.users`` instead.
"""

from __future__ import annotations

import sys
import time

if "locust" in sys.modules or "gevent.monkey" in sys.modules:  # pragma: no cover - guard
    raise ImportError(
        "lab.pg is for the orchestrator process; a Locust process must use lab.users"
    )

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402,F401  (re-exported for experiments)

from lab.connect import EndpointInfo  # noqa: E402

Error = psycopg.Error
OperationalError = psycopg.OperationalError


def open_connection(**kwargs) -> psycopg.Connection:
    """``psycopg.connect(**kwargs)``, without keeping a failed attempt's socket open.

    When an attempt times out (``connect_timeout``: a host that is gone, a pooler that is down
    for a few seconds), psycopg abandons its connect generator with the libpq connection, and
    its TCP socket, still open inside; the exception it raises holds them through its
    traceback, in a reference cycle (the exception, its traceback, ``connect``'s frame, the
    exception again) that only a full pass of Python's cyclic garbage collector breaks: in
    the orchestrator, minutes later. A sampler that retries a dead target every tick kept one
    socket per timed-out attempt (they connect later, when the address answers again, and
    sit in CLOSE_WAIT once PgBouncer drops them). Raising the same exception without that
    traceback frees them at once.
    """
    try:
        return psycopg.connect(**kwargs)
    except psycopg.Error as exc:
        raise exc.with_traceback(None) from None


def scram_keys_supported() -> bool:
    """libpq 18+ takes SCRAM's client and server keys instead of deriving them from the
    password (``scram_client_key``, ``scram_server_key``: lab.render.client_scram_keys)."""
    return psycopg.pq.version() >= 180000


def connect(ep: EndpointInfo, password: str, *, application_name: str = "pooler-lab",
            bench: bool = True, timeout: float = 5, autocommit: bool = True,
            user: str | None = None, dbname: str | None = None,
            sslmode: str | None = None, verify_as: str | None = None,
            **kwargs) -> psycopg.Connection:
    """A client connection to an endpoint, with TLS as `lab connect` prints it (``sslmode``
    overrides it, e.g. "disable" for plaintext). ``verify_as``: the host name the client
    checks the certificate against, the address unchanged (a client that uses a wrong name)."""
    params = ep.conn_params(bench=bench, sslmode=sslmode)
    if verify_as is not None:
        params["hostaddr"] = params.get("hostaddr") or params["host"]
        params["host"] = verify_as
    return open_connection(
        **params, user=user or ep.user, password=password,
        dbname=dbname or ep.database, application_name=application_name,
        connect_timeout=max(1, int(timeout)), autocommit=autocommit, **kwargs,
    )


def admin_connect(host: str, port: int, user: str, password: str,
                  timeout: float = 5, **tls: object) -> psycopg.Connection:
    """A PgBouncer admin console: simple query protocol only, hence ClientCursor. ``tls``:
    hostaddr / sslmode / sslrootcert (``Target.tls``), else libpq's defaults."""
    return open_connection(
        host=host, port=port, user=user, password=password, dbname="pgbouncer", **tls,
        connect_timeout=max(1, int(timeout)), autocommit=True,
        cursor_factory=psycopg.ClientCursor,
    )


def rows(conn: psycopg.Connection, query: str, params=None) -> list[dict[str, object]]:
    """Run a query and return rows as dicts keyed by column name (never by position)."""
    with conn.cursor() as cur:
        cur.execute(query, params)
        # the names off the result itself: cursor.description builds a Column per field
        # (SHOW POOLS: 16 of them, twice a second per pooler in the sampler; over 100 us a query)
        res = cur.pgresult
        if res is None or not res.nfields:
            return []
        names = [res.fname(i).decode("utf-8", "replace") for i in range(res.nfields)]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


# -- PgBouncer admin consoles ------------------------------------------------------------------

POOL_COLUMNS = ("cl_active", "cl_waiting", "sv_active", "sv_idle", "sv_used", "sv_tested",
                "sv_login")


def pool_summary(conn: psycopg.Connection) -> dict[str, float]:
    """SHOW POOLS summed over every pool but the admin console's, read by column name.

    ``servers`` is every server connection the pooler holds; ``maxwait_us`` / ``maxwait_s``
    the longest a client has been queueing."""
    return summarize_pools(rows(conn, "SHOW POOLS"))


def summarize_pools(show_pools: list[dict[str, object]]) -> dict[str, float]:
    """``pool_summary`` of SHOW POOLS rows already read (values typed or text alike)."""
    pools = [r for r in show_pools if r.get("database") != "pgbouncer"]
    summary: dict[str, float] = {c: sum(int(r.get(c) or 0) for r in pools)
                                 for c in POOL_COLUMNS}
    maxwait_us = max((int(r.get("maxwait") or 0) * 1_000_000 + int(r.get("maxwait_us") or 0)
                      for r in pools), default=0)
    summary["maxwait_us"] = maxwait_us
    summary["maxwait_s"] = maxwait_us / 1e6
    summary["servers"] = sum(summary[c] for c in POOL_COLUMNS if c.startswith("sv_"))
    return summary


def drain_pooler(conn: psycopg.Connection, timeout_s: float = 10.0) -> int:
    """RECONNECT: close the pooler's server connections (idle ones now, busy ones when their
    client releases them); wait until it holds none. Returns how many are left."""
    rows(conn, "RECONNECT")
    deadline = time.monotonic() + timeout_s
    while True:
        left = int(pool_summary(conn)["servers"])
        if left == 0 or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


# -- the extended protocol by hand (experiments: drivers' own statement names) -----------------


def _result(res) -> list[tuple]:
    if res.status not in (psycopg.pq.ExecStatus.COMMAND_OK, psycopg.pq.ExecStatus.TUPLES_OK):
        raise psycopg.errors.error_from_result(res)
    return [tuple(None if v is None else v.decode() for v in
                  (res.get_value(r, c) for c in range(res.nfields)))
            for r in range(res.ntuples)]


def protocol_parse(conn: psycopg.Connection, name: str, query: str) -> None:
    """Parse a named statement, then Sync (libpq's PQprepare), as asyncpg and tokio-postgres
    (Prisma) do before its first Bind. ``conn`` must be idle, in autocommit."""
    _result(conn.pgconn.prepare(name.encode(), query.encode()))


def protocol_bind(conn: psycopg.Connection, name: str, *params: object) -> list[tuple]:
    """Bind and Execute a statement Parsed earlier, then Sync (PQexecPrepared); text values."""
    return _result(conn.pgconn.exec_prepared(name.encode(),
                                             [str(p).encode() for p in params]))


def protocol_unnamed(conn: psycopg.Connection, query: str, *params: object) -> list[tuple]:
    """Parse the unnamed statement, Bind, Execute, Sync in one go (PQexecParams): what
    asyncpg with statement_cache_size=0 and postgres.js with prepare: false send."""
    return _result(conn.pgconn.exec_params(query.encode(),
                                           [str(p).encode() for p in params]))
