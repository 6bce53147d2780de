"""The connection sampler: what Postgres and each PgBouncer hold, sampled while load runs.

Independent of Locust: one thread and one connection per target, by default every 0.5 s.

* Postgres: client backends from ``pg_stat_activity`` (samplers' own left out: a `lab status`
  or a `lab watch` next to a run is not load) grouped by role, application_name, state and
  origin (``direct`` client, ``shared`` pooler host, ``dedicated`` pooler on the db host
  itself, ``dedicated_auth`` that pooler's own auth_query login, ``local`` socket).
* Each PgBouncer admin console: ``SHOW POOLS`` (clients active/waiting, servers active/idle,
  maxwait) every tick and ``SHOW STATS`` counters with their deltas every ``STATS_EVERY_S``,
  always read by column name.

A target that disappears (a stopped or paused pooler) is recorded as a failed sample and retried
at the next tick, so the file shows the gap. Records are JSON Lines, format ``connections/1``
(see docs/formats.md); each line is flushed as it is written, so an interrupted run keeps them.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
STATS_COLUMNS = ("total_xact_count", "total_query_count", "total_received", "total_sent",
                 "total_xact_time", "total_query_time", "total_wait_time",
                 "total_server_assignment_count")

BACKENDS_SQL = """
SELECT coalesce(usename, '') AS role,
       coalesce(application_name, '') AS app,
       coalesce(state, '') AS state,
       CASE WHEN client_addr IS NULL THEN 'local'
            WHEN host(client_addr) IN ('127.0.0.1', '::1') THEN 'dedicated'
            WHEN host(client_addr) = ANY(%(shared)s::text[]) THEN 'shared'
            ELSE 'direct' END AS origin,
       count(*) AS n
FROM pg_stat_activity
WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
  AND application_name IS DISTINCT FROM %(sampler_app)s
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
    """One target's connection, reopened whenever it breaks."""

    def __init__(self, target: Target, password: str, shared: list[str], timeout: float):
        self.target = target
        self.password = password
        self.shared = shared
        self.timeout = timeout
        self.conn = None
        self.previous_stats: dict[str, int] | None = None
        self.stats_due = 0.0  # time.monotonic() of the next SHOW STATS

    def _connect(self):
        t = self.target
        if t.kind == "pgbouncer":
            return pg.admin_connect(t.host, t.port, t.user, self.password, timeout=self.timeout,
                                    **t.tls)
        # pg.open_connection: a timed-out attempt's socket is closed now, not at the next
        # full garbage collection (a dead target is retried every tick)
        return pg.open_connection(host=t.host, port=t.port, **t.tls, user=t.user,
                                  password=self.password,
                                  dbname=t.dbname, application_name=SAMPLER_APP,
                                  connect_timeout=max(2, int(self.timeout)), autocommit=True)

    def sample(self) -> dict[str, Any]:
        t = self.target
        started = time.perf_counter()
        record: dict[str, Any] = {"v": 1, "t": round(clock.now(), 3), "target": t.name,
                                  "kind": t.kind}
        try:
            if self.conn is None or self.conn.closed:
                self.conn = self._connect()
            record.update(self._read())
            record["ok"] = True
        except Exception as exc:  # any failure is a gap in the record, never a crash
            record["ok"] = False
            record["error"] = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            self.close()
        record["ms"] = round((time.perf_counter() - started) * 1000, 3)
        if t.limits:
            record["limits"] = t.limits
        return record

    def _read(self) -> dict[str, Any]:
        if self.target.kind == "postgres":
            groups = pg.rows(self.conn, BACKENDS_SQL, {"shared": self.shared,
                                                       "sampler_app": SAMPLER_APP})
            by_origin: dict[str, int] = {}
            for g in groups:
                origin = g["origin"]
                if origin == "dedicated" and g["role"] == AUTH_ROLE:
                    origin = "dedicated_auth"  # the pooler's auth_query, not its load
                by_origin[origin] = by_origin.get(origin, 0) + int(g["n"])
            return {"total": sum(by_origin.values()), "by_origin": by_origin,
                    "groups": [{**g, "n": int(g["n"])} for g in groups]}
        summary = pg.pool_summary(self.conn)
        summary = {k: summary[k] for k in (*pg.POOL_COLUMNS, "maxwait_s")}
        now = time.monotonic()
        if now < self.stats_due:
            return {"pools": summary}
        self.stats_due = now + STATS_EVERY_S
        stats_rows = [r for r in pg.rows(self.conn, "SHOW STATS")
                      if r.get("database") != "pgbouncer"]
        stats = {col: sum(int(r.get(col) or 0) for r in stats_rows)
                 for col in STATS_COLUMNS if any(col in r for r in stats_rows)}
        delta = None
        if self.previous_stats is not None:
            delta = {k: v - self.previous_stats.get(k, 0) for k, v in stats.items()}
        self.previous_stats = stats
        return {"pools": summary, "stats": stats, "stats_delta": delta}

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
        self.conn = None


class Sampler:
    """Samples every target on its own thread until ``stop``; see the module docstring."""

    def __init__(self, targets: list[Target], passwords: dict[str, str], *,
                 shared: list[str] = (),
                 out: Path | None = None, interval: float = 0.5, timeout: float = 2,
                 on_record: Callable[[dict[str, Any]], None] | None = None):
        self.interval = interval
        self.out = out
        self.on_record = on_record
        self._probes = [_TargetProbe(t, passwords[t.name], list(shared), timeout)
                        for t in targets]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._fh = None
        self.latest: dict[str, dict[str, Any]] = {}
        self.write_error: str | None = None  # why connections.jsonl could not be written

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """One sample of every target, now (used by `lab status`)."""
        try:
            return {p.target.name: p.sample() for p in self._probes}
        finally:
            for p in self._probes:
                p.close()

    def start(self) -> Sampler:
        if self.out is not None:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.out, "a", buffering=1)
        for probe in self._probes:
            thread = threading.Thread(target=self._loop, args=(probe,), daemon=True,
                                      name=f"sampler-{probe.target.name}")
            thread.start()
            self._threads.append(thread)
        return self

    def _loop(self, probe: _TargetProbe) -> None:
        next_tick = time.monotonic()
        while not self._stop.is_set():
            record = probe.sample()
            self._emit(record)
            next_tick += self.interval
            delay = next_tick - time.monotonic()
            if delay < 0:  # a slow or dead target: skip missed ticks instead of bursting
                next_tick = time.monotonic()
                delay = 0
            self._stop.wait(delay)
        probe.close()

    def _emit(self, record: dict[str, Any]) -> None:
        with self._lock:
            self.latest[record["target"]] = record
            if self._fh is not None:
                try:
                    self._fh.write(json.dumps(record, separators=(",", ":")) + "\n")
                except OSError as exc:  # a full disk: keep sampling (the live line), say why
                    self.write_error = self.write_error or (exc.strerror or str(exc))
        if self.on_record is not None:
            self.on_record(record)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
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
