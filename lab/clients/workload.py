"""The workload every driver runs, the same for all of them (the JS twin is workload.mjs).

Two clients, A and B, are connected at the same time; then:

1. **repeat**: the same parameterised query (``SELECT $1::int + 1``, in each driver's own
   placeholder style) ``REPEAT`` times per client, the clients taking turns. That is past every
   driver's prepare threshold (psycopg and pgjdbc prepare on the 5th execution; asyncpg,
   postgres.js and named node-postgres statements on the first). Through a transaction pooler
   both clients take turns on one backend (PgBouncer hands out the server released last), so a
   driver that names its statements the same way in every connection meets the other client's
   statement there (``42P05 ... already exists``).
2. **transaction**: A opens a transaction and keeps its backend; meanwhile B runs the query
   twice, so B is served by another backend, one that never saw B's prepared statements
   (``26000 ... does not exist``); A runs the query once more and commits. A's backend must be
   the same at both ends of its transaction.
3. **handover**: B opens a transaction and so keeps the backend A had (PgBouncer hands out
   the server released last: A's, at its COMMIT); A runs the query twice, now served by another
   backend. What A left on its old backend (a WITH HOLD cursor, a prepared statement) is not
   where A's next transaction runs; B commits.
4. **close**: both clients disconnect.

A client is a small adapter a driver file writes around its connection, with ``query(n)``
(returns ``n + 1``), ``begin()``, ``commit()`` and ``pid()`` (``pg_backend_pid()``); async
drivers give coroutines and call ``run_async``. Every step is named in ``where`` so a failure
says which one it was.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Protocol

REPEAT = 8
STEPS = ("connect", "repeat", "transaction", "handover", "close")


class WrongResult(Exception):
    """A query answered, but not what it asked for."""


class Client(Protocol):
    def query(self, n: int) -> Any: ...
    def begin(self) -> Any: ...
    def commit(self) -> Any: ...
    def pid(self) -> Any: ...


class Tracker:
    """Where the workload is: the cell child reports it with a failure, and traces it on
    stderr (``@where STEP``) when LAB_CLIENTS_TRACE is set, so a hang says where it hung."""

    def __init__(self) -> None:
        self._trace = bool(os.environ.get("LAB_CLIENTS_TRACE"))
        self._where = ""
        self.where = "connect"

    @property
    def where(self) -> str:
        return self._where

    @where.setter
    def where(self, value: str) -> None:
        self._where = value
        if self._trace:
            sys.stderr.write(f"@where {value}\n")
            sys.stderr.flush()


def _check(got: Any, n: int, where: str) -> None:
    if got is None or int(got) != n + 1:
        raise WrongResult(f"{where}: SELECT {n} + 1 returned {got!r}")


def run(a: Client, b: Client, at: Tracker) -> None:
    for i in range(1, REPEAT + 1):
        for name, client in (("a", a), ("b", b)):
            at.where = f"repeat {i}, client {name}"
            _check(client.query(i), i, at.where)
    at.where = "transaction, client a begins"
    a.begin()
    first = a.pid()
    for i in (1, 2):
        at.where = f"transaction, client b query {i} (a holds its backend)"
        _check(b.query(i), i, at.where)
    at.where = "transaction, client a again"
    _check(a.query(3), 3, at.where)
    last = a.pid()
    at.where = "transaction, client a commits"
    a.commit()
    if first != last:
        raise WrongResult(f"client a's transaction moved from backend {first} to {last}")
    at.where = "handover, client b begins"
    b.begin()
    at.where = "handover, client b queries in its transaction"
    _check(b.query(5), 5, at.where)
    for i in (1, 2):
        at.where = f"handover, client a query {i} (b holds a's old backend)"
        _check(a.query(i), i, at.where)
    at.where = "handover, client b commits"
    b.commit()
    at.where = "close"


async def run_async(a: Client, b: Client, at: Tracker) -> None:
    for i in range(1, REPEAT + 1):
        for name, client in (("a", a), ("b", b)):
            at.where = f"repeat {i}, client {name}"
            _check(await client.query(i), i, at.where)
    at.where = "transaction, client a begins"
    await a.begin()
    first = await a.pid()
    for i in (1, 2):
        at.where = f"transaction, client b query {i} (a holds its backend)"
        _check(await b.query(i), i, at.where)
    at.where = "transaction, client a again"
    _check(await a.query(3), 3, at.where)
    last = await a.pid()
    at.where = "transaction, client a commits"
    await a.commit()
    if first != last:
        raise WrongResult(f"client a's transaction moved from backend {first} to {last}")
    at.where = "handover, client b begins"
    await b.begin()
    at.where = "handover, client b queries in its transaction"
    _check(await b.query(5), 5, at.where)
    for i in (1, 2):
        at.where = f"handover, client a query {i} (b holds a's old backend)"
        _check(await a.query(i), i, at.where)
    at.where = "handover, client b commits"
    await b.commit()
    at.where = "close"


class ForeignFailure(Exception):
    """A failure reported by a driver in another language (its class, message and step)."""

    def __init__(self, error_class: str, message: str, where: str, outcome: str = "fails"):
        super().__init__(message)
        self.error_class, self.message, self.where, self.outcome = \
            error_class, message, where, outcome


class Workload:
    """What a variant's ``run(workload, options)`` gets: where to connect, and the steps."""

    def __init__(self, config: dict[str, Any]):
        self.endpoint: str = config["endpoint"]
        self.dsn: str = config["dsn"]  # a libpq URI, password and sslmode included
        self.params: dict[str, Any] = dict(config["params"])  # host, port, user, password,
        # dbname, sslmode, sslrootcert (None unless TLS is verified), application_name
        self.timeout: float = float(config.get("timeout", 20))
        self.node_dir: str = config.get("node_dir", "")
        self.at = Tracker()

    def run(self, a: Client, b: Client) -> None:
        run(a, b, self.at)

    async def run_async(self, a: Client, b: Client) -> None:
        await run_async(a, b, self.at)

    def node(self, script: str, options: dict[str, Any] | None = None, *,
             package: str = "") -> None:
        """Run ``script`` (an ES module beside the npm packages) with node: it calls ``main``
        of ./workload.mjs with a factory of clients; ``package`` prefixes the error classes."""
        from lab.clients import node

        node.run(self, script, options or {}, package)
