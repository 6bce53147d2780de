"""What an experiment's function works with: client connections, the poolers' admin consoles,
runtime SETs with their restore journal, and the server's own error texts.

Every SET is undone afterwards: the original values are written to
``<lab state>/experiment-restore.json`` before the first ``SET`` and restored (then the file
removed) by ``Context.restore``; a run killed outright leaves the file, and the next run
restores from it first (``restore_interrupted``).

Only psycopg through ``lab.pg``: this runs in the orchestrator process.
"""

from __future__ import annotations

import contextlib
import gc
import json
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lab import engine, pg, render
from lab.config import LabConfig
from lab.connect import EndpointInfo
from lab.errors import LabError, StackError
from lab.experiments.model import Experiment
from lab.render import ADMIN_USER
from lab.state import LabState, name_flag

APP = "pooler-lab-experiment"
RESTORE_FILE = "experiment-restore.json"
DRAIN_TIMEOUT_S = 5.0
_SETTING_RE = re.compile(r"^[a-z_]+$")
_VALUE_RE = re.compile(r"^[A-Za-z0-9_.]+$")


# Long enough for two lost SYNs (TCP retries after 1 s, then 2 s more): in the test suite a
# first connection through a published port stalled past 5 s right after runs that had
# opened connections until refused, while the same connect with a longer timeout went
# through at once.
CONNECT_TIMEOUT_S = 10
# Logins in flight at once when an experiment opens many clients (Context.connect_many). A
# login costs the client about 2.6 ms of CPU with the SCRAM keys given (TLS, psycopg) and the
# server its own TLS and SCRAM: 8 overlap the two; 4 and 16 were no better on 2 cores
# (docs/benchmarks.md), and PgBouncer's listen_backlog (128) is far away.
LOGIN_CONCURRENCY = 8
PROGRESS_EVERY_S = 5.0


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
        # `lab experiment run --real-limits`: the limit experiments hold the lab's own limits.
        self.real_limits = False
        self.log: Callable[[str], None] = lambda _text: None
        self._scram_keys: dict[str, str] | None = None

    # connections ---------------------------------------------------------------------------
    def connect(self, endpoint: str, *, autocommit: bool = True, application_name: str = APP,
                prepare_threshold: int | None = None, **kwargs):
        """A client connection to ``endpoint``; psycopg never prepares unless asked to."""
        conn = pg.connect(self.eps[endpoint], self.password, autocommit=autocommit,
                          application_name=application_name, timeout=CONNECT_TIMEOUT_S,
                          prepare_threshold=prepare_threshold, **kwargs)
        with self._lock:
            self._conns.append(conn)
        return conn

    def connect_many(self, endpoint: str, count: int, *,
                     concurrency: int = LOGIN_CONCURRENCY) -> tuple[int, BaseException | None]:
        """Open up to ``count`` client connections to ``endpoint`` (kept until ``close_all``),
        ``concurrency`` logins at a time, until one is refused: how many opened, and the first
        refusal (None: none came).

        Each login is a real one (TLS as `lab connect` prints it, SCRAM over the wire); with
        libpq 18 the client is given SCRAM's keys instead of deriving them from the password
        each time (``render.client_scram_keys``), which made 12,000 logins from one process
        2.5 times faster. A lab whose postgres password was changed by hand refuses those keys:
        the logins then derive them, as any client does."""
        if count <= 0:
            return 0, None
        opened, refusal = self._connect_many(endpoint, 1, 1, self._keys())
        if refusal is not None and self._scram_keys and _is_auth_failure(refusal):
            self._scram_keys = {}
            opened, refusal = self._connect_many(endpoint, 1, 1, {})
        if refusal is not None:
            return opened, refusal
        more, refusal = self._connect_many(endpoint, count - 1, concurrency, self._keys())
        return opened + more, refusal

    def _keys(self) -> dict[str, str]:
        if self._scram_keys is None:
            self._scram_keys = (render.client_scram_keys(self.state.secrets())
                                if pg.scram_keys_supported() else {})
        return self._scram_keys

    def _connect_many(self, endpoint: str, count: int, concurrency: int,
                      keys: dict[str, str]) -> tuple[int, BaseException | None]:
        issued = opened = 0
        refusal: BaseException | None = None
        lock = threading.Lock()
        started = last_report = time.monotonic()

        def worker() -> None:
            nonlocal issued, opened, refusal, last_report
            while True:
                with lock:
                    if refusal is not None or issued >= count:
                        return
                    issued += 1
                try:
                    self.connect(endpoint, **keys)
                except pg.Error as exc:
                    with lock:
                        refusal = refusal or exc
                    return
                with lock:
                    opened += 1
                    now = time.monotonic()
                    if now - last_report >= PROGRESS_EVERY_S:
                        last_report = now
                        self.log(f"{endpoint}: {opened:,} of {count:,} clients connected "
                                 f"({now - started:.0f} s)")

        threads = [threading.Thread(target=worker, name=f"experiment-login-{i}", daemon=True)
                   for i in range(max(1, min(concurrency, count)))]
        # The cyclic collector would walk every connection already held again and again while
        # thousands more are opened (10% of a 2,500-client fill); the connections hold no
        # cycles to collect.
        collecting = gc.isenabled()
        gc.disable()
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                thread.join()
        except BaseException:  # Ctrl-C: no further logins; the clean-up closes the rest
            with lock:
                issued = count
            raise
        finally:
            if collecting:
                gc.enable()
        return opened, refusal

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
            host, port, params = ep.address(bench=True)
            conn = pg.admin_connect(host, port, ADMIN_USER, self.admin_password,
                                    timeout=CONNECT_TIMEOUT_S, **params)
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
                    failed.append(f"{endpoint} {key}={value} ({first_line(exc)})")
        if not failed:
            self._original.clear()
            journal_path(self.state).unlink(missing_ok=True)
        return failed

    def _write_journal(self) -> None:
        ids = {c.service: c.id for c in self.containers}
        data = {"project": self.cfg.project, "containers": ids,
                "settings": self._original}
        path = journal_path(self.state)
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
        """Client backends per origin (direct, shared, dedicated, local) and role; samplers'
        own (a `lab watch` or `lab status` beside the experiment) are not counted."""
        from lab.sampler import SAMPLER_APP

        rows = pg.rows(conn, """
            SELECT CASE WHEN client_addr IS NULL THEN 'local'
                        WHEN host(client_addr) IN ('127.0.0.1', '::1') THEN 'dedicated'
                        WHEN host(client_addr) = ANY(%(shared)s::text[]) THEN 'shared'
                        ELSE 'direct' END AS origin,
                   coalesce(usename, '') AS role, application_name AS app, count(*) AS n
            FROM pg_stat_activity WHERE backend_type = 'client backend'
              AND application_name IS DISTINCT FROM %(sampler)s
            GROUP BY 1, 2, 3""", {"shared": self.shared_addresses, "sampler": SAMPLER_APP})
        result: dict[str, dict[str, int]] = {}
        for r in rows:
            origin = result.setdefault(r["origin"], {})
            origin[r["role"]] = origin.get(r["role"], 0) + int(r["n"])
            apps = result.setdefault("app:" + r["origin"], {})
            apps[r["app"]] = apps.get(r["app"], 0) + int(r["n"])
        return result


def journal_path(state: LabState) -> Path:
    return state.dir / RESTORE_FILE


def restore_interrupted(ctx: Context, log: Callable[[str], None]) -> None:
    """Undo runtime settings an earlier, killed run left behind (see the module docstring)."""
    path = journal_path(ctx.state)
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


# -- the server's own texts ------------------------------------------------------------------


def first_line(exc: BaseException) -> str:
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
    return (match.group(1) if match else first_line(exc)).strip()


def classified(exc: BaseException) -> str:
    """'<error class>: <message>' (lab.classify), without libpq's "consuming input failed: "
    prefix: an outcome that names what a client saw."""
    from lab.classify import classify

    cls, _, message = classify(exc)
    return f"{cls}: {message.removeprefix('consuming input failed: ')}"


def _is_auth_failure(exc: BaseException) -> bool:
    """A login refused for its credentials (SQLSTATE 28P01/28000), not for a limit."""
    sqlstate = getattr(exc, "sqlstate", None) or ""
    return sqlstate.startswith("28") or "authentication failed" in str(exc)


def describe_error(exc: BaseException) -> str:
    sqlstate = getattr(exc, "sqlstate", None)
    return f"{server_message(exc)}" + (f" ({sqlstate})" if sqlstate else "")
