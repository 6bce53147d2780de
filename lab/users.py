"""psycopg load users for Locust: what runs inside each Locust process.

Import this only from a locustfile. It imports Locust first (which gevent-patches the process)
and psycopg second, and refuses to load when psycopg locked in its blocking C wait function (an
earlier ``import psycopg``): under that function every greenlet waits for the others and a
"concurrent" load runs one query at a time.

Three user shapes, one per way an application holds connections:

``InvocationUser`` (open loop, serverless)
    Arrivals come from a seeded schedule (``lab.schedule``: low base rate, periodic spikes) into
    one queue per process; each user is one slot of concurrency (users = the most invocations
    running at once). An invocation connects, runs its queries, closes. ``total_ms`` counts from
    the scheduled start, so a backlog shows up as latency (no coordinated omission).
``AppServerUser`` (persistent servers)
    Each user is one app server with its own ``psycopg_pool.ConnectionPool`` (fixed size) and its
    own steady arrival stream; each arrival runs in its own greenlet (bounded in flight), so a
    pool checkout wait is ``connect_ms`` and part of the latency.
``SessionUser`` (closed loop)
    Locust's classic shape: each user holds one connection and runs its tasks back to back.

Every request writes one ``requests/1`` row (docs/formats.md; ``lab.samples``) and fires
Locust's ``events.request`` with ``total_ms``, so Locust's own statistics, CSV and UI work too.
Connections are always autocommit. ``prepare_threshold``: the ``prepare_threshold`` scenario
parameter; None ("auto") means off on transaction-mode endpoints (``transaction``,
``dedicated``, and a ``target`` on port 6543, Supabase's transaction port) and psycopg's
default (prepare after 5 runs) elsewhere; ``off`` never prepares; a number is psycopg's
threshold (0 = prepare at once), which on a transaction pooler shows the prepared-statement
errors.

Configuration comes from the environment (set by ``lab run``; all optional for plain
``locust -f scenario.py --host postgresql://...``):

    LAB_RUN_DIR      samples go to LAB_RUN_DIR/requests/, spike windows to LAB_RUN_DIR/schedule/;
                     unset: no files, only Locust's events
    LAB_ENDPOINT     endpoint name for the rows (default "target")
    LAB_SCENARIO     scenario name for the rows (default: the locustfile name, _ as -)
    LAB_TARGET_URI   libpq URI with password (default: Locust's --host)
    LAB_TARGET_URIS  JSON {endpoint: uri}: lets a user class pick its own endpoint (mixed)
    LAB_PARAMS       JSON object of scenario parameters (strings or typed values)
    LAB_SEED         arrival-schedule seed (default 1)
    LAB_WORKERS      number of Locust worker processes sharing the arrival rate (default 1)
"""

from __future__ import annotations

# isort: off
import locust  # noqa: F401  (first: gevent must patch the process before psycopg is imported)
import psycopg
import psycopg.waiting

# isort: on

if psycopg.waiting.wait.__name__ == "wait_c":  # pragma: no cover - exercised in a subprocess
    raise ImportError(
        "psycopg was imported before locust, so it uses its blocking C wait function and every "
        "Locust user would run one at a time; import lab.users (or locust) before psycopg"
    )

import contextlib  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Mapping  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402
from urllib.parse import unquote, urlsplit  # noqa: E402

import gevent  # noqa: E402
import gevent.lock  # noqa: E402
import gevent.pool  # noqa: E402
import gevent.queue  # noqa: E402
import psycopg_pool  # noqa: E402
from locust import User, constant, events, task  # noqa: E402
from locust.exception import StopUser  # noqa: E402
from locust.runners import MasterRunner  # noqa: E402

from lab import samples, scenarios  # noqa: E402
from lab import schedule as schedmod  # noqa: E402
from lab.classify import classify  # noqa: E402

__all__ = ["AppServerUser", "InvocationUser", "LabUser", "Request", "SessionUser", "StopUser",
           "constant", "params", "task"]

log = logging.getLogger("lab.users")
NAN = math.nan
TRANSACTION_ENDPOINTS = ("transaction", "dedicated")
SUPABASE_TRANSACTION_PORT = 6543
APP_NAME_MAX = 63  # Postgres truncates application_name to NAMEDATALEN - 1
FLUSH_INTERVAL_S = 1.0
# gevent's loop (libev on epoll) waits in whole milliseconds, at least one, so gevent.sleep()
# wakes up to about 1 ms late, and total_ms would count that as latency (0.7-1.0 ms at the
# median, measured: bench/load_vs_pgbench.py). An arrival sleeps to within this much of its
# due time, then yields to the other greenlets until it comes (costs about 0.5 ms of CPU per
# sparse arrival; none when arrivals are closer together than this).
ARRIVAL_SPIN_S = 0.0012
_PSYCOPG_DEFAULT = object()  # leave prepare_threshold at psycopg's own default


class RequestFailed(Exception):
    """What Locust's statistics see for a failed request: the class and the clean message."""


# -- process-wide state --------------------------------------------------------------------------


class _Process:
    """Configuration and sample writer of this Locust process (one per process)."""

    def __init__(self, environ: Mapping[str, str] = os.environ):
        run_dir = environ.get("LAB_RUN_DIR")
        self.run_dir = Path(run_dir) if run_dir else None
        self.endpoint = environ.get("LAB_ENDPOINT") or "target"
        self.scenario_env = environ.get("LAB_SCENARIO") or None
        self.target_uri = environ.get("LAB_TARGET_URI") or None
        self.target_uris: dict[str, str] = _json_object(environ, "LAB_TARGET_URIS")
        self.raw_params: dict[str, Any] = _json_object(environ, "LAB_PARAMS")
        self.seed = _int_env(environ, "LAB_SEED", 1)
        self.workers = max(1, _int_env(environ, "LAB_WORKERS", 1))
        self.params: dict[str, Any] | None = None  # set by params(PARAMS)
        self.environment = None
        # One wall-clock anchor; every stamp is anchor + a perf_counter difference.
        self.anchor_wall = time.time()
        self.anchor_perf = time.perf_counter()
        self.writer: samples.ChunkWriter | None = None
        self.flusher = None
        self.write_lock = gevent.lock.Semaphore()
        self.streams: dict[str, _ArrivalStream] = {}
        self.stopping = False
        self.t0_perf: float | None = None
        self.user_ids = itertools.count()
        self.secrets = _passwords([self.target_uri, *self.target_uris.values()])

    # -- clocks and identity

    def wall(self, perf: float) -> float:
        return self.anchor_wall + (perf - self.anchor_perf)

    @property
    def worker(self) -> int:
        runner = getattr(self.environment, "runner", None)
        return max(0, int(getattr(runner, "worker_index", 0) or 0))

    @property
    def is_master(self) -> bool:
        return isinstance(getattr(self.environment, "runner", None), MasterRunner)

    def scenario_of(self, cls: type) -> str:
        if self.scenario_env:
            return self.scenario_env
        module = sys.modules.get(cls.__module__)
        path = getattr(module, "__file__", None)
        return scenarios.builtin_name(Path(path)) if path else cls.__name__

    def target(self, endpoint: str | None, host: str | None) -> tuple[str, str]:
        """(endpoint name, URI) for a user class that asks for ``endpoint`` (None: the run's)."""
        if endpoint and endpoint in self.target_uris:
            return endpoint, self.target_uris[endpoint]
        uri = self.target_uri
        if not uri and host and host.startswith(("postgres://", "postgresql://")):
            uri = host  # plain `locust -f scenario.py --host postgresql://...`
            self.secrets = (*self.secrets, *_passwords([host]))
        if not uri:
            raise RuntimeError("no database to load: set LAB_TARGET_URI or pass "
                               "--host postgresql://user:password@host:port/db")
        return self.endpoint, uri

    # -- samples

    def record(self, row: tuple) -> None:
        if self.run_dir is None:
            return
        if self.writer is None:
            self.writer = samples.ChunkWriter(self.run_dir, self.worker,
                                              interval=math.inf)  # flushed by the flusher
            self.flusher = gevent.spawn(self._flush_loop)
        self.writer.add(row)

    def _flush_loop(self) -> None:
        pool = gevent.get_hub().threadpool
        while True:
            gevent.sleep(FLUSH_INTERVAL_S)
            with self.write_lock:
                rows, path = self.writer.take()
                if rows:
                    try:
                        # On a real thread: Arrow and Parquet release the GIL for most of
                        # their work, so the users keep running (and measuring) meanwhile.
                        pool.apply(self.writer.write, (rows, path))
                    except Exception:  # a full disk must not stop the load
                        log.exception("could not write a requests chunk")

    def flush(self) -> None:
        """Write every buffered row now (after any chunk being written in the background)."""
        if self.writer is None:
            return
        with self.write_lock:
            try:
                self.writer.flush()
            except Exception:
                log.exception("could not write a requests chunk")

    # -- arrival schedules

    def start_test(self, environment) -> None:
        self.environment = environment
        self.stopping = False
        if self.is_master:
            return
        self.t0_perf = time.perf_counter()
        for stream in self.streams.values():
            stream.stop()
        self.streams = {}
        for cls in environment.user_classes:
            if isinstance(cls, type) and issubclass(cls, InvocationUser) and not cls.abstract:
                key = cls.stream_key()
                if key not in self.streams:
                    self.streams[key] = _ArrivalStream(key, cls.arrival_schedule(), self)
        for stream in self.streams.values():
            stream.start(self.t0_perf)
        self.write_schedule(duration=_run_time(environment))

    def stop_test(self) -> None:
        if self.is_master:
            return
        for stream in self.streams.values():
            stream.stop()
        self.flush()
        if self.t0_perf is not None:
            self.write_schedule(duration=time.perf_counter() - self.t0_perf)

    def stream(self, key: str) -> _ArrivalStream:
        stream = self.streams.get(key)
        if stream is None:  # users started without a test_start (Locust as a library)
            self.start_test(self.environment)
            stream = self.streams[key]
        return stream

    def write_schedule(self, duration: float | None) -> None:
        if self.run_dir is None or self.t0_perf is None:
            return
        t0 = self.wall(self.t0_perf)
        spikes: list[list[float]] = []
        for stream in self.streams.values():
            if duration:
                spikes += schedmod.spike_windows(stream.schedule, t0, duration)
        data = {"t0": t0, "duration_s": duration, "worker": self.worker,
                "workers": self.workers, "seed": self.seed,
                "spikes": sorted(spikes),
                "streams": {k: _schedule_json(s.schedule) for k, s in self.streams.items()},
                # arrivals still queued when the test stopped: never started, so no row
                "unserved": {k: s.backlog for k, s in self.streams.items()},
                "params": self.params if self.params is not None else self.raw_params}
        folder = self.run_dir / "schedule"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.endpoint}-{self.worker}.json"
        tmp = folder / f".{path.name}.tmp"
        tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
        os.replace(tmp, path)


def _json_object(environ: Mapping[str, str], key: str) -> dict[str, Any]:
    text = environ.get(key)
    if not text:
        return {}
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError(f"{key} must be a JSON object")
    return value


def _int_env(environ: Mapping[str, str], key: str, default: int) -> int:
    text = environ.get(key)
    return int(text) if text else default


def _passwords(uris) -> tuple[str, ...]:
    found = []
    for uri in uris:
        if uri:
            with contextlib.suppress(ValueError):
                password = urlsplit(uri).password
                if password:
                    found.append(unquote(password))
    return tuple(found)


def _run_time(environment) -> float | None:
    options = getattr(environment, "parsed_options", None)
    value = getattr(options, "run_time", None)
    return float(value) if value else None


def _schedule_json(s: schedmod.Schedule) -> dict[str, Any]:
    return {"base_rate": s.base_rate, "spike_rate": s.spike_rate, "spike_every": s.spike_every,
            "spike_length": s.spike_length, "spike_offset": s.spike_offset,
            "arrivals": "poisson" if s.poisson else "even"}


PROCESS = _Process()


def params(declared: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The scenario's parameters: ``LAB_PARAMS`` over the defaults of the locustfile's
    ``PARAMS`` literal, coerced the way ``lab run -P`` does (unknown keys raise)."""
    raw = PROCESS.raw_params
    if declared is None:
        result = dict(raw)
    else:
        result = scenarios.coerce(scenarios.params_from_literal(dict(declared), "PARAMS"), raw)
    PROCESS.params = result
    return result


@events.init.add_listener
def _on_init(environment, **_kwargs) -> None:
    PROCESS.environment = environment


@events.test_start.add_listener
def _on_test_start(environment, **_kwargs) -> None:
    PROCESS.start_test(environment)


@events.test_stopping.add_listener
def _on_test_stopping(environment, **_kwargs) -> None:
    PROCESS.stopping = True
    for stream in PROCESS.streams.values():
        stream.stop()


@events.test_stop.add_listener
def _on_test_stop(environment, **_kwargs) -> None:
    PROCESS.stop_test()


@events.quitting.add_listener
def _on_quitting(environment, **_kwargs) -> None:
    PROCESS.flush()


# -- arrival streams ----------------------------------------------------------------------------


def sleep_until(due: float) -> None:
    """Return at ``time.perf_counter() >= due``, a few microseconds late rather than gevent's
    millisecond (see ARRIVAL_SPIN_S); other greenlets run meanwhile."""
    delay = due - time.perf_counter()
    if delay > ARRIVAL_SPIN_S:
        gevent.sleep(delay - ARRIVAL_SPIN_S)
    while time.perf_counter() < due:
        gevent.sleep(0)


class _ArrivalStream:
    """One process's share of an open-loop schedule: a greenlet puts each arrival's intended
    start (perf_counter time) into a queue when it is due; users take them."""

    def __init__(self, key: str, schedule: schedmod.Schedule, process: _Process):
        self.key = key
        self.schedule = schedule
        self.process = process
        self.queue: gevent.queue.Queue = gevent.queue.Queue()
        self.greenlet = None

    def start(self, t0_perf: float) -> None:
        share, seed, phase = schedmod.worker_share(
            self.schedule, self.process.seed, self.process.worker, self.process.workers,
            stream=self.key)
        self.greenlet = gevent.spawn(self._dispatch, t0_perf, share, seed, phase)

    def _dispatch(self, t0_perf: float, share: schedmod.Schedule, seed: str,
                  phase: float) -> None:
        immediate = 0
        for offset in schedmod.arrivals(share, seed, phase=phase):
            due = t0_perf + offset
            delay = due - time.perf_counter()
            if delay > 0:
                sleep_until(due)
                immediate = 0
            else:
                immediate += 1
                if immediate % 64 == 0:  # late: catch up, but let the users run
                    gevent.sleep(0)
            self.queue.put(due)

    def get(self, user: LabUser) -> float | None:
        """The next intended start, or None when the test is stopping."""
        while True:
            if self.process.stopping or user.is_stopping():
                return None
            with contextlib.suppress(gevent.queue.Empty):
                return self.queue.get(timeout=0.25)

    def stop(self) -> None:
        if self.greenlet is not None:
            self.greenlet.kill(block=False)
            self.greenlet = None

    @property
    def backlog(self) -> int:
        return self.queue.qsize()


# -- connections ------------------------------------------------------------------------------


def prepare_kwargs(value: Any, endpoint: str, uri: str) -> dict[str, Any]:
    """psycopg's ``prepare_threshold`` for a parameter value (see the module docstring)."""
    threshold: Any
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "auto")):
        threshold = None if _transaction_mode(endpoint, uri) else _PSYCOPG_DEFAULT
    elif isinstance(value, str) and value.strip().lower() in ("off", "none", "never"):
        threshold = None
    else:
        threshold = int(value)
    return {} if threshold is _PSYCOPG_DEFAULT else {"prepare_threshold": threshold}


def _transaction_mode(endpoint: str, uri: str) -> bool:
    if endpoint in TRANSACTION_ENDPOINTS:
        return True
    if endpoint == "target":
        with contextlib.suppress(ValueError):
            return urlsplit(uri).port == SUPABASE_TRANSACTION_PORT
    return False


class _Connector:
    """How a user gets a connection (``get``) and gives it back (``put``)."""

    def __init__(self, uri: str, connect_kwargs: dict[str, Any]):
        self.uri = uri
        self.kwargs = {"autocommit": True, **connect_kwargs}

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(self.uri, **self.kwargs)

    def get(self) -> psycopg.Connection:
        raise NotImplementedError

    def put(self, conn: psycopg.Connection, failed: bool) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class PerRequest(_Connector):
    """A new connection for every request, closed at its end (a serverless function)."""

    def get(self) -> psycopg.Connection:
        return self.connect()

    def put(self, conn: psycopg.Connection, failed: bool) -> None:
        conn.close()


class Session(_Connector):
    """One connection per user, held between requests; reopened after a failure."""

    def __init__(self, uri: str, connect_kwargs: dict[str, Any]):
        super().__init__(uri, connect_kwargs)
        self.conn: psycopg.Connection | None = None

    def get(self) -> psycopg.Connection:
        if self.conn is None or self.conn.closed or self.conn.broken:
            self.close()
            self.conn = self.connect()
        return self.conn

    def put(self, conn: psycopg.Connection, failed: bool) -> None:
        if failed and (conn.broken or conn.closed
                       or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE):
            self.close()

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
        self.conn = None


class AppPool(_Connector):
    """An app server's psycopg_pool.ConnectionPool of a fixed size; ``get`` is a checkout."""

    def __init__(self, uri: str, connect_kwargs: dict[str, Any], size: int, timeout: float,
                 name: str):
        super().__init__(uri, connect_kwargs)
        self.timeout = timeout
        self.pool = psycopg_pool.ConnectionPool(
            uri, kwargs=self.kwargs, min_size=size, max_size=size, timeout=timeout,
            name=name, open=False)
        self.pool.open(wait=False)  # connects in the background, like a server starting up

    def get(self) -> psycopg.Connection:
        return self.pool.getconn(timeout=self.timeout)

    def put(self, conn: psycopg.Connection, failed: bool) -> None:
        self.pool.putconn(conn)  # the pool discards a broken connection itself

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.pool.close(timeout=2)


# -- requests ---------------------------------------------------------------------------------


class Request:
    """Handed to a user's work function: run queries (timed) and think (not timed)."""

    __slots__ = ("conn", "query_s", "queries")

    def __init__(self, conn: psycopg.Connection):
        self.conn = conn
        self.query_s = 0.0
        self.queries = 0

    def execute(self, query: str, params: Any = None) -> list[tuple]:
        """Run one query and fetch its rows; the time counts as query time."""
        started = time.perf_counter()
        try:
            cur = self.conn.execute(query, params)
            rows = cur.fetchall() if cur.description is not None else []
        finally:
            self.query_s += time.perf_counter() - started
            self.queries += 1
        return rows

    def hold(self, ms: float) -> None:
        """Keep the connection while doing something else (client-side work)."""
        if ms > 0:
            gevent.sleep(ms / 1000.0)


class LabUser(User):
    """Base of the lab's users: a target, a connection strategy, timed recorded requests."""

    abstract = True
    phase = "closed"  # the `phase` column
    request_name = "request"  # the `name` column and Locust's request name
    endpoint: str | None = None  # an endpoint of LAB_TARGET_URIS; None: the run's endpoint
    params: dict[str, Any] | None = None  # None: the process's params(...) result

    def __init__(self, environment):
        super().__init__(environment)
        self.user_index = next(PROCESS.user_ids)
        self.connector: _Connector | None = None
        self.endpoint_name = PROCESS.endpoint
        self.scenario_name = PROCESS.scenario_of(type(self))

    # -- configuration

    @classmethod
    def settings(cls) -> dict[str, Any]:
        if cls.params is not None:
            return cls.params
        return PROCESS.params if PROCESS.params is not None else params(None)

    def setting(self, key: str, default: Any = None) -> Any:
        value = self.settings().get(key, default)
        return default if value is None and default is not None else value

    def make_connector(self, endpoint: str, uri: str, app_name: str) -> _Connector:
        return Session(uri, self.connect_kwargs(endpoint, uri, app_name))

    def connect_kwargs(self, endpoint: str, uri: str, app_name: str) -> dict[str, Any]:
        return {"application_name": app_name,
                "connect_timeout": max(1, int(float(self.setting("connect_timeout", 10)))),
                **prepare_kwargs(self.settings().get("prepare_threshold"), endpoint, uri)}

    def on_start(self) -> None:
        self.endpoint_name, uri = PROCESS.target(self.endpoint, self.environment.host)
        app_name = f"lab-{self.scenario_name}-{self.endpoint_name}"[:APP_NAME_MAX]
        self.connector = self.make_connector(self.endpoint_name, uri, app_name)

    def on_stop(self) -> None:
        if self.connector is not None:
            self.connector.close()

    def is_stopping(self) -> bool:
        return getattr(self, "_state", None) == "stopping"

    # -- one request

    def request(self, work: Callable[[Request], Any], *, name: str | None = None,
                intended: float | None = None) -> bool:
        """Run ``work`` on a connection from this user's strategy; record one row."""
        name = name or self.request_name
        start = time.perf_counter()
        intended = start if intended is None else min(intended, start)
        connect_ms = query_ms = NAN
        error: BaseException | None = None
        conn = None
        req = None
        try:
            began = time.perf_counter()
            try:
                conn = self.connector.get()
            finally:
                connect_ms = (time.perf_counter() - began) * 1000.0
            req = Request(conn)
            work(req)
        except Exception as exc:  # every failure is a sample; the load goes on
            error = exc
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    self.connector.put(conn, failed=error is not None)
            if req is not None and req.queries:
                query_ms = req.query_s * 1000.0
        end = time.perf_counter()
        self._record(name, intended, start, end, connect_ms, query_ms, error)
        return error is None

    def _record(self, name: str, intended: float, start: float, end: float,
                connect_ms: float, query_ms: float, error: BaseException | None) -> None:
        service_ms = (end - start) * 1000.0
        total_ms = (end - intended) * 1000.0
        if error is None:
            error_class = sqlstate = message = None
        else:
            error_class, sqlstate, message = classify(error, secrets=PROCESS.secrets)
        PROCESS.record((self.scenario_name, self.endpoint_name, self.phase, name,
                        PROCESS.worker, self.user_index, PROCESS.wall(intended),
                        PROCESS.wall(start), connect_ms, query_ms, service_ms, total_ms,
                        error is None, error_class, sqlstate, message))
        self.environment.events.request.fire(
            request_type=self.endpoint_name, name=name, response_time=total_ms,
            response_length=0, context={"phase": self.phase},
            exception=None if error is None else RequestFailed(f"{error_class}: {message}"),
            start_time=PROCESS.wall(start))


class SessionUser(LabUser):
    """Closed loop: one held connection per user; write ``@task`` methods that call
    ``self.request(work)``."""

    abstract = True
    wait_time = constant(0)


class InvocationUser(LabUser):
    """Open loop, serverless: each user runs scheduled invocations one at a time, each on a new
    connection. Override ``invoke(req)``; the schedule comes from the parameters (base_rate,
    spike_rate, spike_every, spike_length, spike_offset, arrivals)."""

    abstract = True
    phase = "serverless"
    request_name = "invocation"
    stream = "serverless"  # users of classes with the same stream share one arrival queue
    wait_time = constant(0)

    @classmethod
    def stream_key(cls) -> str:
        return cls.stream

    @classmethod
    def arrival_schedule(cls) -> schedmod.Schedule:
        return schedmod.from_params(cls.settings())

    def make_connector(self, endpoint: str, uri: str, app_name: str) -> _Connector:
        return PerRequest(uri, self.connect_kwargs(endpoint, uri, app_name))

    def invoke(self, req: Request) -> None:
        raise NotImplementedError

    @task
    def next_arrival(self) -> None:
        intended = PROCESS.stream(self.stream_key()).get(self)
        if intended is None:
            gevent.sleep(0.05)  # stopping: let Locust stop the user
            return
        self.request(self.invoke, intended=intended)


class AppServerUser(LabUser):
    """An app server: a fixed-size pool and a steady stream of ``rate_per_server`` requests/s,
    each handled in its own greenlet (at most ``max_inflight`` at once; further arrivals wait
    and the wait counts in ``total_ms``). Override ``handle(req)``."""

    abstract = True
    phase = "persistent"
    request_name = "request"
    wait_time = constant(0)

    def make_connector(self, endpoint: str, uri: str, app_name: str) -> _Connector:
        return AppPool(uri, self.connect_kwargs(endpoint, uri, app_name),
                       size=max(1, int(self.setting("pool_size", 10))),
                       timeout=float(self.setting("checkout_timeout", 10.0)),
                       name=f"{app_name}-{self.user_index}")

    def on_start(self) -> None:
        super().on_start()
        self.inflight = gevent.pool.Pool(max(1, int(self.setting("max_inflight", 100))))

    def arrival_schedule(self) -> schedmod.Schedule:
        kind = str(self.setting("arrivals", "poisson")).lower()
        return schedmod.Schedule(base_rate=float(self.setting("rate_per_server", 10.0)),
                                 poisson=kind != "even")

    def handle(self, req: Request) -> None:
        raise NotImplementedError

    @task
    def serve(self) -> None:
        t0 = time.perf_counter()
        seed = f"{PROCESS.seed}:{self.phase}:{PROCESS.worker}:{self.user_index}"
        for offset in schedmod.arrivals(self.arrival_schedule(), seed):
            if PROCESS.stopping or self.is_stopping():
                return
            due = t0 + offset
            sleep_until(due)
            self.inflight.wait_available()
            self.inflight.spawn(self.request, self.handle, intended=due)
        gevent.sleep(0.5)  # a zero rate: nothing arrives; idle until Locust stops the user

    def on_stop(self) -> None:
        inflight = getattr(self, "inflight", None)
        if inflight is not None:
            inflight.join(timeout=5)
            inflight.kill(block=True, timeout=2)
        super().on_stop()

