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

Every arrival has an outcome: every request writes one ``requests/1.1`` row (docs/formats.md;
``lab.samples``) and is counted in Locust's own statistics with ``total_ms``, so Locust's
summary, CSV and UI work too: a failure through ``events.request``, successes in bulk when
their chunk is taken, once a second (``lab.locust_stats``; ``LabUser.request_events = True``
fires the event for every success instead). A request Locust cuts off at the stop gets a row
of class ``unfinished`` (the times measured so far); a scheduled arrival that never started
(still queued for a busy user or a full app server when the load stopped) gets a row of class
``not_started`` (its due time, no start, no durations, user -1). Arrivals are scheduled from
the test start up to the end of the run time (or the stop, when the load stops earlier), so per
segment the schedule's arrivals = succeeded + failed + not_started.
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
    LAB_RUN_TIME     seconds of load, for --processes workers, which Locust does not tell
    LAB_REPEAT       the --repeat pass this segment is, for the `repeat` column (default 1)

While the test runs, each process also writes LAB_RUN_DIR/live/<endpoint>-<worker>.json about
once a second (and once at the stop): ``{"t", "queued", "inflight"}``, the arrivals due but not
started and the requests running right now, for the orchestrator's progress line.
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
import dataclasses  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import deque  # noqa: E402
from collections.abc import Callable, Iterable, Iterator, Mapping  # noqa: E402
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

from lab import clock, locust_stats, samples, scenarios  # noqa: E402
from lab import schedule as schedmod  # noqa: E402
from lab.classify import classify, first_line  # noqa: E402

__all__ = ["AppServerUser", "InvocationUser", "LabUser", "Request", "SessionUser", "StopUser",
           "constant", "params", "task"]

log = logging.getLogger("lab.users")
NAN = math.nan
OK_PACK = samples.OK_PACK
_BAD = psycopg.pq.ConnStatus.BAD
_TUPLES_OK = psycopg.pq.ExecStatus.TUPLES_OK
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
# Locust's --run-time timer (gevent.spawn_later) starts before test_start fires, on the event
# loop's cached clock, which start-up work leaves stale: the stop comes early (measured 0.2 to
# 0.5 s before t0 + run time here). A stop that comes this much early at most, with no signal
# behind it, waits for the end (see _Process.stopping_test), so the load runs its full run time.
RUN_TIME_EARLY_S = 2.0
STOP_POLL_S = 0.25  # how often a waiting arrival loop looks whether the load is stopping
INFLIGHT_JOIN_S = 5.0  # an app server's running requests get this long to end at the stop
NOT_STARTED = "not_started"
UNFINISHED = "unfinished"


class RequestFailed(Exception):
    """What Locust's statistics see for a failed request: the class and the clean message."""


# -- process-wide state --------------------------------------------------------------------------


class _Process:
    """Configuration, sample writer and arrival bookkeeping of this Locust process."""

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
        self.repeat = max(1, _int_env(environ, "LAB_REPEAT", 1))
        self.params: dict[str, Any] | None = None  # set by params(PARAMS)
        self.environment = None
        # One wall-clock anchor; every stamp is anchor + a perf_counter difference.
        # (the run's timebase: lab.clock, LAB_CLOCK_OFFSET from the orchestrator)
        self.anchor_perf = time.perf_counter()
        self.anchor_wall = clock.offset() + self.anchor_perf
        self.to_wall = self.anchor_wall - self.anchor_perf  # wall = perf + to_wall
        self.writer: samples.ChunkWriter | None = None
        # per writer kind: the (name, method) Locust's statistics count its successes under
        # when they are fed in bulk (lab.locust_stats), None when each fired its event
        self.stats_keys: list[tuple[str, str] | None] = []
        self.flusher = None
        self.write_lock = gevent.lock.Semaphore()
        self.streams: dict[str, _ArrivalStream] = {}
        self.servers: list[AppServerUser] = []  # app servers of this test (live counts, files)
        self.stopping = False
        self.quitting = False  # Locust's quitting fired: a signal (SIGTERM, Ctrl-C) stops it
        self.t0_perf: float | None = None
        self.run_time: float | None = None  # Locust's --run-time (None on --processes workers)
        self.stop_perf: float | None = None  # when the load was told to stop
        self.horizon_perf: float | None = None  # the schedule's end (see stop_schedule)
        self.inflight = 0  # requests running now
        self.not_started = 0  # not_started rows written in this test
        self.live_final = False  # the stop's live file is written: no more ticks
        self.user_ids = itertools.count()
        self.server_ids = itertools.count()
        self._worker_index: int | None = None
        self.secrets = _passwords([self.target_uri, *self.target_uris.values()])
        # A distributed run's worker (lab.distributed.locust_side) sends every file written
        # here (chunks, schedule, live file) to the master as soon as it is whole.
        self.ship: Callable[[Path], None] | None = None

    # -- clocks and identity

    def wall(self, perf: float) -> float:
        return self.anchor_wall + (perf - self.anchor_perf)

    @property
    def worker(self) -> int:
        runner = getattr(self.environment, "runner", None)
        return max(0, int(getattr(runner, "worker_index", 0) or 0))

    @property
    def worker_index(self) -> int:
        """``worker``, read once per test (every row of the request path carries it)."""
        if self._worker_index is None:
            self._worker_index = self.worker
        return self._worker_index

    @property
    def is_master(self) -> bool:
        return isinstance(getattr(self.environment, "runner", None), MasterRunner)

    def scenario_of(self, cls: type) -> str:
        if self.scenario_env:
            return self.scenario_env
        module = sys.modules.get(cls.__module__)
        path = getattr(module, "__file__", None)
        return scenarios.builtin_name(Path(path)) if path else cls.__name__

    def endpoint_of(self, endpoint: str | None) -> str:
        """The endpoint name rows get for a user class that asks for ``endpoint``."""
        return endpoint if endpoint and endpoint in self.target_uris else self.endpoint

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
        if self.writer is None or self.flusher is None:
            self._ensure_writer()
        self.writer.rows.append(row)  # the flusher writes them, once a second

    def record_not_started(self, what: _RowKind, dues: Iterable[float], message: str) -> int:
        """One ``not_started`` row per due time (perf_counter): the arrival never started."""
        n = 0
        for due in dues:
            self.record((what.scenario, what.endpoint, what.phase, what.name, self.worker, -1,
                         self.wall(due), NAN, NAN, NAN, NAN, NAN, False, NOT_STARTED, None,
                         message, self.repeat))
            n += 1
        self.not_started += n
        return n

    def ok_kind(self, user: LabUser, name: str) -> float:
        """The id a user's successes named ``name`` carry in the writer's columnar buffer
        (samples.ChunkWriter.oks); -1.0: nothing is recorded (no run directory)."""
        if self.run_dir is None:
            return -1.0
        if self.environment is None:  # Locust as a library, without test_start
            self.environment = user.environment
        self._ensure_writer()
        kind = self.writer.kind(user.scenario_name, user.endpoint_name, user.phase, name,
                                self.worker_index, user.user_index, self.repeat)
        self.stats_keys.append(None if user.request_events else (name, user.endpoint_name))
        return kind

    def take(self) -> tuple[samples.Batch, Path | None]:
        """The writer's rows for a chunk; their successes counted in Locust's statistics
        (on this thread: Locust's statistics are the event loop's, not the writer thread's)."""
        batch, path = self.writer.take()
        if batch.oks and self.environment is not None:
            try:
                locust_stats.feed(self.environment.stats, batch.oks, self.stats_keys,
                                  batch.to_wall)
            except Exception:  # Locust's view of the load; the chunk is still written
                log.exception("could not count a chunk's requests in Locust's statistics")
        return batch, path

    def _ensure_writer(self) -> None:
        if self.writer is None:
            self.writer = samples.ChunkWriter(self.run_dir, self.worker,
                                              interval=math.inf,  # flushed by the flusher
                                              to_wall=self.to_wall)
        if self.flusher is None:
            self.flusher = gevent.spawn(self._flush_loop)

    def _flush_loop(self) -> None:
        pool = gevent.get_hub().threadpool
        while True:
            gevent.sleep(FLUSH_INTERVAL_S)
            with self.write_lock:
                batch, path = self.take()
                if path is not None:
                    try:
                        # On a real thread: Arrow and Parquet release the GIL for most of
                        # their work, so the users keep running (and measuring) meanwhile.
                        pool.apply(self.writer.write, (batch, path))
                    except Exception:  # a full disk must not stop the load
                        log.exception("could not write a requests chunk")
                    else:
                        if self.ship is not None:
                            self.ship(path)
            if not self.live_final:
                self.write_live()

    def flush(self) -> None:
        """Write every buffered row now (after any chunk being written in the background)."""
        if self.writer is None:
            return
        with self.write_lock:
            try:
                path = self.writer.write(*self.take())
            except Exception:
                log.exception("could not write a requests chunk")
            else:
                if path is not None and self.ship is not None:
                    self.ship(path)

    # -- the live file

    def queued(self, now: float | None = None) -> int:
        """Arrivals due but not started right now (stream backlogs, app servers' waits)."""
        now = time.perf_counter() if now is None else now
        return (sum(stream.queued(now) for stream in self.streams.values())
                + sum(server.queued(now) for server in self.servers))

    def write_live(self, *, final: bool = False) -> None:
        """LAB_RUN_DIR/live/<endpoint>-<worker>.json, whole or not at all. At the stop
        (``final``) ``queued`` is what never started (the not_started rows) and ``inflight``
        what is still running (0 once every user has stopped)."""
        if self.run_dir is None or self.is_master:
            return
        queued = self.not_started if final else self.queued()
        data = {"t": clock.now(), "queued": queued, "inflight": self.inflight}
        if final:
            data["stopped"] = True
            self.live_final = True
        try:
            folder = self.run_dir / "live"
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{self.endpoint}-{self.worker}.json"
            tmp = folder / f".{path.name}.{os.getpid()}.tmp"
            tmp.write_text(json.dumps(data) + "\n")
            os.replace(tmp, path)
        except OSError:
            log.exception("could not write the live file")
        else:
            if self.ship is not None:
                self.ship(path)

    # -- arrival schedules

    def start_test(self, environment) -> None:
        self.environment = environment
        self.stopping = self.quitting = False
        self._worker_index = None
        self.t0_perf = time.perf_counter()
        self.run_time = _run_time(environment)
        if self.is_master:
            return
        self.stop_perf = self.horizon_perf = None
        self.inflight = self.not_started = 0
        self.live_final = False
        for stream in self.streams.values():
            stream.stop()
        self.streams = {}
        self.servers = []
        self.server_ids = itertools.count()
        for cls in environment.user_classes:
            if isinstance(cls, type) and issubclass(cls, InvocationUser) and not cls.abstract:
                key = cls.stream_key()
                if key not in self.streams:
                    self.streams[key] = _ArrivalStream(key, cls.arrival_schedule(), self,
                                                       _RowKind.of(cls))
        for stream in self.streams.values():
            stream.start(self.t0_perf)
        self.write_schedule(duration=self.run_time)
        if self.run_dir is not None:
            self._ensure_writer()
            self.write_live()

    def stop_schedule(self) -> float:
        """The load is stopping: fix the schedule's end (perf_counter time) and return it.

        Arrivals due before it belong to this segment: each ran, or has a not_started row.
        It is the moment of the stop, and never later than t0 + run time (the dispatchers draw
        nothing later)."""
        if self.horizon_perf is None:
            now = time.perf_counter()
            self.stop_perf = now
            end = self.run_end()
            self.horizon_perf = now if end is None else min(now, end)
        return self.horizon_perf

    def run_end(self) -> float | None:
        if self.run_time and self.t0_perf is not None:
            return self.t0_perf + self.run_time
        return None

    def schedule_end(self) -> float:
        """The schedule's end once the load is stopping, else now."""
        return self.horizon_perf if self.horizon_perf is not None else time.perf_counter()

    def stopping_test(self) -> None:
        """Locust's test_stopping. A run-time stop that came early (RUN_TIME_EARLY_S) first
        waits for t0 + run time, the users running on meanwhile: the segment lasts what it
        says. A stop by a signal (quitting fired first) or from the web UI does not wait. On
        ``--processes`` the master waits (it holds the run time) and the workers follow it."""
        end = self.run_end()
        if end is not None and not self.quitting and self.horizon_perf is None:
            early = end - time.perf_counter()
            if 0 < early <= RUN_TIME_EARLY_S:
                sleep_until(end)
        self.stopping = True
        if self.is_master:
            return
        self.stop_schedule()
        for stream in self.streams.values():
            stream.stop()

    def stop_test(self) -> None:
        """After every user stopped (Locust fires test_stop then): the streams' arrivals that
        never started become rows, then everything is written (chunk, schedule, live file)."""
        if self.is_master:
            return
        self.stopping = True
        self.stop_schedule()
        for stream in self.streams.values():
            stream.stop()
            stream.record_not_started()
        self.flush()
        if self.t0_perf is not None:
            self.write_schedule(duration=time.perf_counter() - self.t0_perf)
        self.write_live(final=True)

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
        horizon = (None if self.horizon_perf is None
                   else round(self.horizon_perf - self.t0_perf, 6))
        stop = None if self.stop_perf is None else round(self.stop_perf - self.t0_perf, 6)
        data = {"t0": t0, "duration_s": duration, "run_time_s": self.run_time,
                "stop_s": stop, "horizon_s": horizon, "worker": self.worker,
                "workers": self.workers, "seed": self.seed, "repeat": self.repeat,
                "spikes": sorted(spikes),
                "streams": {k: _schedule_json(s.schedule) for k, s in self.streams.items()},
                # per stream, arrivals that never started (each has a not_started row)
                "unserved": {k: s.unserved for k, s in self.streams.items()},
                "servers": [server.schedule_json() for server in self.servers],
                "params": self.params if self.params is not None else self.raw_params}
        folder = self.run_dir / "schedule"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.endpoint}-{self.worker}.json"
        tmp = folder / f".{path.name}.tmp"
        tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
        os.replace(tmp, path)
        if self.ship is not None:
            self.ship(path)


@dataclasses.dataclass(frozen=True)
class _RowKind:
    """The identifying columns of a user class's rows."""

    scenario: str
    endpoint: str
    phase: str
    name: str

    @classmethod
    def of(cls, user_class: type[LabUser]) -> _RowKind:
        return cls(PROCESS.scenario_of(user_class), PROCESS.endpoint_of(user_class.endpoint),
                   user_class.phase, user_class.request_name)


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
    """Locust's --run-time; its --processes workers do not get it, so `lab run` also passes
    it as LAB_RUN_TIME (each worker's schedule then ends with the run, as the master's does)."""
    options = getattr(environment, "parsed_options", None)
    value = getattr(options, "run_time", None)
    if not value:
        value = os.environ.get("LAB_RUN_TIME")
    try:
        return float(value) if value else None
    except ValueError:
        return None


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
    PROCESS.stopping_test()


# Locust's order (locust/runners.py, Runner.stop): test_stopping fires, then stop_users waits
# for every user greenlet to end (each runs on_stop; after --stop-timeout Locust kills the rest
# and waits for them), then test_stop fires. So every unfinished and not_started row of the
# users is recorded before stop_test writes the streams' rows and flushes. On SIGTERM, main.py's
# shutdown() fires quitting first and stops the runner after it: stop_test still flushes last.
@events.test_stop.add_listener
def _on_test_stop(environment, **_kwargs) -> None:
    PROCESS.stop_test()


@events.quitting.add_listener
def _on_quitting(environment, **_kwargs) -> None:
    PROCESS.quitting = True
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


class _Arrivals:
    """An arrival schedule being served: ``take`` the next due time (perf_counter), look at what
    is due now without taking it (``due_by``), and collect what was never taken (``left``).

    ``current`` is the arrival its consumer took and is waiting on (its due time, or a free
    slot): not started yet, so it counts as due and is left over if the load stops first."""

    def __init__(self, offsets: Iterable[float], t0: float):
        self.t0 = t0
        self._offsets: Iterator[float] = iter(offsets)
        self._ahead: deque[float] = deque()  # pulled from the schedule, not taken yet
        self.current: float | None = None

    def take(self) -> float | None:
        if self._ahead:
            return self._ahead.popleft()
        offset = next(self._offsets, None)
        return None if offset is None else self.t0 + offset

    def due_by(self, now: float) -> int:
        """How many arrivals are due at ``now`` and not started (``current`` included)."""
        while not self._ahead or self._ahead[-1] <= now:
            offset = next(self._offsets, None)
            if offset is None:
                break
            self._ahead.append(self.t0 + offset)
        due = sum(1 for t in self._ahead if t <= now)
        return due + (self.current is not None and self.current <= now)

    def left(self, until: float) -> list[float]:
        """Every arrival not taken (``current`` included) due before ``until``; they are
        gone afterwards (the schedule is over)."""
        found = [] if self.current is None or self.current >= until else [self.current]
        self.current = None
        found += [t for t in self._ahead if t < until]
        self._ahead.clear()
        for offset in self._offsets:
            if self.t0 + offset >= until:
                break
            found.append(self.t0 + offset)
        self._offsets = iter(())
        return found


class _ArrivalStream:
    """One process's share of an open-loop schedule: a greenlet puts each arrival's intended
    start (perf_counter time) into a queue when it is due; users take them. When the load
    stops, what is still queued and what was due but not yet queued get not_started rows."""

    def __init__(self, key: str, schedule: schedmod.Schedule, process: _Process,
                 kind: _RowKind):
        self.key = key
        self.schedule = schedule
        self.process = process
        self.kind = kind
        self.queue: gevent.queue.Queue = gevent.queue.Queue()
        self.greenlet = None
        self.arrivals: _Arrivals | None = None
        self.undispatched: list[float] = []  # due before the stop, never queued
        self.unserved = 0  # not_started rows written for this stream

    def start(self, t0_perf: float) -> None:
        share, seed, phase = schedmod.worker_share(
            self.schedule, self.process.seed, self.process.worker, self.process.workers,
            stream=self.key)
        # The segment's schedule ends with its run time: nothing later is ever due.
        self.arrivals = _Arrivals(
            schedmod.arrivals(share, seed, phase=phase, until=self.process.run_time), t0_perf)
        self.greenlet = gevent.spawn(self._dispatch, self.arrivals)

    def _dispatch(self, arrivals: _Arrivals) -> None:
        immediate = 0
        while (due := arrivals.take()) is not None:
            arrivals.current = due
            if due > time.perf_counter():
                sleep_until(due)
                immediate = 0
            else:
                immediate += 1
                if immediate % 64 == 0:  # late: catch up, but let the users run
                    gevent.sleep(0)
            arrivals.current = None  # no switch from here to the put: never lost, never twice
            self.queue.put(due)

    def get(self, user: LabUser) -> float | None:
        """The next intended start, or None when the test is stopping."""
        while True:
            if self.process.stopping or user.is_stopping():
                return None
            with contextlib.suppress(gevent.queue.Empty):
                return self.queue.get(timeout=STOP_POLL_S)

    def stop(self) -> None:
        """Stop dispatching; keep what was due before the schedule's end and never queued."""
        if self.greenlet is not None:
            self.greenlet.kill(block=True)
            self.greenlet = None
        if self.arrivals is not None:
            self.undispatched += self.arrivals.left(self.process.schedule_end())

    def record_not_started(self) -> None:
        """Once every user has stopped: a not_started row for each arrival still queued and
        each one due but never queued."""
        queued = []
        while True:
            try:
                queued.append(self.queue.get_nowait())
            except gevent.queue.Empty:
                break
        self.unserved += self.process.record_not_started(
            self.kind, queued, "not started: still queued when the load stopped (every user "
                               "was busy)")
        self.unserved += self.process.record_not_started(
            self.kind, self.undispatched, "not started: due when the load stopped")
        self.undispatched = []

    def queued(self, now: float) -> int:
        """Due and not started: the queue, and what the dispatcher has not queued yet."""
        pending = self.arrivals.due_by(now) if self.arrivals is not None else 0
        return self.queue.qsize() + pending

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
        conn = self.conn
        # closed (a broken connection is closed too), read off pgconn: 40 ns, not 270
        if conn is None or conn.pgconn.status == _BAD:
            self.close()
            conn = self.conn = self.connect()
        return conn

    def put(self, conn: psycopg.Connection, failed: bool) -> None:
        # nothing to do after a success: LabUser.request does not call it then
        if failed and (conn.broken or conn.closed
                       or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE):
            self.close()

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
        self.conn = None


class PoolCheckoutFailed(psycopg_pool.PoolTimeout):
    """A pool checkout timed out while the pool could not connect: classified as the failed
    connection attempt (its ``__cause__``), not as a pool that is too small."""

    classify_as_cause = True  # lab.classify: the class and SQLSTATE of __cause__


@dataclasses.dataclass
class _Attempts:
    """An app-server pool's connection attempts: the latest one that ended, and when the one
    under way (if any) began (time.monotonic())."""

    ended_at: float | None = None
    error: BaseException | None = None  # of the latest attempt that ended; None: it worked
    pending_since: float | None = None


def _recording_connection(attempts: _Attempts) -> type[psycopg.Connection]:
    """A psycopg.Connection class whose ``connect`` notes every attempt in ``attempts``
    (psycopg_pool's public ``connection_class`` hook: the pool connects only through it)."""

    class RecordingConnection(psycopg.Connection):
        @classmethod
        def connect(cls, *args, **kwargs):
            attempts.pending_since = time.monotonic()
            try:
                conn = super().connect(*args, **kwargs)
            except BaseException as exc:
                attempts.ended_at, attempts.error = time.monotonic(), exc
                raise
            finally:
                attempts.pending_since = None
            attempts.ended_at, attempts.error = time.monotonic(), None
            return conn

    return RecordingConnection


class AppPool(_Connector):
    """An app server's psycopg_pool.ConnectionPool of a fixed size; ``get`` is a checkout.

    psycopg_pool's PoolTimeout says only that no connection came in time, which reads as "pool
    size" even when the server is gone. So the pool's connection attempts are recorded, and a
    checkout that times out while the pool cannot connect raises PoolCheckoutFailed, classified
    as the failed attempt (connection_refused, too_many_clients, ...): when the latest attempt
    failed within the checkout's window (its timeout, and as long again before it, since
    psycopg_pool retries with a doubling backoff), or when an attempt has been under way for
    over a second without an answer. With healthy connects a timeout stays pool_timeout."""

    PENDING_S = 1.0  # an attempt under way this long: the server is not answering

    def __init__(self, uri: str, connect_kwargs: dict[str, Any], size: int, timeout: float,
                 name: str):
        super().__init__(uri, connect_kwargs)
        self.timeout = timeout
        self.attempts = _Attempts()
        self.pool = psycopg_pool.ConnectionPool(
            uri, kwargs=self.kwargs, min_size=size, max_size=size, timeout=timeout,
            name=name, open=False, connection_class=_recording_connection(self.attempts))
        self.pool.open(wait=False)  # connects in the background, like a server starting up

    def get(self) -> psycopg.Connection:
        began = time.monotonic()
        try:
            return self.pool.getconn(timeout=self.timeout)
        except psycopg_pool.PoolTimeout:
            cause = self.connect_failure(began, time.monotonic())
            if cause is None:
                raise
            raise self._wrapped(cause) from cause

    def _wrapped(self, cause: BaseException) -> PoolCheckoutFailed:
        if isinstance(cause, _PendingConnect):
            text = f"a connection attempt has had no answer for {cause.seconds:.1f} s"
        else:
            text = f"the last connection attempt failed: {first_line(_text(cause))}"
        return PoolCheckoutFailed(
            f"pool checkout timed out after {self.timeout:g} s; {text}")

    def connect_failure(self, began: float, now: float) -> BaseException | None:
        """Why the pool had no connection for a checkout from ``began`` to ``now``: the
        failed or unanswered connection attempt, or None (connects work: the pool is busy)."""
        attempts = self.attempts
        pending = attempts.pending_since
        if pending is not None and now - pending >= self.PENDING_S:
            return _PendingConnect(now - pending)
        if attempts.error is not None and attempts.ended_at is not None \
                and attempts.ended_at >= began - self.timeout:
            return attempts.error
        return None

    def put(self, conn: psycopg.Connection, failed: bool) -> None:
        self.pool.putconn(conn)  # the pool discards a broken connection itself

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.pool.close(timeout=2)


class _PendingConnect(psycopg.errors.ConnectionTimeout):
    """A connection attempt under way for ``seconds`` without an answer (classified as the
    connect timeout it is becoming: connection_refused)."""

    def __init__(self, seconds: float):
        super().__init__(f"connection attempt without an answer for {seconds:.1f} s")
        self.seconds = seconds


def _text(exc: BaseException) -> str:
    return str(exc).strip() or type(exc).__name__


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
            # a result set to fetch (description would build Column objects: 2.4 us)
            res = cur.pgresult
            rows = cur.fetchall() if res is not None and res.status == _TUPLES_OK else []
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
    # True: every success fires Locust's events.request (for a listener of your own); False:
    # recorded successes reach Locust's statistics in bulk, once a second (lab.locust_stats)
    request_events = False
    params: dict[str, Any] | None = None  # None: the process's params(...) result

    def __init__(self, environment):
        super().__init__(environment)
        self.user_index = next(PROCESS.user_ids)
        self.connector: _Connector | None = None
        self.endpoint_name = PROCESS.endpoint
        self.scenario_name = PROCESS.scenario_of(type(self))
        self._context = {"phase": self.phase}  # Locust's request context, the same each time
        self._ok_kinds: dict[str, float] = {}  # request name -> PROCESS.ok_kind

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
        """Run ``work`` on a connection from this user's strategy; record one row. A request
        Locust kills at the stop (GreenletExit) records an ``unfinished`` row, then ends.

        The request path (bench/request_path.py counts its cost): plain try/except rather
        than context managers, the clock read once per step, nothing computed for a success
        that only a failure needs."""
        perf = time.perf_counter
        process = PROCESS
        connector = self.connector
        # A Session's connection, when it holds one: Session.get and Session.put inlined for
        # the usual case, a live connection and a success (two calls less per request)
        held = connector.conn if type(connector) is Session else None
        start = perf()
        intended = start if intended is None or intended > start else intended
        connected = NAN  # until the connector answered (connect_ms NaN: it never did)
        error: BaseException | None = None
        conn = None
        req = None
        process.inflight += 1
        try:
            try:
                conn = (held if held is not None and held.pgconn.status != _BAD
                        else connector.get())
            finally:
                connected = perf()
            req = Request(conn)
            work(req)
        except Exception as exc:  # every failure is a sample; the load goes on
            error = exc
        except gevent.GreenletExit:
            # Cut off by the stop: the times so far, recorded before anything can block.
            end = perf()
            query_ms = req.query_s * 1000.0 if req is not None and req.queries else NAN
            self._record_failure(name or self.request_name, intended, start, end,
                                 (connected - start) * 1000.0, query_ms,
                                 _Unfinished(end - start))
            raise
        finally:
            process.inflight -= 1
            if conn is not None:
                try:
                    failed = (error is not None or req is None
                              or conn.pgconn.transaction_status != _IDLE)
                    if failed or held is None:  # a Session keeps its connection after a success
                        connector.put(conn, failed)
                except Exception:  # a connection that cannot be put back is dropped
                    pass
        end = perf()
        name = name or self.request_name
        if error is not None:
            self._record_failure(
                name, intended, start, end, (connected - start) * 1000.0,
                req.query_s * 1000.0 if req is not None and req.queries else NAN, error)
            return False
        # A success: six doubles into the writer's columnar buffer (samples.ChunkWriter), the
        # same values a whole row would hold once the chunk is written (samples.ok_table).
        kind = self._ok_kinds.get(name)
        if kind is None:
            kind = self._ok_kinds[name] = process.ok_kind(self, name)
        if kind >= 0.0:
            oks = process.writer.oks
            oks += OK_PACK(kind, intended, start, connected, end,
                           req.query_s if req.queries else NAN)
            if not self.request_events:
                return True  # counted in Locust's statistics with its chunk (_Process.take)
        total_ms = (end - intended) * 1000.0
        self.environment.events.request.fire(
            request_type=self.endpoint_name, name=name, response_time=total_ms,
            response_length=0, context=self._context, exception=None,
            start_time=start + process.to_wall)
        return True

    def _record_failure(self, name: str, intended: float, start: float, end: float,
                        connect_ms: float, query_ms: float, error: BaseException) -> None:
        """A failed or unfinished request: a whole row, classified (successes never come
        here: request() packs them into the writer's columnar buffer)."""
        process = PROCESS
        to_wall = process.to_wall  # PROCESS.wall, inlined
        total_ms = (end - intended) * 1000.0
        if isinstance(error, _Unfinished):
            error_class, sqlstate, message = UNFINISHED, None, str(error)
        else:
            error_class, sqlstate, message = classify(error, secrets=process.secrets)
        failed = RequestFailed(f"{error_class}: {message}")
        process.record((self.scenario_name, self.endpoint_name, self.phase, name,
                        process.worker_index, self.user_index, intended + to_wall,
                        start + to_wall, connect_ms, query_ms, (end - start) * 1000.0,
                        total_ms, False, error_class, sqlstate, message, process.repeat))
        self.environment.events.request.fire(
            request_type=self.endpoint_name, name=name, response_time=total_ms,
            response_length=0, context=self._context, exception=failed,
            start_time=start + to_wall)

    def row_kind(self) -> _RowKind:
        return _RowKind(self.scenario_name, self.endpoint_name, self.phase, self.request_name)


class _Unfinished(Exception):
    """What an unfinished row records: the request ran ``seconds`` and was cut off."""

    def __init__(self, seconds: float):
        super().__init__(f"unfinished: still running when the load stopped (cut off after "
                         f"{seconds:.2f} s)")


# A connection whose transaction status is not this after a request was killed mid-query or
# left a transaction open: a session drops it (pgconn's status: no ConnectionInfo per request;
# a closed connection reads UNKNOWN, never raises).
_IDLE = psycopg.pq.TransactionStatus.IDLE


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
    and the wait counts in ``total_ms``). Override ``handle(req)``.

    Server k of a process (k = 0, 1, ... in start order) draws its arrivals with the seed
    ``"<LAB_SEED>:persistent:<worker>:<k>"`` (``lab.schedule.arrivals``), counted from its own
    start (``start_s`` in the schedule file) and ending with the run time. Arrivals still
    waiting for an in-flight slot when the load stops get not_started rows (in ``on_stop``);
    requests still running after INFLIGHT_JOIN_S are killed and get unfinished rows."""

    abstract = True
    phase = "persistent"
    request_name = "request"
    wait_time = constant(0)

    def __init__(self, environment):
        super().__init__(environment)
        self.server_index = next(PROCESS.server_ids)
        self.arrivals: _Arrivals | None = None
        self.inflight: gevent.pool.Pool | None = None
        self._spawned: dict[int, float] = {}  # handed to a greenlet that has not run yet
        self._tokens = itertools.count()
        self._accounted = False
        self.max_inflight = 0
        self.not_started = 0
        self.t0_perf: float | None = None

    def make_connector(self, endpoint: str, uri: str, app_name: str) -> _Connector:
        return AppPool(uri, self.connect_kwargs(endpoint, uri, app_name),
                       size=max(1, int(self.setting("pool_size", 10))),
                       timeout=float(self.setting("checkout_timeout", 10.0)),
                       name=f"{app_name}-{self.user_index}")

    def on_start(self) -> None:
        super().on_start()
        self.max_inflight = max(1, int(self.setting("max_inflight", 100)))
        self.inflight = gevent.pool.Pool(self.max_inflight)
        # The server's stream starts with the server (a server spawned later by --spawn-rate
        # gets no backlog from before it existed) and ends with the run time.
        self.t0_perf = time.perf_counter()
        if PROCESS.t0_perf is None:  # Locust as a library, without test_start
            PROCESS.t0_perf = self.t0_perf
        end = PROCESS.run_end()
        self.arrivals = _Arrivals(
            schedmod.arrivals(self.arrival_schedule(), self.arrival_seed(),
                              until=None if end is None else max(0.0, end - self.t0_perf)),
            self.t0_perf)
        PROCESS.servers.append(self)

    def arrival_seed(self) -> str:
        return f"{PROCESS.seed}:{self.phase}:{PROCESS.worker}:{self.server_index}"

    def arrival_schedule(self) -> schedmod.Schedule:
        kind = str(self.setting("arrivals", "poisson")).lower()
        return schedmod.Schedule(base_rate=float(self.setting("rate_per_server", 10.0)),
                                 poisson=kind != "even")

    def handle(self, req: Request) -> None:
        raise NotImplementedError

    def _stopping(self) -> bool:
        return PROCESS.stopping or self.is_stopping()

    @task
    def serve(self) -> None:
        arrivals = self.arrivals
        while not self._stopping():
            due = arrivals.take()
            if due is None:  # the schedule is over (or a zero rate): idle until the stop
                gevent.sleep(STOP_POLL_S)
                continue
            arrivals.current = due
            # a long wait in slices, to notice the stop; the last slice exactly (sleep_until)
            while not self._stopping() and (wait := due - time.perf_counter() - STOP_POLL_S) > 0:
                gevent.sleep(min(STOP_POLL_S, wait))
            if self._stopping():
                break
            sleep_until(due)
            while self.inflight.full() and not self._stopping():
                # every slot busy: the arrival waits (and counts in its total_ms)
                self.inflight.wait_available(timeout=STOP_POLL_S)
            if self._stopping():
                break
            token = next(self._tokens)
            arrivals.current = None  # no switch from here to the spawn
            self._spawned[token] = due
            self.inflight.spawn(self._arrival, token, due)
        gevent.sleep(0.05)  # stopping (the waiting arrival is on_stop's): let Locust stop us

    def _arrival(self, token: int, due: float) -> None:
        self._spawned.pop(token, None)
        self.request(self.handle, intended=due)

    def queued(self, now: float) -> int:
        """Due and not started: waiting for a slot, or spawned and not yet running."""
        if self.arrivals is None or self._accounted:
            return 0
        return self.arrivals.due_by(now) + len(self._spawned)

    def on_stop(self) -> None:
        try:
            if self.arrivals is not None and not self._accounted:
                # first, before anything can block: what never got a slot
                self._accounted = True
                left = self.arrivals.left(PROCESS.schedule_end())
                self.not_started = PROCESS.record_not_started(
                    self.row_kind(), left,
                    f"not started: waiting for a free in-flight slot (max_inflight "
                    f"{self.max_inflight}) when the load stopped")
            if self.inflight is not None:
                try:
                    self.inflight.join(timeout=_inflight_join_s(self.environment))
                finally:
                    self.inflight.kill(block=True, timeout=2)  # -> unfinished rows
                    never_ran, self._spawned = list(self._spawned.values()), {}
                    self.not_started += PROCESS.record_not_started(
                        self.row_kind(), never_ran,
                        "not started: its request was cut off before it began")
        finally:
            super().on_stop()

    def schedule_json(self) -> dict[str, Any]:
        schedule = self.arrival_schedule()
        start = (None if self.t0_perf is None or PROCESS.t0_perf is None
                 else round(self.t0_perf - PROCESS.t0_perf, 6))
        return {"server": self.server_index, "user": self.user_index, "start_s": start,
                "seed": self.arrival_seed(), "base_rate": schedule.base_rate,
                "arrivals": "poisson" if schedule.poisson else "even",
                "not_started": self.not_started}


def _inflight_join_s(environment) -> float:
    """How long an app server's running requests may take to end at the stop: within
    Locust's --stop-timeout (which kills the user after it), at most INFLIGHT_JOIN_S."""
    stop_timeout = float(getattr(environment, "stop_timeout", 0) or 0)
    if stop_timeout <= 0:
        return INFLIGHT_JOIN_S  # Locust kills the user at once and waits for on_stop
    return max(0.0, min(INFLIGHT_JOIN_S, stop_timeout - 3.0))
