"""`lab experiment`: each transaction-pooling pitfall and each documented limit, demonstrated on
the live stack and checked.

An experiment is data (name, title, the question for the room, the lanes it compares, what each
lane is expected to show, the fix) plus one small function that runs it and returns what each
lane showed. A lane is one column of the side-by-side comparison: usually an endpoint
(``direct``, ``session``, ``transaction``, ``dedicated``), sometimes an endpoint under a setting
or with a fix applied (``dedicated-mps-100``, ``transaction-set-local``).

Outcomes are short, exact strings: a token such as ``other-backend`` or, for the limits, the
server's error text itself (``sorry, too many clients already``). An experiment passes when every
lane's observed outcome equals its expected one.

Determinism: before an experiment, every pooler it uses is emptied (admin ``RECONNECT``, then
wait until it holds no server connection), and its pool size is set at runtime through the
PgBouncer admin console (``SET default_pool_size = 2``), so which backend a transaction lands on
is fixed: a client's first transaction opens backend 1; a second client's open transaction takes
backend 1 (the only idle one); the first client's next transaction must open backend 2.

Every runtime change is undone afterwards, also on an error or Ctrl-C: the original values are
written to ``<lab state>/experiment-restore.json`` before the first ``SET`` and restored (then
the file removed) in a ``finally``; a run killed outright leaves the file, and the next
``lab experiment`` run restores from it first. ``RECONNECT`` after each experiment drops the
server connections it polluted (leaked settings, locks, temp tables).

Only psycopg through ``lab.pg``: this module runs in the orchestrator process.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab import engine, pg, stack
from lab.config import ENDPOINTS, LabConfig, load_config
from lab.connect import EndpointInfo, endpoints
from lab.errors import ConfigError, ExpectationFailed, LabError, StackError
from lab.render import ADMIN_USER
from lab.state import LabState, name_flag

APP = "pooler-lab-experiment"
RESTORE_FILE = "experiment-restore.json"
LOCK_FILE = "experiment.lock"
POOLERS = ("session", "transaction", "dedicated")
DRAIN_TIMEOUT_S = 5.0
# A safety net: no experiment client queues longer than this for a server connection.
SAFE_QUERY_WAIT_S = 5
WAIT_TIMEOUT_S = 2  # query_wait_timeout where waiting is the point of the experiment
_SETTING_RE = re.compile(r"^[a-z_]+$")
_VALUE_RE = re.compile(r"^[A-Za-z0-9_.]+$")

# Outcome tokens.
SAME, OTHER = "same-backend", "other-backend"
LEAKED, ISOLATED = "leaked", "isolated"
WORKS, MISSING = "works", "does-not-exist"
NOT_DEFINED = "not-yet-defined"
NOT_LOADED = "not-loaded"
APPLIED = "applied"
UNLOCKED, LOCK_LEAKED = "unlocked", "lock-leaked"
RECEIVED, MISSED = "received", "missed"
SERVED, STARVED = "served", "starved"
MAX_CLIENT_CONN_ERROR = "no more connections allowed (max_client_conn)"
TOO_MANY_CLIENTS_ERROR = "sorry, too many clients already"
QUERY_WAIT_TIMEOUT_ERROR = "query_wait_timeout"


# -- data ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lane:
    """One column of the comparison: an endpoint, possibly under a setting or with a fix."""

    key: str
    endpoint: str
    label: str


@dataclass(frozen=True)
class Observation:
    outcome: str
    detail: str = ""


Expect = Mapping[str, str] | Callable[[LabConfig], Mapping[str, str]]


@dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    question: str  # to ask the room before running it
    why: str  # what happens, and why
    fix: str
    lanes: tuple[Lane, ...]
    expect: Expect
    run: Callable[[Context], dict[str, Observation]]
    # Runtime admin-console settings for the duration: {endpoint: {setting: value}}.
    settings: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    # Settings an experiment changes itself while it runs (described in the guide).
    also_changes: str = ""

    def expected(self, cfg: LabConfig) -> dict[str, str]:
        values = self.expect(cfg) if callable(self.expect) else self.expect
        return {lane.key: str(values[lane.key]) for lane in self.lanes}

    def poolers(self) -> list[str]:
        used = {lane.endpoint for lane in self.lanes} | set(self.settings)
        return [p for p in POOLERS if p in used]


@dataclass(frozen=True)
class LaneResult:
    key: str
    endpoint: str
    label: str
    expected: str
    observed: str
    detail: str

    @property
    def passed(self) -> bool:
        return self.expected == self.observed

    def to_json(self) -> dict[str, Any]:
        return {"lane": self.key, "endpoint": self.endpoint, "label": self.label,
                "expected": self.expected, "observed": self.observed, "detail": self.detail,
                "passed": self.passed}


@dataclass(frozen=True)
class ExperimentResult:
    name: str
    title: str
    question: str
    fix: str
    lanes: tuple[LaneResult, ...]
    duration_s: float
    error: str | None = None  # the experiment could not run to the end

    @property
    def passed(self) -> bool:
        return self.error is None and all(lane.passed for lane in self.lanes)

    def failures(self) -> list[LaneResult]:
        return [lane for lane in self.lanes if not lane.passed]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "question": self.question,
                "fix": self.fix, "passed": self.passed, "error": self.error,
                "duration_s": round(self.duration_s, 3),
                "lanes": [lane.to_json() for lane in self.lanes]}


def results_json(lab_name: str, results: Sequence[ExperimentResult]) -> dict[str, Any]:
    return {"lab": lab_name, "passed": all(r.passed for r in results),
            "experiments": [r.to_json() for r in results]}


# -- expectation overrides (--expect EXPERIMENT.LANE=OUTCOME) -------------------------------


def parse_expect(values: Sequence[str]) -> dict[str, dict[str, str]]:
    """``["set-leak.transaction=isolated"]`` -> ``{"set-leak": {"transaction": "isolated"}}``.

    Names are checked against the catalogue, so a typo is an error and not a silent pass.
    """
    result: dict[str, dict[str, str]] = {}
    for item in values:
        target, sep, outcome = item.partition("=")
        name, dot, lane = target.strip().partition(".")
        if not sep or not dot or not name or not lane or not outcome.strip():
            raise ConfigError(f"--expect {item!r} is not EXPERIMENT.LANE=OUTCOME",
                              fix="e.g. --expect set-leak.transaction=isolated")
        exp = get(name)
        keys = [ln.key for ln in exp.lanes]
        if lane not in keys:
            raise ConfigError(f"experiment {name!r} has no lane {lane!r}",
                              fix=f"use one of: {', '.join(keys)}")
        result.setdefault(name, {})[lane] = outcome.strip()
    return result


# -- the run context -------------------------------------------------------------------------


class ExperimentSetupError(LabError):
    """The lab is not in a state an experiment can run in (e.g. other clients hold a pool)."""

    exit_code = 4


class Context:
    """What an experiment's function works with: connections, admin consoles, runtime SETs."""

    def __init__(self, cfg: LabConfig, state: LabState, eps: dict[str, EndpointInfo],
                 containers: list[engine.ContainerInfo]):
        self.cfg = cfg
        self.state = state
        self.eps = eps
        self.containers = containers
        secrets = state.secrets()
        self.password = secrets.postgres_password
        self.admin_password = secrets.admin_password
        self.shared_addresses = [c.address for c in containers
                                 if c.service == "pooler" and c.address]
        self._conns: list[Any] = []
        self._admins: dict[str, Any] = {}
        self._original: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()
        self.experiment: Experiment | None = None

    # connections ---------------------------------------------------------------------------
    def connect(self, endpoint: str, *, autocommit: bool = True, application_name: str = APP,
                prepare_threshold: int | None = None, **kwargs):
        """A client connection to ``endpoint``; psycopg never prepares unless asked to."""
        conn = pg.connect(self.eps[endpoint], self.password, autocommit=autocommit,
                          application_name=application_name, timeout=5,
                          prepare_threshold=prepare_threshold, **kwargs)
        with self._lock:
            self._conns.append(conn)
        return conn

    def close_all(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(Exception):
                conn.close()

    def admin(self, endpoint: str):
        conn = self._admins.get(endpoint)
        if conn is None or conn.closed:
            ep = self.eps[endpoint]
            conn = pg.admin_connect(ep.bench_host, ep.bench_port, ADMIN_USER,
                                    self.admin_password)
            self._admins[endpoint] = conn
        return conn

    def close_admins(self) -> None:
        for conn in self._admins.values():
            with contextlib.suppress(Exception):
                conn.close()
        self._admins.clear()

    # the pooler's view ---------------------------------------------------------------------
    def pools(self, endpoint: str) -> dict[str, int]:
        """SHOW POOLS summed over the pools of user databases, read by column name."""
        return {k: int(v) for k, v in pg.pool_summary(self.admin(endpoint)).items()
                if k != "maxwait_s"}

    def config_value(self, endpoint: str, key: str) -> str:
        for row in pg.rows(self.admin(endpoint), "SHOW CONFIG"):
            if row.get("key") == key:
                return str(row.get("value"))
        raise ExperimentSetupError(f"the {endpoint} pooler has no setting {key!r}",
                                   fix="check the PgBouncer version: lab doctor")

    def set(self, endpoint: str, key: str, value: int | str) -> None:
        """``SET key = value`` on a pooler's admin console; undone by ``restore``."""
        if not _SETTING_RE.match(key) or not _VALUE_RE.match(str(value)):
            raise ValueError(f"refusing admin SET {key}={value!r}")
        if key not in self._original.get(endpoint, {}):
            self._original.setdefault(endpoint, {})[key] = self.config_value(endpoint, key)
            self._write_journal()
        pg.rows(self.admin(endpoint), f"SET {key} = '{value}'")

    def restore(self) -> list[str]:
        """Undo every SET (and drop polluted server connections); returns what failed."""
        failed = []
        for endpoint, values in self._original.items():
            for key, value in values.items():
                try:
                    pg.rows(self.admin(endpoint), f"SET {key} = '{value}'")
                except Exception as exc:  # keep restoring the rest; report at the end
                    failed.append(f"{endpoint} {key}={value} ({_first_line(exc)})")
        if not failed:
            self._original.clear()
            _journal_path(self.state).unlink(missing_ok=True)
        return failed

    def _write_journal(self) -> None:
        ids = {c.service: c.id for c in self.containers}
        data = {"project": self.cfg.project, "containers": ids,
                "settings": self._original}
        path = _journal_path(self.state)
        path.write_text(json.dumps(data, indent=2) + "\n")

    def reconnect(self, endpoint: str) -> None:
        pg.rows(self.admin(endpoint), "RECONNECT")

    def drain(self, endpoint: str) -> None:
        """Close the pooler's server connections and wait until it holds none."""
        if pg.drain_pooler(self.admin(endpoint), DRAIN_TIMEOUT_S):
            pools = self.pools(endpoint)
            raise ExperimentSetupError(
                f"the {endpoint} pooler still holds {pools['servers']} server connection(s)"
                f" for {pools['cl_active']} other client(s)",
                fix="run experiments on an idle lab (stop load runs and psql sessions)")

    # Postgres' view ------------------------------------------------------------------------
    def backends_by_origin(self, conn) -> dict[str, dict[str, int]]:
        """Client backends per origin (direct, shared, dedicated, local) and role."""
        rows = pg.rows(conn, """
            SELECT CASE WHEN client_addr IS NULL THEN 'local'
                        WHEN host(client_addr) IN ('127.0.0.1', '::1') THEN 'dedicated'
                        WHEN host(client_addr) = ANY(%(shared)s::text[]) THEN 'shared'
                        ELSE 'direct' END AS origin,
                   coalesce(usename, '') AS role, application_name AS app, count(*) AS n
            FROM pg_stat_activity WHERE backend_type = 'client backend'
            GROUP BY 1, 2, 3""", {"shared": self.shared_addresses})
        result: dict[str, dict[str, int]] = {}
        for r in rows:
            origin = result.setdefault(r["origin"], {})
            origin[r["role"]] = origin.get(r["role"], 0) + int(r["n"])
            apps = result.setdefault("app:" + r["origin"], {})
            apps[r["app"]] = apps.get(r["app"], 0) + int(r["n"])
        return result


def _journal_path(state: LabState) -> Path:
    return state.dir / RESTORE_FILE


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines() or [type(exc).__name__])[0][:200]


def server_message(exc: BaseException) -> str:
    """The server's own message from a psycopg error ('FATAL:  x' at connect, diag otherwise)."""
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    if primary:
        return primary
    text = str(exc)
    match = re.search(r"(?:FATAL|ERROR):\s+(.+)", text)
    return (match.group(1) if match else _first_line(exc)).strip()


def describe_error(exc: BaseException) -> str:
    sqlstate = getattr(exc, "sqlstate", None)
    return f"{server_message(exc)}" + (f" ({sqlstate})" if sqlstate else "")


# -- shared patterns -----------------------------------------------------------------------


def _pid(conn) -> int:
    # Never prepared: in protocol-prepared, only the statement under test may be.
    return conn.execute("select pg_backend_pid()", prepare=False).fetchone()[0]


def _later_transaction(ctx: Context, endpoint: str, first: str, second: str, *,
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
    pid_before = _pid(a)
    b = ctx.connect(endpoint, autocommit=False)
    b.execute("select 1")  # B's open transaction now holds a backend
    try:
        try:
            result = a.execute(second).fetchall()
            error = None
        except pg.Error as exc:
            result, error = None, exc
        pid_after = _pid(a)
    finally:
        b.rollback()
    return pid_before, pid_after, result, error, notices


def _backends(before: int, after: int) -> str:
    return f"backend {before} -> {after}"


def _per_lane(fn: Callable[[Context, Lane], Observation]
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


def _state_lost(first: str, second: str, error_token: str, sqlstate: str):
    """Session state made in one transaction, used in the next one."""

    def lane(ctx: Context, lane: Lane) -> Observation:
        before, after, result, error, _ = _later_transaction(ctx, lane.endpoint, first, second)
        where = _backends(before, after)
        if error is None:
            return Observation(WORKS, f"{where}: {second} -> {result}")
        if getattr(error, "sqlstate", None) == sqlstate:
            return Observation(error_token, f"{where}: {describe_error(error)}")
        return Observation("error", f"{where}: {describe_error(error)}")

    return _per_lane(lane)


def _lanes(*keys: str) -> tuple[Lane, ...]:
    return tuple(Lane(k, k, ENDPOINTS[k].label) for k in keys)


ALL4 = ("direct", "session", "transaction", "dedicated")
POOL2 = {"session": {"default_pool_size": 2}, "transaction": {"default_pool_size": 2},
         "dedicated": {"default_pool_size": 2}}


def _only(settings: Mapping[str, Mapping[str, int]], lanes: Sequence[Lane]
          ) -> dict[str, Mapping[str, int]]:
    used = {lane.endpoint for lane in lanes}
    return {ep: values for ep, values in settings.items() if ep in used}


# -- the experiments -----------------------------------------------------------------------


@_per_lane
def _backend_identity(ctx: Context, lane: Lane) -> Observation:
    before, after, _, _, _ = _later_transaction(ctx, lane.endpoint, "select 1", "select 1")
    return Observation(SAME if before == after else OTHER, _backends(before, after))


@_per_lane
def _set_leak(ctx: Context, lane: Lane) -> Observation:
    endpoint = lane.endpoint
    a = ctx.connect(endpoint, autocommit=lane.key != "transaction-set-local")
    if lane.key == "transaction-set-local":
        a.execute("SET LOCAL statement_timeout = '4321ms'")
        seen_by_a = a.execute("show statement_timeout").fetchone()[0]
        a.commit()
    else:
        a.execute("SET statement_timeout = '4321ms'")
        seen_by_a = a.execute("show statement_timeout").fetchone()[0]
    b = ctx.connect(endpoint)
    seen_by_b = b.execute("show statement_timeout").fetchone()[0]
    detail = f"A set 4321ms (A sees {seen_by_a}); client B sees {seen_by_b}"
    return Observation(LEAKED if seen_by_b == "4321ms" else ISOLATED, detail)


def _protocol_prepared(ctx: Context) -> dict[str, Observation]:
    result = {}
    for lane in ctx.experiment.lanes:
        threshold: int | None = 0
        if lane.key == "dedicated-mps-0":
            ctx.set("dedicated", "max_prepared_statements", 0)
        elif lane.key == "dedicated-mps-100":
            ctx.set("dedicated", "max_prepared_statements", 100)
        elif lane.key == "transaction-no-prepare":
            threshold = None
        query = "select %s::int + 1"
        a = ctx.connect(lane.endpoint, prepare_threshold=threshold)
        first = a.execute(query, (1,)).fetchone()[0]
        pid_before = _pid(a)
        b = ctx.connect(lane.endpoint, autocommit=False)
        b.execute("select 1")
        try:
            try:
                second = a.execute(query, (2,)).fetchone()[0]
                error = None
            except pg.Error as exc:
                error = exc
            pid_after = _pid(a)
        finally:
            b.rollback()
        where = _backends(pid_before, pid_after)
        how = "prepare_threshold=None" if threshold is None else "prepare_threshold=0"
        if error is None:
            result[lane.key] = Observation(WORKS, f"{how}; {where}: {first}, then {second}")
        elif getattr(error, "sqlstate", None) == "26000":
            result[lane.key] = Observation(MISSING, f"{how}; {where}: {describe_error(error)}")
        else:
            result[lane.key] = Observation("error", f"{how}; {where}: {describe_error(error)}")
        a.close()
        b.close()
        if lane.endpoint in POOLERS:
            ctx.drain(lane.endpoint)
    return result


LOCK_KEY = 7_317_001


@_per_lane
def _advisory_lock(ctx: Context, lane: Lane) -> Observation:
    before, after, result, error, notices = _later_transaction(
        ctx, lane.endpoint, f"select pg_advisory_lock({LOCK_KEY})",
        f"select pg_advisory_unlock({LOCK_KEY})")
    if error is not None:
        return Observation("error", describe_error(error))
    watcher = ctx.connect("direct")
    held = watcher.execute(
        "select count(*) from pg_locks where locktype = 'advisory' and objid = %s",
        (LOCK_KEY,)).fetchone()[0]
    unlocked = result[0][0]
    detail = f"{_backends(before, after)}: unlock returned {unlocked}"
    if notices:
        detail += f" ({notices[0]})"
    detail += f"; locks still held: {held}"
    return Observation(UNLOCKED if unlocked and held == 0 else LOCK_LEAKED, detail)


@_per_lane
def _listen_notify(ctx: Context, lane: Lane) -> Observation:
    listener = ctx.connect(lane.endpoint)
    listener.execute("LISTEN pooler_lab_experiment")
    sender = ctx.connect("direct")
    sender.execute("NOTIFY pooler_lab_experiment, 'hello'")
    # The notification reaches the listening backend at once; in transaction mode that
    # backend sits unlinked in the pool then. Only afterwards does the listener query again.
    time.sleep(0.3)
    listener.execute("select 1")
    got = list(listener.notifies(timeout=1.0, stop_after=1))
    if got:
        return Observation(RECEIVED, f"got {got[0].payload!r} from backend {got[0].pid}")
    return Observation(MISSED, "nothing arrived within 1 s of NOTIFY")


SEQUENCE = "pooler_lab_experiment_seq"


def _currval(ctx: Context) -> dict[str, Observation]:
    with pg.connect(ctx.eps["direct"], ctx.password, application_name=APP) as admin:
        admin.execute(f"CREATE SEQUENCE IF NOT EXISTS {SEQUENCE}")
        try:
            return _state_lost(f"select nextval('{SEQUENCE}')",
                               f"select currval('{SEQUENCE}')", NOT_DEFINED, "55000")(ctx)
        finally:
            admin.execute(f"DROP SEQUENCE IF EXISTS {SEQUENCE}")


STARTUP_TIMEOUT = "4321ms"
# PgBouncer's text (client.c) for a parameter in options that it neither tracks nor ignores.
STARTUP_REFUSED = "unsupported startup parameter in options: statement_timeout"


@_per_lane
def _startup_options(ctx: Context, lane: Lane) -> Observation:
    try:
        conn = ctx.connect(lane.endpoint, options=f"-c statement_timeout={STARTUP_TIMEOUT}")
    except pg.Error as exc:  # refused at login: the pooler's own text is the outcome
        return Observation(server_message(exc), f"at connect: {describe_error(exc)}")
    _pid(conn)  # a transaction first, so a pooled backend is in use
    value = conn.execute("show statement_timeout", prepare=False).fetchone()[0]
    return Observation(APPLIED if value == STARTUP_TIMEOUT else LEAKED,
                       f"statement_timeout = {value}")


def _idle_in_transaction(ctx: Context, lane: Lane) -> Observation:
    holder = ctx.connect(lane.endpoint, autocommit=False)
    holder.execute("select 1")  # ... and never commits: idle in transaction
    outcome: dict[str, Any] = {}

    def waiter() -> None:
        started = time.monotonic()
        try:
            conn = ctx.connect(lane.endpoint)
            conn.execute("select 1")
            outcome["ok"] = True
        except pg.Error as exc:
            outcome["error"] = exc
        outcome["waited_s"] = time.monotonic() - started

    thread = threading.Thread(target=waiter, name="experiment-waiter", daemon=True)
    thread.start()
    most_waiting, maxwait_us = 0, 0
    try:
        while thread.is_alive():
            if lane.endpoint in POOLERS:
                pools = ctx.pools(lane.endpoint)
                most_waiting = max(most_waiting, pools["cl_waiting"])
                maxwait_us = max(maxwait_us, pools["maxwait_us"])
            thread.join(0.2)
    finally:
        # Also on Ctrl-C: query_wait_timeout ends the wait soon; never close a connection
        # under a thread that is still using it.
        thread.join(WAIT_TIMEOUT_S + 10)
    holder.rollback()
    waited = outcome.get("waited_s", 0.0)
    if outcome.get("ok"):
        return Observation(SERVED, f"second client served after {waited:.2f} s")
    error = outcome.get("error")
    if error is None:
        return Observation("error", "the waiting client did not finish")
    text = server_message(error)
    detail = (f"cl_waiting reached {most_waiting}, maxwait climbed to "
              f"{maxwait_us / 1e6:.1f} s; after {waited:.1f} s: {text}")
    starved = text == QUERY_WAIT_TIMEOUT_ERROR and most_waiting >= 1 and maxwait_us >= 1e6
    return Observation(STARVED if starved else "error", detail)


def _max_client_conn(ctx: Context, lane: Lane) -> Observation:
    clients = len(pg.rows(ctx.admin(lane.endpoint), "SHOW CLIENTS"))
    limit = clients + 2
    ctx.set(lane.endpoint, "max_client_conn", limit)
    opened = 0
    try:
        for _ in range(limit + 3):
            ctx.connect(lane.endpoint)
            opened += 1
    except pg.Error as exc:
        text = server_message(exc)
        return Observation(text, f"max_client_conn set to {limit} ({clients} connected, "
                                 f"admin console included): {opened} more connected, the next "
                                 f"one got: {text}")
    finally:
        ctx.close_all()
    return Observation("never refused", f"{opened} clients connected with max_client_conn "
                                        f"{limit}")


@_per_lane
def _max_connections(ctx: Context, lane: Lane) -> Observation:
    probe = ctx.connect("direct")
    existing = probe.execute(
        "select count(*) from pg_stat_activity where backend_type = 'client backend'"
    ).fetchone()[0]
    limit = int(probe.execute("show max_connections").fetchone()[0])
    opened = 0
    try:
        for _ in range(limit + 5):
            ctx.connect("direct")
            opened += 1
    except pg.Error as exc:
        text = server_message(exc)
        return Observation(text, f"max_connections {limit}, {existing} client backends "
                                 f"already; {opened} more connected, the next one got: {text}")
    finally:
        ctx.close_all()
    return Observation("never refused", f"{opened} connections opened")


def _session_exhaustion(ctx: Context, lane: Lane) -> Observation:
    size = int(ctx.config_value(lane.endpoint, "default_pool_size"))
    functions = []
    for _ in range(size):
        conn = ctx.connect(lane.endpoint)
        conn.execute("select 1")  # a function's query; the connection stays open, idle
        functions.append(conn)
    started = time.monotonic()
    try:
        extra = ctx.connect(lane.endpoint)
        connected = time.monotonic() - started
        extra.execute("select 1")
    except pg.Error as exc:
        text = server_message(exc)
        return Observation(text, f"{size} idle clients hold the pool (size {size}); client "
                                 f"{size + 1} connected in {connected:.2f} s, then its first "
                                 f"query waited {time.monotonic() - started:.1f} s: {text}")
    return Observation(SERVED, f"{size} idle clients connected (pool size {size}); client "
                               f"{size + 1} served in {time.monotonic() - started:.2f} s")


def _budget_expected(cfg: LabConfig) -> dict[str, str]:
    p = cfg.pool_size
    shared_session, shared_transaction = (p, p) if cfg.pool_sharing == "per-mode" else (p, 0)
    total = shared_session + shared_transaction + p + 1 + 1
    return {"session": str(shared_session), "transaction": str(shared_transaction),
            "dedicated": str(p), "dedicated-auth": "1", "direct": "1",
            "total": f"{total} <= {cfg.max_connections}"}


class _Holder(threading.Thread):
    """A client that opens a transaction and keeps it open until released."""

    def __init__(self, ctx: Context, endpoint: str, app: str, release: threading.Event):
        super().__init__(name=f"experiment-holder-{endpoint}", daemon=True)
        self.ctx, self.endpoint, self.app, self.release = ctx, endpoint, app, release
        self.holding = threading.Event()
        self.error: str | None = None

    def run(self) -> None:
        try:
            conn = self.ctx.connect(self.endpoint, autocommit=False,
                                    application_name=self.app)
            conn.execute("select 1")
            self.holding.set()
            self.release.wait(60)
            conn.rollback()
            conn.close()  # in session mode only a disconnect gives the backend back
        except Exception as exc:  # recorded, shown in the detail
            self.error = _first_line(exc)


def _backend_budget(ctx: Context) -> dict[str, Observation]:
    p = ctx.cfg.pool_size
    release = threading.Event()
    holders: dict[str, list[_Holder]] = {}
    try:
        for endpoint in ("session", "transaction", "dedicated"):
            group = [_Holder(ctx, endpoint, f"{APP}-{endpoint}", release) for _ in range(p)]
            holders[endpoint] = group
            # One login at a time, as the formula assumes: concurrent logins to the dedicated
            # pooler would each open an auth_query backend (up to pool size of them).
            queued = endpoint == "transaction" and ctx.cfg.pool_sharing == "shared"
            for h in group:
                h.start()
                if not queued:
                    h.holding.wait(10)
            if queued:  # they queue behind session mode's backends in the inner pool
                time.sleep(1)
        observer = ctx.connect("direct")
        seen = ctx.backends_by_origin(observer)
    finally:
        release.set()
    apps = seen.get("app:shared", {})
    dedicated = seen.get("dedicated", {})
    direct = sum(seen.get("direct", {}).values())
    total = sum(sum(seen.get(o, {}).values()) for o in ("direct", "shared", "dedicated"))
    session_n = apps.get(f"{APP}-session", 0)
    transaction_n = apps.get(f"{APP}-transaction", 0)
    holding = {ep: sum(h.holding.is_set() for h in group) for ep, group in holders.items()}
    errors = [h.error for group in holders.values() for h in group if h.error]

    def detail(ep: str) -> str:
        text = f"{holding[ep]} of {p} clients hold a transaction"
        return text + (f"; {errors[0]}" if errors else "")

    result = {
        "session": Observation(str(session_n), detail("session")),
        "transaction": Observation(str(transaction_n), detail("transaction")),
        "dedicated": Observation(str(dedicated.get("postgres", 0)), detail("dedicated")),
        "dedicated-auth": Observation(str(dedicated.get("pgbouncer", 0)),
                                      "the dedicated pooler's auth_query connection (role "
                                      "pgbouncer), idle in its own pool"),
        "direct": Observation(str(direct), "this experiment's observer connection"),
        "total": Observation(f"{total} <= {ctx.cfg.max_connections}"
                             if total <= ctx.cfg.max_connections
                             else f"{total} > {ctx.cfg.max_connections}",
                             f"direct {direct} + shared {sum(seen.get('shared', {}).values())}"
                             f" + dedicated {sum(dedicated.values())}; local socket backends "
                             f"(healthchecks) not counted"),
    }
    for endpoint in ("session", "dedicated", "transaction"):
        if endpoint == "transaction" and ctx.cfg.pool_sharing == "shared":
            # Transaction-mode clients queue in the inner pool behind session mode's backends:
            # closing session mode's server connections lets them through, so they finish.
            ctx.reconnect("session")
        deadline = time.monotonic() + 10
        for h in holders.get(endpoint, []):
            h.join(max(0.0, deadline - time.monotonic()))
    return result


def _prepared_lanes() -> tuple[Lane, ...]:
    return (
        Lane("direct", "direct", ENDPOINTS["direct"].label),
        Lane("session", "session", ENDPOINTS["session"].label),
        Lane("transaction", "transaction", ENDPOINTS["transaction"].label
             + " (Supavisor: off by default)"),
        Lane("dedicated-mps-0", "dedicated", "Dedicated pooler, max_prepared_statements=0 "
             "(as Supabase documents)"),
        Lane("dedicated-mps-100", "dedicated", "Dedicated pooler, max_prepared_statements=100 "
             "(PgBouncer 1.21+)"),
        Lane("transaction-no-prepare", "transaction",
             "Shared pooler, transaction mode, with the fix prepare_threshold=None"),
    )


def _catalogue() -> list[Experiment]:
    state_lanes = _lanes(*ALL4)
    pool2 = _only(POOL2, state_lanes)
    prepared_lanes = _prepared_lanes()
    set_leak_lanes = (*_lanes(*ALL4),
                      Lane("transaction-set-local", "transaction",
                           "Shared pooler, transaction mode, with the fix SET LOCAL"))
    starved_lanes = _lanes("direct", "transaction", "dedicated")
    wait = {"default_pool_size": 1, "query_wait_timeout": WAIT_TIMEOUT_S}
    return [
        Experiment(
            name="backend-identity",
            title="Backend identity across transactions",
            question="Two transactions on one connection, with another client in between: "
                     "do they run on the same Postgres backend?",
            why="Session mode and direct keep one backend per client for its whole "
                "connection. Transaction mode lends a backend for one transaction only: "
                "when another client takes it, the next transaction runs on another backend.",
            fix="Keep no state between transactions in transaction mode; anything that must "
                "outlive a transaction needs session mode or a direct connection.",
            lanes=state_lanes,
            expect={"direct": SAME, "session": SAME, "transaction": OTHER, "dedicated": OTHER},
            run=_backend_identity,
            settings=pool2,
        ),
        Experiment(
            name="set-leak",
            title="SET leaks between clients in transaction mode",
            question="Client A runs SET statement_timeout = '4321ms'. Which statement_timeout "
                     "does client B see?",
            why="A plain SET changes the backend, not the client. In transaction mode the "
                "backend goes back to the pool with A's setting, and the next client gets it "
                "(transaction-mode PgBouncer runs no reset query between clients).",
            fix="SET LOCAL inside a transaction, ALTER ROLE ... SET, or a connection startup "
                "parameter; never a plain SET through a transaction pooler.",
            lanes=set_leak_lanes,
            expect={"direct": ISOLATED, "session": ISOLATED, "transaction": LEAKED,
                    "dedicated": LEAKED, "transaction-set-local": ISOLATED},
            run=_set_leak,
            settings=_only(POOL2, set_leak_lanes),
        ),
        Experiment(
            name="sql-prepare",
            title="SQL PREPARE / EXECUTE across transactions",
            question="PREPARE in one transaction, EXECUTE in the next: does it work?",
            why="A prepared statement lives in the backend that prepared it; the next "
                "transaction may run on another backend (poolers do not track SQL PREPARE).",
            fix="Never use SQL-level PREPARE through a transaction pooler; use session mode "
                "or direct.",
            lanes=state_lanes,
            expect={"direct": WORKS, "session": WORKS, "transaction": MISSING,
                    "dedicated": MISSING},
            run=_state_lost("PREPARE pooler_lab_stmt AS SELECT 1", "EXECUTE pooler_lab_stmt",
                            MISSING, "26000"),
            settings=pool2,
        ),
        Experiment(
            name="protocol-prepared",
            title="Protocol-level prepared statements (psycopg prepare_threshold=0)",
            question="A driver that prepares its statements (psycopg prepare_threshold=0, "
                     "asyncpg, pgbench -M prepared): does it work through each pooler?",
            why="The driver prepares a named statement on one backend and later only binds it. "
                "Without pooler support the bind reaches another backend: 'prepared statement "
                "\"_pg3_0\" does not exist'. PgBouncer 1.21+ with max_prepared_statements > 0 "
                "re-prepares it on whichever backend the client gets (this experiment flips the "
                "setting at runtime through the admin console, which PgBouncer allows).",
            fix="Turn the driver's statement cache off (psycopg prepare_threshold=None, asyncpg "
                "statement_cache_size=0, postgres.js prepare:false, Prisma ?pgbouncer=true), "
                "or use session mode, direct, or a pooler with max_prepared_statements > 0.",
            lanes=prepared_lanes,
            expect={"direct": WORKS, "session": WORKS, "transaction": MISSING,
                    "dedicated-mps-0": MISSING, "dedicated-mps-100": WORKS,
                    "transaction-no-prepare": WORKS},
            run=_protocol_prepared,
            settings=_only(POOL2, prepared_lanes),
            also_changes="max_prepared_statements on the dedicated pooler (0, then 100)",
        ),
        Experiment(
            name="advisory-lock",
            title="Session advisory locks",
            question="pg_advisory_lock(k) in one transaction, pg_advisory_unlock(k) in the "
                     "next: is the lock released?",
            why="A session lock belongs to the backend. The unlock runs on another backend, "
                "returns false with a WARNING, and the lock stays held by a pooled backend "
                "that no client controls.",
            fix="pg_advisory_xact_lock (released at commit) inside one transaction, or "
                "session mode / direct for session locks.",
            lanes=state_lanes,
            expect={"direct": UNLOCKED, "session": UNLOCKED, "transaction": LOCK_LEAKED,
                    "dedicated": LOCK_LEAKED},
            run=_advisory_lock,
            settings=pool2,
        ),
        Experiment(
            name="listen-notify",
            title="LISTEN / NOTIFY",
            question="A client LISTENs; another client NOTIFYs. Does the listener hear it?",
            why="LISTEN registers the backend, not the client. In transaction mode the "
                "notification reaches a backend that sits idle in the pool; PgBouncer drops "
                "it ('got packet 'A' from server when not linked').",
            fix="Listen on a session-mode or direct connection (Supabase Realtime is the "
                "managed alternative).",
            lanes=state_lanes,
            expect={"direct": RECEIVED, "session": RECEIVED, "transaction": MISSED,
                    "dedicated": MISSED},
            run=_listen_notify,
            settings=pool2,
        ),
        Experiment(
            name="temp-table",
            title="Temporary tables",
            question="CREATE TEMP TABLE in one transaction, SELECT from it in the next: "
                     "is it there?",
            why="Temporary tables belong to the backend's session; the next transaction runs "
                "on another backend (and the table stays behind on the first one).",
            fix="CREATE TEMP TABLE ... ON COMMIT DROP and use it inside one transaction; or "
                "session mode / direct.",
            lanes=state_lanes,
            expect={"direct": WORKS, "session": WORKS, "transaction": MISSING,
                    "dedicated": MISSING},
            run=_state_lost("CREATE TEMP TABLE pooler_lab_tmp (x int)",
                            "SELECT count(*) FROM pooler_lab_tmp", MISSING, "42P01"),
            settings=pool2,
        ),
        Experiment(
            name="with-hold-cursor",
            title="WITH HOLD cursors",
            question="DECLARE ... CURSOR WITH HOLD, then FETCH in a later transaction: "
                     "does it fetch?",
            why="A held cursor outlives its transaction but not its backend.",
            fix="Declare and fetch the cursor inside one transaction, or use session mode / "
                "direct.",
            lanes=state_lanes,
            expect={"direct": WORKS, "session": WORKS, "transaction": MISSING,
                    "dedicated": MISSING},
            run=_state_lost("DECLARE pooler_lab_cur CURSOR WITH HOLD FOR "
                            "SELECT generate_series(1, 3)",
                            "FETCH 1 FROM pooler_lab_cur", MISSING, "34000"),
            settings=pool2,
        ),
        Experiment(
            name="currval",
            title="currval after nextval in another transaction",
            question="nextval('s') in one transaction, currval('s') in the next: "
                     "what comes back?",
            why="currval reports the last nextval of this backend's session; on another "
                "backend it is undefined (55000).",
            fix="INSERT ... RETURNING id, or nextval and its use in the same transaction.",
            lanes=state_lanes,
            expect={"direct": WORKS, "session": WORKS, "transaction": NOT_DEFINED,
                    "dedicated": NOT_DEFINED},
            run=_currval,
            settings=pool2,
            also_changes=f"creates sequence {SEQUENCE} and drops it after",
        ),
        Experiment(
            name="load-library",
            title="LOAD a library in one transaction, use it in the next",
            question="LOAD 'auto_explain' in one transaction: are its settings there in the "
                     "next one?",
            why="LOAD brings a library into the backend that ran it, for that backend's "
                "life. The next transaction may run on another backend, which never loaded "
                "it: its settings are unknown there (42704).",
            fix="Load libraries for every backend: session_preload_libraries (ALTER ROLE ... "
                "SET session_preload_libraries) or shared_preload_libraries; or session mode / "
                "direct.",
            lanes=state_lanes,
            expect={"direct": WORKS, "session": WORKS, "transaction": NOT_LOADED,
                    "dedicated": NOT_LOADED},
            run=_state_lost("LOAD 'auto_explain'", "SHOW auto_explain.log_min_duration",
                            NOT_LOADED, "42704"),
            settings=pool2,
        ),
        Experiment(
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
            lanes=state_lanes,
            expect={"direct": APPLIED, "session": STARTUP_REFUSED,
                    "transaction": STARTUP_REFUSED, "dedicated": STARTUP_REFUSED},
            run=_startup_options,
            settings=pool2,
        ),
        Experiment(
            name="idle-in-transaction",
            title="Idle-in-transaction clients starve the pool",
            question="Pool size 1: one client opens a transaction and goes idle. What happens "
                     "to the next client?",
            why="An open transaction keeps its backend even when the client does nothing. "
                "The next client queues: SHOW POOLS shows cl_waiting 1 and maxwait climbing "
                "until query_wait_timeout ends the wait with an error.",
            fix="Commit promptly; set idle_transaction_timeout (PgBouncer) or "
                "idle_in_transaction_session_timeout (Postgres); never wait for user input "
                "inside a transaction.",
            lanes=starved_lanes,
            expect={"direct": SERVED, "transaction": STARVED, "dedicated": STARVED},
            run=_per_lane(_idle_in_transaction),
            settings={"transaction": wait, "dedicated": wait},
        ),
        Experiment(
            name="max-client-conn",
            title="More clients than max pooler clients",
            question="What does the client after the last allowed one see?",
            why="Each pooler accepts at most max_client_conn client connections (its admin "
                "console connections included) and refuses the next at login. The experiment "
                "lowers max_client_conn to 2 above the clients already connected.",
            fix="Raise max pooler clients (a bigger compute tier on Supabase), or use fewer "
                "connections per application instance (a client-side pool).",
            lanes=_lanes("session", "transaction", "dedicated"),
            expect={"session": MAX_CLIENT_CONN_ERROR, "transaction": MAX_CLIENT_CONN_ERROR,
                    "dedicated": MAX_CLIENT_CONN_ERROR},
            run=_per_lane(_max_client_conn),
            also_changes="max_client_conn on each pooler (2 above its current clients)",
        ),
        Experiment(
            name="max-connections",
            title="More direct clients than max_connections",
            question="Direct connections until Postgres refuses one: what does it say?",
            why="Every direct client is a backend. When all max_connections slots are taken "
                "(the postgres role may use the superuser-reserved ones too), Postgres refuses "
                "the next connection.",
            fix="Put a pooler in front (transaction mode for many short-lived clients), or "
                "lower each application's pool; max_connections follows the compute tier.",
            lanes=_lanes("direct"),
            expect={"direct": TOO_MANY_CLIENTS_ERROR},
            run=_max_connections,
        ),
        Experiment(
            name="session-exhaustion",
            title="Session-mode exhaustion by serverless clients",
            question="Pool size 2 and two serverless functions that keep their connection "
                     "open: what does the third function see, in session and in transaction "
                     "mode?",
            why="In session mode every connected client holds a backend until it "
                "disconnects, idle or not, so client N+1 cannot get one. PgBouncer queues it "
                "until query_wait_timeout; Supavisor 2.8+ refuses it at once with "
                "'(EMAXCONNSESSION) max clients reached in session mode - max clients are "
                "limited to pool_size: N'. Transaction mode lends the backends per "
                "transaction and serves it.",
            fix="Serverless and edge functions use transaction mode (port 6543); session mode "
                "is for persistent servers with a bounded number of connections.",
            lanes=_lanes("session", "transaction"),
            expect={"session": QUERY_WAIT_TIMEOUT_ERROR, "transaction": SERVED},
            run=_per_lane(_session_exhaustion),
            settings={"session": {"default_pool_size": 2,
                                  "query_wait_timeout": WAIT_TIMEOUT_S},
                      "transaction": {"default_pool_size": 2}},
        ),
        Experiment(
            name="backend-budget",
            title="The backend budget",
            question="With both shared-pooler modes and the dedicated pooler saturated, how "
                     "many Postgres backends exist, and does it fit max_connections?",
            why="Supabase's formula: direct + shared-pooler backends + dedicated-pooler "
                "backends <= max_connections. Each pooler opens up to its pool size; with "
                "one pool per mode (Supavisor's code) the shared pooler can hold twice the "
                "pool size, with a shared pool (Supabase's docs since Nov 2025) once. The "
                "dedicated pooler also keeps one backend for its auth_query (role pgbouncer). "
                "Expected numbers follow the lab's settings (here: a default micro lab).",
            fix="Size pools so that 2 x shared + dedicated + your direct clients stay below "
                "max_connections (Studio warns above 80% of it; keep 40% when the Data API is "
                "busy).",
            lanes=(
                Lane("session", "session", "Shared pooler, session mode: backends"),
                Lane("transaction", "transaction",
                     "Shared pooler, transaction mode: backends"),
                Lane("dedicated", "dedicated", "Dedicated pooler: backends (role postgres)"),
                Lane("dedicated-auth", "dedicated",
                     "Dedicated pooler: auth_query backend (role pgbouncer)"),
                Lane("direct", "direct", "Direct: backends"),
                Lane("total", "direct", "All client backends vs max_connections"),
            ),
            expect=_budget_expected,
            run=_backend_budget,
        ),
    ]


CATALOGUE: tuple[Experiment, ...] = tuple(_catalogue())


def names() -> list[str]:
    return [e.name for e in CATALOGUE]


def get(name: str) -> Experiment:
    for exp in CATALOGUE:
        if exp.name == name:
            return exp
    raise ConfigError(f"no experiment named {name!r}",
                      fix=f"lab experiment list shows them: {', '.join(names())}")


def select(chosen: Sequence[str], run_all: bool) -> list[Experiment]:
    if run_all and chosen:
        raise ConfigError("give experiment names or --all, not both",
                          fix="lab experiment run --all")
    if run_all:
        return list(CATALOGUE)
    if not chosen:
        raise ConfigError("no experiment given", fix="lab experiment run NAME (or --all)")
    return [get(n) for n in chosen]


# -- running ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _exclusive(state: LabState) -> Iterator[None]:
    state.dir.mkdir(parents=True, exist_ok=True)
    with open(state.dir / LOCK_FILE, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StackError(f"another `lab experiment run` is using lab {state.name!r}",
                             fix="wait for it to finish") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def restore_interrupted(ctx: Context, log: Callable[[str], None]) -> None:
    """Undo runtime settings an earlier, killed run left behind (see the module docstring)."""
    path = _journal_path(ctx.state)
    if not path.exists():
        return
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        path.unlink(missing_ok=True)
        return
    ids = {c.service: c.id for c in ctx.containers}
    same = data.get("containers", {}) == ids
    if same:
        log("restoring pooler settings left behind by an interrupted experiment")
        ctx._original = {ep: dict(v) for ep, v in data.get("settings", {}).items()}
        failed = ctx.restore()
        if failed:
            raise StackError(f"could not restore {', '.join(failed)}",
                             fix=f"lab down{name_flag(ctx.cfg.name)} && "
                                 f"lab up{name_flag(ctx.cfg.name)}")
    path.unlink(missing_ok=True)  # restarted containers read their files again


def _clean_up(ctx: Context, exp: Experiment) -> list[str]:
    ctx.close_all()
    failed = ctx.restore()
    for endpoint in exp.poolers():
        with contextlib.suppress(Exception):
            ctx.reconnect(endpoint)  # drop backends this experiment polluted
    return failed


def _shielded(fn: Callable[[], list[str]]) -> tuple[list[str], bool]:
    """Run an idempotent clean-up to the end even if Ctrl-C arrives during it (it restarts)."""
    interrupted = False
    for _ in range(5):
        try:
            return fn(), interrupted
        except KeyboardInterrupt:
            interrupted = True
    return ["clean-up interrupted repeatedly"], interrupted


def run_one(ctx: Context, exp: Experiment, override: Mapping[str, str] | None = None
            ) -> ExperimentResult:
    expected = exp.expected(ctx.cfg)
    expected.update(override or {})
    started = time.monotonic()
    observed: dict[str, Observation] = {}
    error: str | None = None
    setup_error: ExperimentSetupError | None = None
    ctx.experiment = exp
    try:
        for endpoint in exp.poolers():
            ctx.set(endpoint, "query_wait_timeout",
                    exp.settings.get(endpoint, {}).get("query_wait_timeout", SAFE_QUERY_WAIT_S))
            for key, value in exp.settings.get(endpoint, {}).items():
                ctx.set(endpoint, key, value)
            ctx.drain(endpoint)
        observed = exp.run(ctx)
    except ExperimentSetupError as exc:
        setup_error = exc
    except LabError as exc:
        error = exc.one_line()
    except pg.Error as exc:
        error = describe_error(exc)
    except Exception as exc:  # one broken experiment must not hide the others' results
        error = f"{type(exc).__name__}: {_first_line(exc)}"
    finally:
        failed, interrupted = _shielded(lambda: _clean_up(ctx, exp))
        if interrupted:
            raise KeyboardInterrupt
        if failed:
            raise StackError(f"could not restore {', '.join(failed)} after {exp.name}",
                             fix=f"the next lab experiment run{name_flag(ctx.cfg.name)} "
                                 f"restores it, or lab down && lab up")
    if setup_error is not None:
        raise setup_error  # the lab is busy: every further experiment would fail the same way
    lanes = tuple(
        LaneResult(lane.key, lane.endpoint, lane.label, expected[lane.key],
                   observed[lane.key].outcome if lane.key in observed else "not run",
                   observed[lane.key].detail if lane.key in observed else (error or ""))
        for lane in exp.lanes
    )
    return ExperimentResult(exp.name, exp.title, exp.question, exp.fix, lanes,
                            time.monotonic() - started, error)


def run(chosen: Sequence[str] = (), lab_name: str = "default", *, run_all: bool = False,
        expect: Sequence[str] = (), log: Callable[[str], None] = lambda _text: None,
        on_result: Callable[[ExperimentResult], None] | None = None
        ) -> list[ExperimentResult]:
    """Run the chosen experiments (or all) against a running lab, restoring it after each."""
    experiments = select(chosen, run_all)
    overrides = parse_expect(expect)
    cfg, state, containers = stack.require_running(lab_name)
    if cfg.pool_sharing == "shared" and cfg.pool_size < 2:
        # Both modes' backends come from one inner pool the admin consoles cannot resize;
        # two clients at once (most experiments) would queue there for query_wait_timeout.
        raise ConfigError("the experiments need pool size 2 or more with pool_sharing 'shared'",
                          fix=f"lab up{name_flag(lab_name)} --pool-size 2")
    ctx = Context(cfg, state, endpoints(cfg, containers), containers)
    results = []
    with _exclusive(state):
        try:
            restore_interrupted(ctx, log)
            for exp in experiments:
                log(f"running {exp.name}")
                result = run_one(ctx, exp, overrides.get(exp.name))
                results.append(result)
                if on_result is not None:
                    on_result(result)
        finally:
            ctx.close_admins()
    return results


def check(results: Sequence[ExperimentResult], lab_name: str = "default") -> None:
    """Raise ExpectationFailed when any experiment observed something other than expected."""
    failed = [r for r in results if not r.passed]
    if not failed:
        return
    parts = []
    for r in failed:
        if r.error:
            parts.append(f"{r.name} ({r.error})")
        else:
            lanes = ", ".join(f"{ln.key} {ln.observed!r}, expected {ln.expected!r}"
                              for ln in r.failures())
            parts.append(f"{r.name} ({lanes})")
    raise ExpectationFailed(
        f"{len(failed)} of {len(results)} experiment(s) observed something else: "
        + "; ".join(parts),
        fix=f"lab doctor{name_flag(lab_name)}, and compare the lab's settings "
            f"(lab status{name_flag(lab_name)}) with a stock lab",
    )


# -- the workshop guide ----------------------------------------------------------------------

GUIDE_BEGIN = "<!-- experiments:begin (generated by `lab experiment list --markdown`) -->"
GUIDE_END = "<!-- experiments:end -->"


def guide_markdown(cfg: LabConfig | None = None) -> str:
    """The experiments part of docs/workshop.md, generated from the definitions above."""
    cfg = cfg or load_config("default")
    out = [GUIDE_BEGIN, ""]
    for n, exp in enumerate(CATALOGUE, 1):
        out += [f"### {n}. {exp.title}", "", "```sh", f"lab experiment run {exp.name}", "```",
                "", f"**Ask the room:** {exp.question}", ""]
        changes = []
        for endpoint, values in exp.settings.items():
            changes.append(f"{endpoint}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
        if exp.also_changes:
            changes.append(exp.also_changes)
        if changes:
            out += ["Runs with (restored after): " + "; ".join(changes) + ".", ""]
        out += ["| lane | expected |", "|---|---|"]
        expected = exp.expected(cfg)
        for lane in exp.lanes:
            out.append(f"| {lane.label} (`{lane.key}`) | `{expected[lane.key]}` |")
        out += ["", f"**What they should observe:** {exp.why}", "", f"**Fix:** {exp.fix}",
                ""]
    out.append(GUIDE_END)
    return "\n".join(out) + "\n"


def guide_section(text: str) -> str:
    """The generated section of a guide (markers included), or '' if it has none."""
    begin, end = text.find(GUIDE_BEGIN), text.find(GUIDE_END)
    if begin < 0 or end < 0:
        return ""
    return text[begin:end + len(GUIDE_END)] + "\n"


def catalogue_json(cfg: LabConfig | None = None) -> list[dict[str, Any]]:
    cfg = cfg or load_config("default")
    return [{"name": e.name, "title": e.title, "question": e.question, "why": e.why,
             "fix": e.fix, "settings": {k: dict(v) for k, v in e.settings.items()},
             "lanes": [{"lane": ln.key, "endpoint": ln.endpoint, "label": ln.label,
                        "expected": e.expected(cfg)[ln.key]} for ln in e.lanes]}
            for e in CATALOGUE]


def update_guide(path: Path) -> bool:
    """Rewrite the generated section of a guide in place; True when it changed."""
    text = path.read_text()
    current = guide_section(text)
    if not current:
        raise ConfigError(f"{path} has no {GUIDE_BEGIN!r} ... {GUIDE_END!r} section",
                          fix="add the two marker lines where the experiments belong")
    fresh = guide_markdown()
    if current == fresh:
        return False
    path.write_text(text.replace(current, fresh))
    return True
