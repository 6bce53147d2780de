"""The connection sampler: what Postgres and each PgBouncer hold, sampled while load runs.

Independent of Locust: one connection per target, every target asked at once by default every
0.5 s, on one thread that polls their sockets (libpq's non-blocking calls): a wakeup or two
a tick instead of a thread per target waking for each, on the cores the load runs on.

* Postgres: client backends from ``pg_stat_activity`` (samplers' own left out: a `lab status`
  or a `lab watch` next to a run is not load) grouped by role, application_name, state and
  origin (``direct`` client, ``shared`` pooler host, ``dedicated`` pooler on the db host
  itself, ``dedicated_auth`` that pooler's own auth_query login, ``local`` socket).
* Each PgBouncer admin console: ``SHOW POOLS`` (clients active/waiting, servers active/idle,
  maxwait) every tick and ``SHOW STATS`` counters with their deltas every ``STATS_EVERY_S``,
  always read by column name.

A target that disappears (a stopped or paused pooler) is recorded as a failed sample and retried
at the next tick, so the file shows the gap: a refused or timed-out connection at once, an open
connection that stops answering after ``ANSWER_TIMEOUT_S``. Records are JSON Lines, format
``connections/1`` (see docs/formats.md); each line is flushed as it is written, so an
interrupted run keeps them.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import pq
from psycopg import sql as psql
from psycopg.conninfo import make_conninfo

from lab import clock, pg
from lab.config import LabConfig
from lab.connect import EndpointInfo
from lab.engine import ContainerInfo
from lab.render import ADMIN_USER, AUTH_USER
from lab.state import Secrets

FORMAT = "connections/1"
SAMPLER_APP = "pooler-lab-sampler"
# The dedicated pooler logs in as this role for its auth_query (pgbouncer.get_auth): one
# backend of its own, outside the pool it serves clients with, counted apart as dedicated_auth.
AUTH_ROLE = AUTH_USER
# SHOW STATS holds counters (totals since the pooler started): read less often than the gauges
# of SHOW POOLS loses nothing, a delta over 2 s sums what four over 0.5 s would. Each admin
# query is a round trip the orchestrator pays for on the load's cores (issue "Scale").
STATS_EVERY_S = 2.0
# An open connection's answer is waited for this long before the sample is given up and the
# connection closed (a paused container never answers; a saturated Postgres answers late, and
# a reconnect could find no slot: late answers are kept, only a stuck one is dropped).
ANSWER_TIMEOUT_S = 10.0
# how the record of a sample given up begins (lab.watch.frame.TIMED_OUT: silence, not refusal)
NO_ANSWER, NO_CONNECTION = "no answer within", "no connection within"
STATS_COLUMNS = ("total_xact_count", "total_query_count", "total_received", "total_sent",
                 "total_xact_time", "total_query_time", "total_wait_time",
                 "total_server_assignment_count")

BACKENDS_SQL = """
SELECT coalesce(usename, '') AS role,
       coalesce(application_name, '') AS app,
       coalesce(state, '') AS state,
       CASE WHEN client_addr IS NULL THEN 'local'
            WHEN host(client_addr) IN ('127.0.0.1', '::1') THEN 'dedicated'
            WHEN host(client_addr) = ANY({shared}::text[]) THEN 'shared'
            ELSE 'direct' END AS origin,
       count(*) AS n
FROM pg_stat_activity
WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
  AND application_name IS DISTINCT FROM {sampler_app}
GROUP BY 1, 2, 3, 4
ORDER BY 1, 2, 3, 4
"""


@dataclass(frozen=True)
class Target:
    name: str  # "postgres", or the endpoint a PgBouncer serves: dedicated/session/transaction
    kind: str  # "postgres" or "pgbouncer"
    host: str
    port: int
    user: str
    dbname: str = "postgres"
    limits: dict[str, int] = field(default_factory=dict)
    # hostaddr / sslmode / sslrootcert: the lab's TLS, checked against the published name
    tls: dict[str, object] = field(default_factory=dict)


def lab_targets(cfg: LabConfig, eps: dict[str, EndpointInfo]) -> list[Target]:
    host, port, tls = eps["direct"].address(monitor=True)
    targets = [Target("postgres", "postgres", host, port, "postgres",
                      limits={"max_connections": cfg.max_connections}, tls=tls)]
    for name in ("dedicated", "session", "transaction"):
        host, port, tls = eps[name].address(monitor=True)
        targets.append(Target(name, "pgbouncer", host, port, ADMIN_USER,
                              limits={"pool_size": cfg.pool_size,
                                      "max_client_conn": cfg.max_client_conn}, tls=tls))
    return targets


def lab_passwords(secrets: Secrets, targets: Iterable[Target]) -> dict[str, str]:
    """Postgres targets log in as postgres; PgBouncer consoles as the admin user."""
    return {t.name: secrets.admin_password if t.kind == "pgbouncer"
            else secrets.postgres_password for t in targets}


def shared_addresses(containers: Iterable[ContainerInfo]) -> list[str]:
    return [c.address for c in containers if c.service == "pooler" and c.address]


class _TargetProbe:
    """One target's connection and the sample in progress on it, stepped without blocking.

    A sample is: connect (when there is no connection: libpq's ``connect_start`` /
    ``connect_poll``), then the target's queries one after another (simple protocol: the
    PgBouncer console takes nothing else), each ``send_query`` answered when the socket is
    readable. The sampler's one thread steps every target whose socket is ready, so all of them
    are asked at once and answered in one or two wakeups of that thread (issue "Scale")."""

    def __init__(self, target: Target, password: str, shared: list[str], timeout: float,
                 answer_timeout: float):
        self.target = target
        self.password = password
        self.timeout = timeout  # to connect (TLS and SCRAM included)
        self.answer_timeout = answer_timeout  # for an open connection's answers
        self.pgconn: pq.PGconn | None = None
        self.previous_stats: dict[str, int] | None = None
        self.stats_due = 0.0  # time.monotonic() of the next SHOW STATS
        self.backends_sql = psql.SQL(BACKENDS_SQL).format(
            shared=psql.Literal(list(shared)), sampler_app=psql.Literal(SAMPLER_APP)
        ).as_string(None).encode() if target.kind == "postgres" else b""
        # the sample in progress: None when idle
        self.record: dict[str, Any] | None = None
        self.started = 0.0  # time.perf_counter() at its start, for "ms"
        self.deadline = 0.0  # time.monotonic() when it is given up
        self.connecting = False
        self.events = 0  # select.POLLIN or POLLOUT: what the step waits for
        self.queries: list[tuple[str, bytes]] = []  # still to send or answer, first in flight
        self.answers: dict[str, list[dict[str, Any]]] = {}
        self._rows: list[dict[str, Any]] = []

    def _conninfo(self) -> str:
        t = self.target
        params: dict[str, Any] = {"host": t.host, "port": t.port, "user": t.user,
                                  "password": self.password, **t.tls}
        if t.kind == "pgbouncer":
            params["dbname"] = "pgbouncer"
        else:
            params.update(dbname=t.dbname, application_name=SAMPLER_APP)
        return make_conninfo(**params)

    @property
    def busy(self) -> bool:
        return self.record is not None

    def fileno(self) -> int:
        """The socket to poll (a busy probe always has a connection); OperationalError when
        libpq has lost it."""
        return self.pgconn.socket

    def begin(self, now: float) -> dict[str, Any] | None:
        """Start a sample; the record at once if it fails before any wait."""
        t = self.target
        self.started = time.perf_counter()
        self.record = {"v": 1, "t": round(clock.now(), 3), "target": t.name, "kind": t.kind}
        try:
            if self.pgconn is None:
                self.pgconn = pq.PGconn.connect_start(self._conninfo().encode())
                self.pgconn.notice_handler = _ignore  # libpq's own prints to stderr
                if self.pgconn.status == pq.ConnStatus.BAD:
                    raise psycopg.OperationalError(self._conn_error())
                self.connecting = True
                self.events = select.POLLOUT  # libpq: as if connect_poll said WRITING
                self.deadline = now + self.timeout
            else:
                self._ask(now)
        except Exception as exc:  # any failure is a gap in the record, never a crash
            return self._fail(exc)
        return None

    def _conn_error(self) -> str:
        return self.pgconn.get_error_message("utf-8") if self.pgconn else "no connection"

    def _ask(self, now: float) -> None:
        if self.target.kind == "postgres":
            self.queries = [("backends", self.backends_sql)]
        else:
            self.queries = [("pools", b"SHOW POOLS")]
            if now >= self.stats_due:
                self.stats_due = now + STATS_EVERY_S
                self.queries.append(("stats", b"SHOW STATS"))
        self.answers = {}
        self.deadline = now + self.answer_timeout
        self._send()

    def _send(self) -> None:
        self._rows = []
        self.pgconn.send_query(self.queries[0][1])
        self.events = select.POLLOUT if self.pgconn.flush() else select.POLLIN

    def step(self, now: float) -> dict[str, Any] | None:
        """The socket is ready: go on; the record once the sample is done."""
        try:
            pgconn = self.pgconn
            if self.connecting:
                status = pgconn.connect_poll()
                if status == pq.PollingStatus.OK:
                    self.connecting = False
                    pgconn.nonblocking = 1
                    self._ask(now)
                elif status == pq.PollingStatus.FAILED:
                    raise psycopg.OperationalError(self._conn_error())
                else:
                    self.events = (select.POLLIN if status == pq.PollingStatus.READING
                                   else select.POLLOUT)
                return None
            if self.events == select.POLLOUT:
                self.events = select.POLLOUT if pgconn.flush() else select.POLLIN
                return None
            pgconn.consume_input()
            while not pgconn.is_busy():
                res = pgconn.get_result()
                if res is None:  # the query in flight is answered
                    self.answers[self.queries.pop(0)[0]] = self._rows
                    if self.queries:
                        self._send()
                        return None
                    return self._finish()
                if res.status not in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK):
                    raise psycopg.errors.error_from_result(res, encoding="utf-8")
                self._rows = _text_rows(res)
            return None
        except Exception as exc:  # any failure is a gap in the record, never a crash
            return self._fail(exc)

    def expire(self, now: float) -> dict[str, Any] | None:
        """The record of a sample past its deadline, given up."""
        if not self.busy or now < self.deadline:
            return None
        if self.connecting:
            return self._fail(f"{NO_CONNECTION} {self.timeout:g} s")
        return self._fail(f"{NO_ANSWER} {self.answer_timeout:g} s")

    def _finish(self) -> dict[str, Any]:
        record, self.record = self.record, None
        record.update(self._read(self.answers))
        record["ok"] = True
        return self._stamp(record)

    def _fail(self, error: str | Exception) -> dict[str, Any]:
        """A failed sample's record; the next sample reconnects."""
        record, self.record = self.record, None
        record["ok"] = False
        record["error"] = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        self.close()
        return self._stamp(record)

    def _stamp(self, record: dict[str, Any]) -> dict[str, Any]:
        record["ms"] = round((time.perf_counter() - self.started) * 1000, 3)
        if self.target.limits:
            record["limits"] = self.target.limits
        return record

    def _read(self, answers: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
        if self.target.kind == "postgres":
            groups = [{**g, "n": int(g["n"])} for g in answers["backends"]]
            by_origin: dict[str, int] = {}
            for g in groups:
                origin = g["origin"]
                if origin == "dedicated" and g["role"] == AUTH_ROLE:
                    origin = "dedicated_auth"  # the pooler's auth_query, not its load
                by_origin[origin] = by_origin.get(origin, 0) + g["n"]
            return {"total": sum(by_origin.values()), "by_origin": by_origin, "groups": groups}
        summary = pg.summarize_pools(answers["pools"])
        summary = {k: summary[k] for k in (*pg.POOL_COLUMNS, "maxwait_s")}
        if "stats" not in answers:
            return {"pools": summary}
        stats_rows = [r for r in answers["stats"] if r.get("database") != "pgbouncer"]
        stats = {col: sum(int(r.get(col) or 0) for r in stats_rows)
                 for col in STATS_COLUMNS if any(col in r for r in stats_rows)}
        delta = None
        if self.previous_stats is not None:
            delta = {k: v - self.previous_stats.get(k, 0) for k, v in stats.items()}
        self.previous_stats = stats
        return {"pools": summary, "stats": stats, "stats_delta": delta}

    def close(self) -> None:
        self.record = None
        self.connecting = False
        if self.pgconn is not None:
            with contextlib.suppress(Exception):
                self.pgconn.finish()
        self.pgconn = None


def _ignore(_result: pq.PGresult) -> None:
    """A notice (a warning the server sends along): not the sampler's business."""


def _text_rows(res: pq.PGresult) -> list[dict[str, Any]]:
    """A result's rows as dicts keyed by column name, values as text (None for NULL)."""
    names = [res.fname(i).decode("utf-8", "replace") for i in range(res.nfields)]
    return [{name: None if (v := res.get_value(r, c)) is None else v.decode("utf-8", "replace")
             for c, name in enumerate(names)} for r in range(res.ntuples)]


class Sampler:
    """Samples every target, all at once on one thread, until ``stop``; see the module
    docstring. A target that has not answered its last sample when the next is due is left to
    finish (its missed ticks are skipped, never made up in a burst)."""

    def __init__(self, targets: list[Target], passwords: dict[str, str], *,
                 shared: list[str] = (),
                 out: Path | None = None, interval: float = 0.5, timeout: float = 2,
                 answer_timeout: float = ANSWER_TIMEOUT_S):
        self.interval = interval
        self.out = out
        self._probes = [_TargetProbe(t, passwords[t.name], list(shared), timeout,
                                     answer_timeout) for t in targets]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = -1, -1  # stop() writes a byte: the poll returns at once
        self._fh = None
        self.latest: dict[str, dict[str, Any]] = {}
        self.write_error: str | None = None  # why connections.jsonl could not be written

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """One sample of every target, now (used by `lab status`)."""
        records: dict[str, dict[str, Any]] = {}
        try:
            now = time.monotonic()
            for p in self._probes:
                if (record := p.begin(now)) is not None:
                    records[p.target.name] = record
            while any(p.busy for p in self._probes):
                for record in self._poll(time.monotonic() + self.interval):
                    records[record["target"]] = record
            return {p.target.name: records[p.target.name] for p in self._probes}
        finally:
            for p in self._probes:
                p.close()

    def start(self) -> Sampler:
        if self.out is not None:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.out, "a", buffering=1)
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="sampler")
        self._thread.start()
        return self

    def _loop(self) -> None:
        next_tick = time.monotonic()
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= next_tick:
                    for p in self._probes:
                        if not p.busy and (record := p.begin(now)) is not None:
                            self._emit(record)
                    next_tick += self.interval
                    if next_tick <= now:  # a slow tick: skip the missed ones, never burst
                        next_tick = now + self.interval
                for record in self._poll(next_tick):
                    self._emit(record)
        finally:
            for p in self._probes:
                p.close()

    def _poll(self, until: float) -> list[dict[str, Any]]:
        """Wait until a busy target's socket is ready, a deadline passes, ``until`` or stop;
        step what is ready. The records of the samples that ended."""
        poller = select.poll()
        if self._wake_r >= 0:
            poller.register(self._wake_r, select.POLLIN)
        ready: dict[int, _TargetProbe] = {}
        done: list[dict[str, Any]] = []
        for p in self._probes:
            if not p.busy:
                continue
            try:
                fd = p.fileno()
            except psycopg.Error as exc:  # the connection is gone
                done.append(p._fail(exc))
                continue
            ready[fd] = p
            poller.register(fd, p.events)
            until = min(until, p.deadline)
        if done:
            return done
        wait_ms = max(0.0, (until - time.monotonic()) * 1000)
        for fd, _ in poller.poll(wait_ms):
            if fd in ready and (record := ready[fd].step(time.monotonic())) is not None:
                done.append(record)
        now = time.monotonic()
        for p in self._probes:
            if (record := p.expire(now)) is not None:
                done.append(record)
        return done

    def _emit(self, record: dict[str, Any]) -> None:
        with self._lock:
            self.latest[record["target"]] = record
            if self._fh is not None:
                try:
                    self._fh.write(json.dumps(record, separators=(",", ":")) + "\n")
                except OSError as exc:  # a full disk: keep sampling (the live line), say why
                    self.write_error = self.write_error or (exc.strerror or str(exc))

    def stop(self) -> None:
        self._stop.set()
        if self._wake_w >= 0:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout=10)
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._wake_r = self._wake_w = -1
        with self._lock:
            if self._fh is not None:
                try:
                    self._fh.close()  # flushes: may fail on a full disk too
                except OSError as exc:
                    self.write_error = self.write_error or (exc.strerror or str(exc))
                self._fh = None

    def __enter__(self) -> Sampler:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def read(path: Path) -> list[dict[str, Any]]:
    """Read a connections file; a torn last line (a killed run) is skipped."""
    records = []
    with open(path) as fh:
        for line in fh:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records
