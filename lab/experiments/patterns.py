"""What several experiments share: lanes and settings they use alike, outcome tokens, and the
moves they are built from (a later transaction with another client in between, one function
per lane, session state lost between transactions, connections until one is refused).

Determinism: every pooler an experiment uses starts empty and, with ``POOL2``, holds at most two
server connections, so which backend a transaction lands on is fixed: a client's first
transaction opens backend 1; a second client's open transaction takes backend 1 (the only idle
one); the first client's next transaction must open backend 2.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lab import pg
from lab.config import ENDPOINTS
from lab.experiments.context import LOGIN_CONCURRENCY, Context, describe_error
from lab.experiments.model import POOLERS, Lane, Observation

ALL4 = ("direct", "session", "transaction", "dedicated")
POOL2 = {"session": {"default_pool_size": 2}, "transaction": {"default_pool_size": 2},
         "dedicated": {"default_pool_size": 2}}
WAIT_TIMEOUT_S = 2  # query_wait_timeout where waiting is the point of the experiment

# Outcome tokens more than one experiment observes.
WORKS, MISSING = "works", "does-not-exist"
LEAKED, ISOLATED = "leaked", "isolated"
SERVED = "served"
QUERY_WAIT_TIMEOUT_ERROR = "query_wait_timeout"


def endpoint_lanes(*keys: str) -> tuple[Lane, ...]:
    """One lane per endpoint, labelled as the endpoint is."""
    return tuple(Lane(k, k, ENDPOINTS[k].label) for k in keys)


def pid(conn) -> int:
    # Never prepared: in protocol-prepared, only the statement under test may be.
    return conn.execute("select pg_backend_pid()", prepare=False).fetchone()[0]


def backends(before: int, after: int) -> str:
    return f"backend {before} -> {after}"


def later_transaction(ctx: Context, endpoint: str, first: str, second: str, *,
                      prepare_threshold: int | None = None
                      ) -> tuple[int, int, Any, BaseException | None, list[str]]:
    """Client A runs ``first``; client B opens a transaction (taking A's backend in a
    transaction pooler); A runs ``second`` in its next transaction.

    Returns A's backend pid before and after, the result of ``second`` (or the error) and the
    notices A received.
    """
    a = ctx.connect(endpoint, prepare_threshold=prepare_threshold)
    notices: list[str] = []
    a.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
    a.execute(first)
    pid_before = pid(a)
    b = ctx.connect(endpoint, autocommit=False)
    b.execute("select 1")  # B's open transaction now holds a backend
    try:
        try:
            result = a.execute(second).fetchall()
            error = None
        except pg.Error as exc:
            result, error = None, exc
        pid_after = pid(a)
    finally:
        b.rollback()
    return pid_before, pid_after, result, error, notices


def connect_until_refused(ctx: Context, endpoint: str, at_most: int, *,
                          concurrency: int = LOGIN_CONCURRENCY
                          ) -> tuple[int, BaseException | None]:
    """Open connections to ``endpoint`` until one is refused (``at_most`` of them,
    ``concurrency`` logins at a time: ``Context.connect_many``), then close every connection of
    the context: how many opened, and the refusal (None: none came).

    Concurrent logins near a PgBouncer's max_client_conn race: a refused client holds its
    slot until PgBouncer has freed it, so a login beside it may be refused too, one slot short
    of the limit (Postgres's max_connections has no such race)."""
    try:
        return ctx.connect_many(endpoint, at_most, concurrency=concurrency)
    finally:
        ctx.close_all()


def per_lane(fn: Callable[[Context, Lane], Observation]
             ) -> Callable[[Context], dict[str, Observation]]:
    """Run ``fn`` for every lane of the experiment being run."""

    def run(ctx: Context) -> dict[str, Observation]:
        result = {}
        for lane in ctx.experiment.lanes:
            result[lane.key] = fn(ctx, lane)
            # The next lane starts from an empty pool: no backend polluted by this one.
            ctx.close_all()
            if lane.endpoint in POOLERS:
                ctx.drain(lane.endpoint)
        return result

    return run


def state_lost(first: str, second: str, error_token: str, sqlstate: str
               ) -> Callable[[Context], dict[str, Observation]]:
    """Session state made in one transaction, used in the next one: ``second`` works, fails
    with ``sqlstate`` (observed as ``error_token``) or fails otherwise (``error``)."""

    def lane(ctx: Context, lane: Lane) -> Observation:
        before, after, result, error, _ = later_transaction(ctx, lane.endpoint, first, second)
        where = backends(before, after)
        if error is None:
            return Observation(WORKS, f"{where}: {second} -> {result}")
        if getattr(error, "sqlstate", None) == sqlstate:
            return Observation(error_token, f"{where}: {describe_error(error)}")
        return Observation("error", f"{where}: {describe_error(error)}")

    return per_lane(lane)
