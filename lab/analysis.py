"""Stage 6 of the pipeline: the numbers of a run directory, and what they say.

``analyze(run_dir)`` reads a run directory (docs/formats.md: manifest/1, requests/1.x,
connections/1) and returns a ``RunAnalysis``: for each (scenario, phase, endpoint), pooled over
the run's repeats, every scheduled arrival's outcome (succeeded, failed by class, not started),
requests/s, p50/p95/p99/max of connect, query and total time with 95% intervals, peak Postgres
backends (the dedicated pooler's auth_query logins counted apart) and peak waiting clients;
outages (a target that stopped answering the sampler); one-second windows for the time plots;
latency distributions; the connection samples as arrays (failed samples are NaN: gaps, never
zeros); warnings about the run (a busy machine, outages, work never started, one repeat only);
and the recommendation of ``recommend`` (Supabase's decision guide applied to what was
measured). ``compare(a, b)`` lines two analyses up; ``to_json`` is `lab report --json`.

Definitions (the report states them too):

* every scheduled arrival has one outcome: ``scheduled = succeeded + failed (by class) + not
  started``. A ``not_started`` row is an arrival that never started (every slot was busy, or
  it was still queued when the segment ended); it is not a failure and has no latency. The
  error rate is failed / scheduled, the not-started rate not started / scheduled;
* latency percentiles are over successful requests only (a refused connection is fast and
  would flatter the numbers; failures are counted by class instead). Percentiles are linear
  interpolation between order statistics, as ``numpy.percentile``'s default;
* requests/s is the requests that started (succeeded + failed) over the time the load ran,
  summed over repeats: in each segment from the load's start (its schedule's t0, else its first
  scheduled arrival) to the segment's end, at most the run's --duration;
* one-second windows bin rows by intended start, counted from the start of their own segment
  (matched by scenario, endpoint and repeat), and run to the segment's end even when nothing
  succeeds; repeats add up window by window;
* an outage is at least two consecutive failed connection samples of Postgres or of the
  endpoint's own pooler, clipped to the segment; ``pool_timeout`` failures during an outage of
  their endpoint are counted as ``connection_refused`` (a pooler that is gone is not a pool
  that is too small);
* 95% intervals: a stratified block bootstrap (1,000 resamples, fixed seed) over the
  one-second windows of all repeats; see ``ci_method``;
* peaks come from the connection samples taken within the group's segments.

Pure: no plotting, no printing, no click. Large runs stay in numpy arrays from pyarrow.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lab import samples
from lab.errors import ReportError

MANIFEST_FORMAT = "manifest/1"
CONNECTIONS_VERSION = 1
PERCENTILES = (50.0, 95.0, 99.0)
# docs/formats.md, in its order; an unknown class found in a file is kept after these.
ERROR_CLASSES = ("too_many_clients", "max_client_conn", "pool_timeout", "prepared_statement",
                 "authentication", "tls", "connection_refused", "connection_lost", "unfinished",
                 "other")
NOT_STARTED = "not_started"  # an outcome of its own: not a failure
LEGACY_NETWORK = "network"  # requests/1 files: both connection classes in one
CONNECTION_CLASSES = ("connection_refused", "connection_lost")
ENDPOINT_ORDER = ("direct", "session", "transaction", "dedicated", "target")
# An endpoint "serves" a workload when at most this share of its scheduled arrivals failed.
HEALTHY_ERROR_RATE = 0.01
# The recommendation departs from the guide's choice only for an endpoint whose p95 is lower
# by more than this share, with its whole 95% interval below the guide's choice's.
THRESHOLD = 0.20
# Clients queued this long (PgBouncer's maxwait) are a pool-size limit, not a passing queue.
QUEUE_WAIT_S = 1.0
# Arrivals due this close to the end of their segment's load and never started are the stop's
# (the load ended before they could), not the endpoint's: they do not bar a recommendation.
END_GRACE_S = 1.0
# A load average above this share of the cores before a segment: a busy machine.
NOISY_LOAD_PER_CORE = 0.75
# Postgres keeps superuser_reserved_connections (3 by default) out of clients' reach.
RESERVED_CONNECTIONS = 3
OUTAGE_SAMPLES = 2  # consecutive failed samples that make an outage
CONFIDENCE = 0.95
RESAMPLES = 1_000
BOOTSTRAP_SEED = 20261125
HISTOGRAM_BIN = 0.005  # width of a latency histogram bin, in ln(ms): about 0.5%
MAX_HISTOGRAM_BINS = 4_000
POOLER_TARGETS = ("session", "transaction", "dedicated")  # endpoint = its sampled target
TARGET_LABELS = {"postgres": "Postgres", "session": "session pooler",
                 "transaction": "transaction pooler", "dedicated": "dedicated pooler"}
_BASE_COLUMNS = ("scenario", "phase", "endpoint", "intended_start", "start", "connect_ms",
                 "query_ms", "service_ms", "total_ms", "ok", "error_class", "sqlstate",
                 "message")
# requests/1.1 added `repeat`; lab.samples fills it with 1 for older files
COLUMNS = _BASE_COLUMNS + (("repeat",) if "repeat" in samples.COLUMNS else ())

Key = tuple[str, str, str]  # (scenario, phase, endpoint)


# -- results -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stats:
    """Percentiles of one duration column (ms) over the successful requests that have it."""

    n: int
    p50: float
    p95: float
    p99: float
    max: float

    @classmethod
    def of_sorted(cls, values: np.ndarray) -> Stats:
        if len(values) == 0:
            return cls(0, math.nan, math.nan, math.nan, math.nan)
        p50, p95, p99 = (float(percentile_sorted(values, q)) for q in PERCENTILES)
        return cls(len(values), p50, p95, p99, float(values[-1]))


@dataclass(frozen=True)
class Estimate:
    """A measured value and its 95% interval (NaN when there is nothing to measure)."""

    value: float
    low: float
    high: float

    @classmethod
    def unknown(cls) -> Estimate:
        return cls(math.nan, math.nan, math.nan)

    @property
    def known(self) -> bool:
        return math.isfinite(self.value)

    def to_json(self) -> dict[str, Any]:
        return {"value": _json_number(self.value),
                "ci": [_json_number(self.low), _json_number(self.high)]}


@dataclass
class Windows:
    """One-second windows of a group; ``t`` is each window's start, seconds after its segment's
    start. Counts add up over repeats window by window (``runs``: how many repeats' segments
    cover each window; divide by it for a per-run rate); percentiles pool the repeats.
    ``requests`` counts rows that started, ``not_started`` the arrivals that never did."""

    t: np.ndarray
    requests: np.ndarray
    ok: np.ndarray
    errors: dict[str, np.ndarray]
    p50: np.ndarray  # total_ms of successful requests; NaN where a window has none
    p95: np.ndarray
    p99: np.ndarray
    not_started: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    runs: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def scheduled(self) -> np.ndarray:
        return self.requests + self.not_started


@dataclass(frozen=True)
class Outage:
    """A sampled target that stopped answering during one segment."""

    scenario: str
    endpoint: str
    repeat: int
    target: str  # "postgres", "session", "transaction", "dedicated"
    start_s: float  # seconds after the segment start
    end_s: float | None  # None: still down when the segment ended
    error: str  # what the sampler saw
    t0: float  # the segment's start (Unix s)
    length_s: float = math.inf  # the segment's length (s)

    @property
    def label(self) -> str:
        return TARGET_LABELS.get(self.target, self.target)

    @property
    def until_s(self) -> float:
        return self.end_s if self.end_s is not None else self.length_s

    def describe(self) -> str:
        end = "the end" if self.end_s is None else f"{self.end_s:.1f} s"
        return f"{self.label} unreachable from {self.start_s:.1f} s to {end}"


@dataclass(frozen=True)
class Span:
    """One segment of a group (one repeat): the time axis of its rows and the load's time."""

    repeat: int
    start: float  # the segment's start (Unix s): the origin of its windows
    end: float  # the segment's end (Unix s)
    load_start: float  # when the load started (the schedule's t0, else the first arrival)
    load_s: float  # how long the load ran: the denominator of rates
    spikes: tuple[tuple[float, float], ...]  # Unix s
    unserved: int = 0
    interrupted: bool = False


@dataclass
class Group:
    """Everything measured for one (scenario, phase, endpoint), pooled over repeats."""

    scenario: str
    phase: str
    endpoint: str
    scheduled: int  # every arrival of the schedule: requests + not_started
    requests: int  # arrivals that started: ok + failed
    ok: int
    errors: dict[str, int]  # failed requests by class (classes with at least one)
    not_started: int
    repeats: int
    segment_s: float  # the load's time summed over repeats: the denominator of rates
    first: float  # the first segment's start (Unix s)
    last: float  # the first segment's end (or its last request's end, if later)
    connect: Stats
    query: Stats
    total: Stats
    t0: float  # start of the first segment the group ran in: the origin of its time axis
    spikes: list[tuple[float, float]]  # spike windows, seconds after t0
    windows: Windows
    distribution: dict[str, tuple[np.ndarray, np.ndarray]]  # metric -> (quantiles, ms)
    ci: dict[str, Estimate] = field(default_factory=dict)
    outages: list[Outage] = field(default_factory=list)
    reclassified: int = 0  # pool_timeout failures inside an outage, counted as refused
    not_started_at_end: int = 0  # of not_started: due in the last END_GRACE_S of the load
    spans: list[Span] = field(default_factory=list)
    peak_backends: int | None = None  # client backends, the dedicated auth_query ones apart
    peak_auth_backends: int | None = None  # the dedicated pooler's auth_query backends
    peak_clients: int | None = None
    peak_waiting: int | None = None
    peak_wait_s: float | None = None  # the longest a pooler client waited (maxwait)
    faults: list[Any] = field(default_factory=list)  # lab.faults.measure.FaultImpact

    @property
    def key(self) -> Key:
        return (self.scenario, self.phase, self.endpoint)

    @property
    def duration_s(self) -> float:
        return self.segment_s

    @property
    def rps(self) -> float:
        return self.requests / self.segment_s if self.segment_s > 0 else math.nan

    @property
    def failed(self) -> int:
        return self.requests - self.ok

    @property
    def error_rate(self) -> float:
        return self.failed / self.scheduled if self.scheduled else 0.0

    @property
    def not_started_rate(self) -> float:
        return self.not_started / self.scheduled if self.scheduled else 0.0

    def error_rate_of(self, cls: str) -> float:
        return self.errors.get(cls, 0) / self.scheduled if self.scheduled else 0.0

    def estimate(self, name: str) -> Estimate:
        return self.ci.get(name) or Estimate.unknown()


@dataclass
class Series:
    """Connection samples of one target. Values are NaN where a sample failed."""

    target: str
    kind: str  # "postgres" or "pgbouncer"
    t: np.ndarray
    ok: np.ndarray
    values: dict[str, np.ndarray]
    limits: dict[str, int]
    failures: list[tuple[float, str]] = field(default_factory=list)  # (t, error) of gaps

    def peak(self, name: str, first: float, last: float) -> int | None:
        return self.peak_in(name, [(first, last)])

    def peak_in(self, name: str, spans: Iterable[tuple[float, float]]) -> int | None:
        value = self.max_in(name, spans)
        return None if value is None else int(value)

    def max_in(self, name: str, spans: Iterable[tuple[float, float]]) -> float | None:
        if name not in self.values:
            return None
        inside = np.zeros(len(self.t), dtype=bool)
        for first, last in spans:
            inside |= (self.t >= first) & (self.t <= last)
        values = self.values[name][inside & self.ok]
        values = values[~np.isnan(values)]
        return float(values.max()) if len(values) else None

    def down_runs(self) -> list[tuple[float, float | None, str]]:
        """Runs of at least OUTAGE_SAMPLES consecutive failed samples: (first failed sample,
        the next good sample or None, the first error)."""
        runs = []
        failures = dict(self.failures)
        n = len(self.t)
        i = 0
        while i < n:
            if self.ok[i]:
                i += 1
                continue
            j = i
            while j + 1 < n and not self.ok[j + 1]:
                j += 1
            if j - i + 1 >= OUTAGE_SAMPLES:
                runs.append((float(self.t[i]), float(self.t[j + 1]) if j + 1 < n else None,
                             failures.get(self.t[i], "sample failed")))
            i = j + 1
        return runs


@dataclass(frozen=True)
class ErrorSample:
    """The most frequent message of one error class on one (scenario, phase, endpoint)."""

    key: Key
    error_class: str
    count: int
    sqlstate: str | None
    message: str | None


@dataclass(frozen=True)
class LimitHit:
    """A documented limit this run reached, on one endpoint."""

    endpoint: str
    limit: str  # e.g. "Postgres max_connections"
    value: int | None
    evidence: str  # what was measured
    fix: str
    error_class: str | None = None  # None: reached without errors (queueing, at the cap)
    count: int = 0


@dataclass
class Recommendation:
    """What one workload of the run says, following the decision guide."""

    scenario: str
    phase: str
    workload: str  # "serverless" or "persistent"
    guide: tuple[str, ...]  # endpoints the guide recommends, best first
    choice: str | None  # the endpoint this run recommends; None when none was eligible
    agrees: bool  # the choice is one of the guide's
    sentences: list[str]
    limits: list[LimitHit]
    reason: str = ""  # one sentence: why this choice
    threshold: float = THRESHOLD
    default: str | None = None  # the guide's choice among the eligible endpoints
    ineligible: dict[str, str] = field(default_factory=dict)  # endpoint -> why not


@dataclass
class RunAnalysis:
    run_dir: Path
    manifest: dict[str, Any]
    groups: list[Group]
    connections: dict[str, Series]
    limits: dict[str, int]  # max_connections, pool_size, max_client_conn (what is known)
    error_samples: list[ErrorSample]
    recommendations: list[Recommendation]
    skipped_lines: int = 0  # unreadable connection-sample lines (a torn last line and such)
    outages: list[Outage] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    ci_method: str = ""
    repeats: int = 1

    @property
    def run_id(self) -> str:
        return str(self.manifest.get("run_id") or self.run_dir.name)

    @property
    def scenarios(self) -> list[str]:
        return list(dict.fromkeys(g.scenario for g in self.groups))

    def groups_of(self, scenario: str) -> list[Group]:
        return [g for g in self.groups if g.scenario == scenario]

    def group(self, key: Key) -> Group | None:
        return next((g for g in self.groups if g.key == key), None)

    @property
    def error_classes(self) -> list[str]:
        """Classes that occurred anywhere in the run, in the documented order."""
        seen = {c for g in self.groups for c in g.errors}
        return [c for c in ERROR_CLASSES if c in seen] + sorted(seen - set(ERROR_CLASSES))

    @property
    def total_requests(self) -> int:
        return sum(g.requests for g in self.groups)

    @property
    def total_scheduled(self) -> int:
        return sum(g.scheduled for g in self.groups)


# -- reading a run directory ---------------------------------------------------------------


def read_manifest(run_dir: Path) -> dict[str, Any]:
    if not run_dir.exists():
        raise ReportError(f"{run_dir} does not exist",
                          fix="give the path of a run directory, e.g. reports/<run-id>")
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir} is not a directory",
                          fix="give the run directory (reports/<run-id>), not a file in it")
    path = run_dir / "manifest.json"
    if not path.is_file():
        raise ReportError(f"{run_dir} has no manifest.json, so it is not a run directory",
                          fix="point at a directory written by `lab run` (reports/<run-id>)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path} is damaged ({exc.msg} at line {exc.lineno})",
                          fix="restore manifest.json from a copy, or repeat the run "
                              "(its `reproduce` line)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"{path} is unreadable ({exc})",
                          fix="check the file's permissions, or repeat the run") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("format"), str):
        raise ReportError(f"{path} has no format tag, so it is not a pooler-lab manifest",
                          fix="point at a directory written by `lab run` (reports/<run-id>)")
    found = manifest["format"]
    kind, _, version = found.partition("/")
    if kind != "manifest" or version.split(".")[0] != MANIFEST_FORMAT.split("/")[1]:
        raise ReportError(f"{path} is format {found}; this pooler-lab reads {MANIFEST_FORMAT}",
                          fix="upgrade pooler-lab (pip install -U pooler-lab) to read it")
    return manifest


def read_requests(run_dir: Path, columns: Iterable[str] = COLUMNS) -> pa.Table:
    """The run's requests (requests.parquet, or the chunks of an interrupted run)."""
    try:
        table = samples.read_requests(run_dir, columns=columns)
    except (pa.ArrowInvalid, KeyError) as exc:  # a file without a column the report needs
        raise ReportError(f"{run_dir} has request samples without a needed column ({exc})",
                          fix="point at a run directory written by `lab run`") from None
    if table.num_rows == 0:
        raise ReportError(f"{run_dir} has no request samples (0 rows)",
                          fix="repeat the run with a longer --duration")
    return table


def read_connections(run_dir: Path) -> tuple[dict[str, Series], int]:
    """connections.jsonl as one ``Series`` per target, and how many lines were unreadable."""
    path = run_dir / "connections.jsonl"
    if not path.exists():
        return {}, 0
    rows: dict[str, list[dict[str, Any]]] = {}
    skipped = 0
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                skipped += 1  # a torn last line of a killed run
                continue
            if not isinstance(record, dict):
                skipped += 1
                continue
            version = record.get("v")
            if version != CONNECTIONS_VERSION:
                raise ReportError(f"{path} holds connections/{version} samples; this pooler-lab "
                                  f"reads connections/{CONNECTIONS_VERSION}",
                                  fix="upgrade pooler-lab (pip install -U pooler-lab) to read it")
            target = record.get("target")
            if not isinstance(target, str) or not isinstance(record.get("t"), int | float):
                skipped += 1
                continue
            rows.setdefault(target, []).append(record)
    return {target: _series(target, records) for target, records in rows.items()}, skipped


def _series(target: str, records: list[dict[str, Any]]) -> Series:
    records.sort(key=lambda r: r["t"])
    kind = next((r.get("kind") for r in records if r.get("kind")), "postgres")
    n = len(records)
    t = np.array([float(r["t"]) for r in records])
    ok = np.array([bool(r.get("ok")) for r in records])
    if kind == "pgbouncer":
        names = ("clients", "waiting", "servers", "active_servers", "maxwait_s")
    else:
        names = ("backends", "direct", "shared", "dedicated", "dedicated_auth", "local")
    values = {name: np.full(n, np.nan) for name in names}
    limits: dict[str, int] = {}
    failures = []
    for i, r in enumerate(records):
        if isinstance(r.get("limits"), dict):
            limits.update({k: v for k, v in r["limits"].items() if isinstance(v, int)})
        if not ok[i]:
            failures.append((t[i], str(r.get("error") or "sample failed")))
            continue
        if kind == "pgbouncer":
            pools = r.get("pools") or {}
            active, waiting = _num(pools, "cl_active"), _num(pools, "cl_waiting")
            values["clients"][i] = active + waiting
            values["waiting"][i] = waiting
            values["servers"][i] = sum(_num(pools, k) for k in (
                "sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login"))
            values["active_servers"][i] = _num(pools, "sv_active")
            if isinstance(pools.get("maxwait_s"), int | float):
                values["maxwait_s"][i] = float(pools["maxwait_s"])
        else:
            origins = r.get("by_origin") or {}
            # the dedicated pooler's auth_query login: by_origin.dedicated_auth since the
            # sampler counts it apart; before, inside `dedicated` (found in `groups`)
            if "dedicated_auth" in origins:
                auth, inside = _num(origins, "dedicated_auth"), 0.0
            else:
                auth = float(sum(_num(g, "n") for g in r.get("groups") or []
                                 if isinstance(g, dict) and g.get("origin") == "dedicated"
                                 and g.get("role") == "pgbouncer"))
                inside = auth
            values["backends"][i] = _num(r, "total") - auth
            values["dedicated_auth"][i] = auth
            for origin in ("direct", "shared", "dedicated", "local"):
                values[origin][i] = _num(origins, origin)
            values["dedicated"][i] -= inside
    return Series(target, kind, t, ok, values, limits, failures)


def _num(mapping: Mapping[str, Any], key: str) -> float:
    value = mapping.get(key)
    return float(value) if isinstance(value, int | float) else 0.0


# -- the analysis ------------------------------------------------------------------------------


def analyze(run_dir: Path | str) -> RunAnalysis:
    """Every number of the report, from a run directory (ReportError when it is unusable)."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    segments = _segments(manifest, run_dir)
    connections, skipped = read_connections(run_dir)
    duration = manifest.get("load", {}).get("duration_s") \
        if isinstance(manifest.get("load"), dict) else None
    duration = float(duration) if isinstance(duration, int | float) and duration > 0 else None
    # no reference to the table is kept here: _groups drops it once it has the arrays it needs
    from lab.faults import measure as faultmeasure

    events = faultmeasure.read_events(run_dir)
    groups, error_samples = _groups(read_requests(run_dir), segments, connections, duration,
                                    events)
    pa.default_memory_pool().release_unused()
    limits = _limits(manifest, connections)
    outages = sorted({o for g in groups for o in g.outages}, key=lambda o: (o.t0, o.start_s,
                                                                          o.target))
    repeats = _repeats(manifest, groups)
    analysis = RunAnalysis(run_dir=run_dir, manifest=manifest, groups=groups,
                           connections=connections, limits=limits,
                           error_samples=error_samples, recommendations=[],
                           skipped_lines=skipped, outages=outages, repeats=repeats,
                           ci_method=ci_method(repeats))
    analysis.recommendations = recommend(analysis)
    analysis.warnings = warnings_of(analysis)
    return analysis


def _repeats(manifest: Mapping[str, Any], groups: list[Group]) -> int:
    load = manifest.get("load") if isinstance(manifest.get("load"), dict) else {}
    declared = load.get("repeat")
    seen = max((g.repeats for g in groups), default=1)
    return max(seen, declared if isinstance(declared, int) and declared > 0 else 1)


def ci_method(repeats: int) -> str:
    runs = f"all {repeats} repeats" if repeats > 1 else "the one run"
    return (f"95% intervals are percentile bootstrap intervals from {RESAMPLES:,} resamples of "
            f"the one-second windows (by intended start) of {runs}, drawn inside and outside "
            "the schedule's spikes in the numbers measured, with latency percentiles read "
            "from 0.5%-wide histogram bins (the values themselves are exact).")


def _limits(manifest: Mapping[str, Any], connections: Mapping[str, Series]) -> dict[str, int]:
    """Limits from the samples (what the sampler saw configured), else the lab's settings."""
    limits: dict[str, int] = {}
    lab = manifest.get("lab") or {}
    for key in ("max_connections", "pool_size", "max_client_conn"):
        if isinstance(lab.get(key), int):
            limits[key] = lab[key]
    for series in connections.values():
        limits.update(series.limits)
    # session_overflow = "refuse" (Supavisor 2.8+): the session pooler takes at most pool_size
    # clients. Manifests from before the setting ran a session pooler that queued them.
    if lab.get("session_overflow") == "refuse" and isinstance(limits.get("pool_size"), int):
        limits["session_max_clients"] = limits["pool_size"]
    return limits


@dataclass(frozen=True)
class _Segment:
    scenario: str | None  # None in manifests that did not say
    endpoint: str
    repeat: int
    start: float
    end: float  # inf: still running when the manifest was last written
    spikes: tuple[tuple[float, float], ...]
    unserved: int
    interrupted: bool
    load_start: float | None  # the schedule's t0, when its file says


def _time(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        stamp = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    return stamp.timestamp()


def _segments(manifest: Mapping[str, Any], run_dir: Path | None = None) -> list[_Segment]:
    raw = [s for s in manifest.get("segments") or [] if isinstance(s, dict)]
    load = manifest.get("load") if isinstance(manifest.get("load"), dict) else {}
    repeats = load.get("repeat") if isinstance(load.get("repeat"), int) else 1
    result = []
    for i, s in enumerate(raw):
        start = _time(s.get("started_at"))
        if start is None:
            continue
        end = _time(s.get("ended_at"))
        if end is None:  # still running when the manifest was last written
            end = _time(raw[i + 1].get("started_at")) if i + 1 < len(raw) else None
        end = end if end is not None else math.inf
        spikes = tuple((float(a), float(b)) for a, b in (s.get("spikes") or [])
                       if isinstance(a, int | float) and isinstance(b, int | float))
        scenario = s.get("scenario") if isinstance(s.get("scenario"), str) else None
        repeat = s.get("repeat") if isinstance(s.get("repeat"), int) else 1
        endpoint = str(s.get("endpoint", ""))
        unserved = s.get("unserved") if isinstance(s.get("unserved"), int) else 0
        t0 = _schedule_t0(run_dir, scenario, endpoint, repeat, repeats, start, end) \
            if run_dir is not None and scenario else None
        result.append(_Segment(scenario, endpoint, repeat, start, end, spikes, unserved,
                               bool(s.get("interrupted")), t0))
    return result


def _schedule_t0(run_dir: Path, scenario: str, endpoint: str, repeat: int, repeats: int,
                 start: float, end: float) -> float | None:
    """When the segment's load began: the earliest ``t0`` of its schedule files."""
    directory = run_dir / "schedule"
    if not directory.is_dir():
        return None
    names = [f"{scenario}.{endpoint}.r{repeat}-*.json"]
    if repeat == 1 or repeats == 1:
        names.append(f"{scenario}.{endpoint}-*.json")
    found = []
    for pattern in names:
        for path in directory.glob(pattern):
            try:
                t0 = json.loads(path.read_text()).get("t0")
            except (OSError, ValueError, AttributeError):
                continue
            if isinstance(t0, int | float) and start <= t0 <= end:
                found.append(float(t0))
    return min(found) if found else None


def _codes(column: pa.ChunkedArray) -> tuple[np.ndarray, list[str]]:
    """Dictionary indices (-1 for null) and the dictionary of a string column."""
    if not pa.types.is_dictionary(column.type):
        column = pc.dictionary_encode(column)
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if isinstance(array, pa.ChunkedArray):  # pragma: no cover - pyarrow < 15 returns chunked
        array = array.combine_chunks()
    indices = pc.fill_null(array.indices, -1).to_numpy(zero_copy_only=False)
    return indices.astype(np.int32, copy=False), array.dictionary.to_pylist()


def _floats(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).to_numpy().astype(np.float64, copy=False)


def _endpoint_rank(name: str) -> tuple[int, str]:
    return (ENDPOINT_ORDER.index(name) if name in ENDPOINT_ORDER else len(ENDPOINT_ORDER), name)


# "network" rows of older files: what could not connect at all (the rest lost a connection)
_REFUSED = re.compile(r"connection refused|could not connect|timeout expired|timed out|"
                      r"no route to host|network is unreachable|could not translate host name|"
                      r"cannot connect|starting up|shutting down|client_login_timeout|"
                      r"connection to server (at|on) .*? failed:", re.IGNORECASE)


def legacy_connection_class(sqlstate: str | None, message: str | None) -> str:
    """connection_refused or connection_lost for a row of the old class ``network``."""
    try:
        from lab.classify import classify

        cls = classify(sqlstate, message or "")[0]
    except Exception:  # pragma: no cover - classify takes any text
        cls = None
    if cls in CONNECTION_CLASSES:
        return cls
    return "connection_refused" if _REFUSED.search(message or "") else "connection_lost"


def _classes(errc: np.ndarray, err_names: list[str], ok: np.ndarray, sqls: np.ndarray,
             sql_names: list[str], msgs: np.ndarray,
             msg_names: list[str]) -> tuple[np.ndarray, list[str]]:
    """Each row's outcome class as an index into the returned names (-1: succeeded).
    A failure without a class is ``other``; ``network`` (older files) is split in two."""
    names = [*ERROR_CLASSES, NOT_STARTED]
    lookup = []
    for name in err_names:
        if name == LEGACY_NETWORK:
            lookup.append(-2)
            continue
        if name not in names:
            names.append(name)
        lookup.append(names.index(name))
    other = names.index("other")
    table = np.array([*lookup, other], dtype=np.int32)  # a null class (-1) picks `other`
    cls = table[errc]
    cls[ok] = -1
    legacy = np.flatnonzero(cls == -2)
    if len(legacy):
        width = len(msg_names) + 1
        pair = (sqls[legacy].astype(np.int64) + 1) * width + (msgs[legacy] + 1)
        uniq, inverse = np.unique(pair, return_inverse=True)
        mapped = []
        for p in uniq.tolist():
            s_code, m_code = p // width - 1, p % width - 1
            mapped.append(names.index(legacy_connection_class(
                sql_names[s_code] if s_code >= 0 else None,
                msg_names[m_code] if m_code >= 0 else None)))
        cls[legacy] = np.array(mapped, dtype=np.int32)[inverse]
    return cls, names


def _groups(table: pa.Table, segments: list[_Segment], connections: Mapping[str, Series],
            duration: float | None, fault_events: Mapping[str, list[Any]] | None = None
            ) -> tuple[list[Group], list[ErrorSample]]:
    table = table.unify_dictionaries()
    scen, scen_names = _codes(table.column("scenario"))
    phase, phase_names = _codes(table.column("phase"))
    endp, endp_names = _codes(table.column("endpoint"))
    errc, err_names = _codes(table.column("error_class"))
    sqls, sql_names = _codes(table.column("sqlstate"))
    msgs, msg_names = _codes(table.column("message"))
    intended = _floats(table, "intended_start")
    start = _floats(table, "start")
    connect = _floats(table, "connect_ms")
    query = _floats(table, "query_ms")
    service = _floats(table, "service_ms")
    total = _floats(table, "total_ms")
    ok = table.column("ok").fill_null(False).to_numpy().astype(bool)
    if "repeat" in table.column_names:
        repeat = table.column("repeat").fill_null(1).to_numpy().astype(np.int64)
    else:
        repeat = np.ones(len(ok), dtype=np.int64)
    del table
    cls, class_names = _classes(errc, err_names, ok, sqls, sql_names, msgs, msg_names)
    del errc
    ns_code = class_names.index(NOT_STARTED)
    # when a row ended: its end, else its intended start plus its total, else its due time
    ends = start + service / 1000.0
    ends = np.where(np.isnan(ends), intended + total / 1000.0, ends)
    ends = np.where(np.isnan(ends), intended, ends)

    code = ((scen.astype(np.int64) * (len(phase_names) + 1) + phase)
            * (len(endp_names) + 1) + endp)
    uniq, inverse = np.unique(code, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.concatenate(([0], np.cumsum(np.bincount(inverse, minlength=len(uniq)))))
    keys = []
    for gi in range(len(uniq)):
        row = order[bounds[gi]]
        keys.append((scen_names[scen[row]], phase_names[phase[row]], endp_names[endp[row]]))
    # arrivals a segment's manifest counts as unserved but that have no row (older files):
    # not started all the same, given to one phase of the segment
    phases: dict[tuple[str, str], list[str]] = {}
    for s, p, e in keys:
        phases.setdefault((s, e), []).append(p)
    ns_rows: dict[tuple[str, str, int], int] = {}
    for gi, (s, _p, e) in enumerate(keys):
        idx = order[bounds[gi]:bounds[gi + 1]]
        reps, counts = np.unique(repeat[idx][cls[idx] == ns_code], return_counts=True)
        for r, c in zip(reps.tolist(), counts.tolist(), strict=True):
            ns_rows[(s, e, r)] = ns_rows.get((s, e, r), 0) + c
    down = {name: series.down_runs() for name, series in connections.items()}

    groups: list[Group] = []
    error_samples: list[ErrorSample] = []
    for gi, key in enumerate(keys):
        idx = order[bounds[gi]:bounds[gi + 1]]
        scenario, ph, endpoint = key
        g_rep = repeat[idx]
        g_intended = intended[idx]
        g_ends = ends[idx]
        spans = _spans(scenario, endpoint, g_rep, g_intended, g_ends, segments, duration)
        span_repeats = np.array([s.repeat for s in spans], dtype=np.int64)
        span_of_row = np.searchsorted(span_repeats, g_rep)
        t0_row = np.array([s.start for s in spans])[span_of_row]
        g_cls = cls[idx].copy()
        outages = _outages(scenario, endpoint, spans, down)
        reclassified = _reclassify(g_cls, class_names, g_rep, g_intended, g_ends, outages)
        g_ok = ok[idx]
        not_started_rows = g_cls == ns_code
        primary = "serverless" if "serverless" in phases[(scenario, endpoint)] \
            else phases[(scenario, endpoint)][0]
        extra = sum(s.unserved for s in spans
                    if ns_rows.get((scenario, endpoint, s.repeat), 0) == 0) \
            if ph == primary else 0
        failed = ~g_ok & ~not_started_rows
        errors: dict[str, int] = {}
        counts = np.bincount(g_cls[failed], minlength=len(class_names))
        for ci, n in enumerate(counts.tolist()):
            if n:
                errors[class_names[ci]] = n
        ok_idx = idx[g_ok]
        sorted_values = {name: _sorted_finite(column[ok_idx])
                         for name, column in (("connect", connect), ("query", query),
                                              ("total", total))}
        stats = {name: Stats.of_sorted(v) for name, v in sorted_values.items()}
        rel = g_intended - t0_row
        bins = np.floor(np.nan_to_num(rel, nan=0.0)).astype(np.int64)
        longest = max((s.end - s.start for s in spans), default=0.0)
        low = min(0, int(bins.min()))
        nbins = max(int(math.ceil(longest)) - low, int(bins.max()) - low + 1, 1)
        bins -= low
        windows = _windows(bins, low, nbins, g_ok, total[idx], g_cls, class_names,
                           not_started_rows)
        t = windows.t
        windows.runs = sum(((t < s.end - s.start) & (t + 1 > 0)).astype(np.int64)
                           for s in spans)
        first_span = spans[0]
        in_first = span_of_row == 0
        last = max(first_span.end, float(np.max(g_ends[in_first])) if in_first.any()
                   else first_span.end)
        n_ns = int(not_started_rows.sum()) + extra
        load_end = np.array([s.load_start + s.load_s for s in spans])[span_of_row]
        at_end = int((not_started_rows & (g_intended >= load_end - END_GRACE_S)).sum())
        group = Group(
            scenario=scenario, phase=ph, endpoint=endpoint,
            scheduled=len(idx) + extra, requests=len(idx) - int(not_started_rows.sum()),
            ok=int(g_ok.sum()), errors={c: errors[c] for c in _class_order(errors)},
            not_started=n_ns, repeats=len(spans), segment_s=sum(s.load_s for s in spans),
            first=first_span.start, last=last,
            connect=stats["connect"], query=stats["query"], total=stats["total"],
            t0=first_span.start,
            spikes=[(a - first_span.start, b - first_span.start) for a, b in first_span.spikes],
            windows=windows,
            distribution={name: _distribution(values) for name, values in sorted_values.items()},
            outages=outages, reclassified=reclassified, not_started_at_end=at_end,
            spans=spans)
        group.ci = _intervals(group, spans, span_of_row, bins, low, nbins, g_ok,
                              not_started_rows, total[idx], extra)
        _peaks(group, connections)
        if fault_events:
            group.faults = _fault_impacts(group, fault_events, connections, g_rep, g_intended,
                                          g_ends, g_ok, not_started_rows, g_cls, class_names,
                                          total[idx])
        groups.append(group)
        error_samples += _error_samples(key, failed, g_cls, class_names, sqls[idx], sql_names,
                                        msgs[idx], msg_names)
    # scenarios and their phases in the order they ran, then the documented endpoint order
    first_seen: dict[tuple[str, ...], float] = {}
    for g in groups:
        for k in ((g.scenario,), (g.scenario, g.phase)):
            first_seen[k] = min(first_seen.get(k, math.inf), g.first)
    groups.sort(key=lambda g: (first_seen[(g.scenario,)], g.scenario,
                               first_seen[(g.scenario, g.phase)], g.phase,
                               _endpoint_rank(g.endpoint)))
    return groups, error_samples


def _fault_impacts(group: Group, events: Mapping[str, list[Any]],
                   connections: Mapping[str, Series], rep: np.ndarray, intended: np.ndarray,
                   ends: np.ndarray, ok: np.ndarray, not_started: np.ndarray, cls: np.ndarray,
                   class_names: Sequence[str], total_ms: np.ndarray) -> list[Any]:
    """What each injected fault of the group's segments did to its requests (lab.faults)."""
    from lab.faults import measure

    postgres = connections.get("postgres")
    backends = _series_trace(postgres, "backends")
    bouncer = connections.get(group.endpoint)
    clients = (_series_trace(bouncer, "clients") if bouncer is not None
               and bouncer.kind == "pgbouncer" else
               _series_trace(postgres, "direct") if group.endpoint == "direct" else None)
    result = []
    for span in group.spans:
        names = [f"{group.scenario}.{group.endpoint}.r{span.repeat}"]
        if span.repeat == 1:
            names.append(f"{group.scenario}.{group.endpoint}")
        windows = next((events[n] for n in names if n in events), [])
        if not windows:
            continue
        mine = rep == span.repeat
        rows = measure.Rows(intended=intended[mine], ends=ends[mine], ok=ok[mine],
                            not_started=not_started[mine], classes=cls[mine],
                            class_names=class_names, total_ms=total_ms[mine])
        for window in windows:
            result.append(measure.impact(window, rows, span.repeat, span.load_start,
                                         span.end, backends, clients))
    return result


def _series_trace(series: Series | None, name: str) -> tuple[np.ndarray, np.ndarray] | None:
    if series is None or name not in series.values:
        return None
    values = np.where(series.ok, series.values[name], np.nan)
    return series.t, values


def _spans(scenario: str, endpoint: str, rep: np.ndarray, intended: np.ndarray,
           ends: np.ndarray, segments: list[_Segment], duration: float | None) -> list[Span]:
    """The segments a group ran in, one per repeat, in repeat order: the manifest's (matched by
    scenario, endpoint and repeat; by endpoint and time in manifests without scenarios), else
    made from the rows themselves."""
    chosen: dict[int, _Segment] = {}
    for s in segments:
        if s.scenario == scenario and s.endpoint == endpoint:
            chosen.setdefault(s.repeat, s)
    by_repeat: dict[int, np.ndarray] = {}
    for r in np.unique(rep).tolist():
        rows = rep == r
        by_repeat[r] = rows
        if r in chosen:
            continue
        median = float(np.nanmedian(intended[rows]))
        found = next((s for s in segments if s.scenario is None and s.endpoint == endpoint
                      and s.start <= median <= s.end), None)
        if found is None:
            first = float(np.nanmin(intended[rows]))
            found = _Segment(scenario, endpoint, r, first, float(np.nanmax(ends[rows])), (), 0,
                             False, first)
        chosen[r] = found
    spans = []
    for r in sorted(chosen):
        s = chosen[r]
        rows = by_repeat.get(r)
        has_rows = rows is not None and rows.any()
        end = s.end
        if not math.isfinite(end):
            end = float(np.nanmax(ends[rows])) if has_rows else s.start
        if s.load_start is not None:
            load_start = s.load_start
        elif has_rows:
            load_start = float(np.nanmin(intended[rows]))
        else:
            load_start = s.start
        if has_rows:  # no row is due before its load started
            load_start = min(load_start, float(np.nanmin(intended[rows])))
        load_s = max(end - load_start, 0.0)
        if duration is not None:
            load_s = min(load_s, duration)
        spans.append(Span(r, s.start, end, load_start, load_s, s.spikes, s.unserved,
                          s.interrupted))
    return spans


def _outages(scenario: str, endpoint: str, spans: list[Span],
             down: Mapping[str, list[tuple[float, float | None, str]]]) -> list[Outage]:
    """Outages of Postgres and of the endpoint's own pooler during each of the group's spans."""
    targets = ["postgres"] + ([endpoint] if endpoint in POOLER_TARGETS else [])
    result = []
    for span in spans:
        length = span.end - span.start
        for target in targets:
            for first, back, error in down.get(target, []):
                if first >= span.end or (back is not None and back <= span.start):
                    continue
                start_s = max(first, span.start) - span.start
                end_s = None if back is None or back >= span.end else back - span.start
                result.append(Outage(scenario, endpoint, span.repeat, target, start_s, end_s,
                                     error, span.start, length))
    return sorted(result, key=lambda o: (o.repeat, o.start_s, o.target))


def _reclassify(cls: np.ndarray, names: list[str], rep: np.ndarray, intended: np.ndarray,
                ends: np.ndarray, outages: list[Outage]) -> int:
    """pool_timeout failures whose wait overlaps an outage of their endpoint become
    connection_refused (in place); returns how many."""
    if not outages:
        return 0
    timeout, refused = names.index("pool_timeout"), names.index("connection_refused")
    moved = np.zeros(len(cls), dtype=bool)
    candidates = cls == timeout
    if not candidates.any():
        return 0
    for o in outages:
        a, b = o.t0 + o.start_s, o.t0 + o.until_s
        moved |= candidates & (rep == o.repeat) & (intended < b) & (ends >= a)
    cls[moved] = refused
    return int(moved.sum())


def _class_order(errors: Mapping[str, int]) -> list[str]:
    return [c for c in ERROR_CLASSES if c in errors] + sorted(set(errors) - set(ERROR_CLASSES))


def _sorted_finite(values: np.ndarray) -> np.ndarray:
    values = values[np.isfinite(values)]
    values.sort()
    return values


def percentile_sorted(values: np.ndarray, q: float | np.ndarray) -> np.ndarray:
    """Linear-interpolation percentile(s) ``q`` (0-100) of an ascending array: the same
    definition as numpy.percentile's default, without sorting again."""
    position = (len(values) - 1) * (np.asarray(q, dtype=np.float64) / 100.0)
    lower = np.floor(position).astype(np.int64)
    upper = np.minimum(lower + 1, len(values) - 1)
    fraction = position - lower
    return values[lower] + (values[upper] - values[lower]) * fraction


def _distribution(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Quantiles evenly spaced in "nines" (50%, 90%, 99%, ...) up to what the count supports."""
    if len(values) == 0:
        return np.array([]), np.array([])
    nines = min(5.0, math.log10(max(len(values), 10)))
    quantiles = 1.0 - 10.0 ** -np.linspace(0.0, nines, 160)
    quantiles[0] = 0.0
    return quantiles, percentile_sorted(values, quantiles * 100.0)


def _windows(bins: np.ndarray, low: int, nbins: int, ok: np.ndarray, total: np.ndarray,
             cls: np.ndarray, names: list[str], not_started: np.ndarray) -> Windows:
    started = ~not_started
    requests = np.bincount(bins[started], minlength=nbins)
    ok_count = np.bincount(bins[ok], minlength=nbins)
    ns = np.bincount(bins[not_started], minlength=nbins)
    errors = {}
    failed = started & ~ok
    for ci in np.unique(cls[failed]).tolist():
        errors[names[ci]] = np.bincount(bins[failed & (cls == ci)], minlength=nbins)
    errors = {c: errors[c] for c in _class_order(errors)}
    good = ok & np.isfinite(total)
    p50, p95, p99 = _binned_percentiles(bins[good], total[good], nbins, PERCENTILES)
    return Windows(t=np.arange(nbins, dtype=np.float64) + low, requests=requests, ok=ok_count,
                   errors=errors, p50=p50, p95=p95, p99=p99, not_started=ns)


def _binned_percentiles(bins: np.ndarray, values: np.ndarray, nbins: int,
                        qs: Iterable[float]) -> list[np.ndarray]:
    """Percentiles of ``values`` within each bin, all bins at once (NaN for an empty bin)."""
    order = np.lexsort((values, bins))
    values = values[order]
    counts = np.bincount(bins, minlength=nbins)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    has = counts > 0
    first, n = starts[has], counts[has]
    result = []
    for q in qs:
        out = np.full(nbins, np.nan)
        position = (n - 1) * (q / 100.0)
        lower = np.floor(position).astype(np.int64)
        upper = np.minimum(lower + 1, n - 1)
        low_v, up_v = values[first + lower], values[first + upper]
        out[has] = low_v + (up_v - low_v) * (position - lower)
        result.append(out)
    return result


# -- uncertainty -------------------------------------------------------------------------------


def _intervals(g: Group, spans: list[Span], span_of_row: np.ndarray, bins: np.ndarray,
               low: int, nbins: int, ok: np.ndarray, not_started: np.ndarray,
               total: np.ndarray, extra_not_started: int) -> dict[str, Estimate]:
    """95% intervals by a stratified block bootstrap: the blocks are one-second windows (by
    intended start) of every repeat while its load ran, resampled with replacement within
    their stratum (inside or outside a spike of the schedule), so every resample keeps the
    schedule's mix. Rates are ratios of resampled sums; latency percentiles come from
    per-window log-spaced histograms summed per resample, rescaled so the histogram estimate
    of the full sample equals the exact value."""
    n_spans = len(spans)
    block = span_of_row * nbins + bins  # every row's window, per repeat
    n_blocks = n_spans * nbins
    active = np.zeros(n_blocks, dtype=bool)
    stratum = np.zeros(n_blocks, dtype=np.int64)
    centers = np.arange(nbins) + low + 0.5
    for i, s in enumerate(spans):
        a = s.load_start - s.start
        inside = (centers + 0.5 > a) & (centers - 0.5 < a + s.load_s)
        active[i * nbins:(i + 1) * nbins] = inside
        for x, y in s.spikes:
            in_spike = (centers >= x - s.start) & (centers < y - s.start)
            stratum[i * nbins:(i + 1) * nbins][in_spike] = 1
    active[np.unique(block)] = True
    kept = np.flatnonzero(active)
    remap = np.full(n_blocks, -1, dtype=np.int64)
    remap[kept] = np.arange(len(kept))
    b = remap[block]
    n_kept = len(kept)
    started = ~not_started
    sched_b = np.bincount(b, minlength=n_kept).astype(np.float64)
    started_b = np.bincount(b[started], minlength=n_kept).astype(np.float64)
    failed_b = np.bincount(b[started & ~ok], minlength=n_kept).astype(np.float64)
    ns_b = np.bincount(b[not_started], minlength=n_kept).astype(np.float64)
    rng = np.random.default_rng([BOOTSTRAP_SEED, zlib.crc32("|".join(g.key).encode())])
    weights = _resample_weights(stratum[kept], rng)
    tail = (1.0 - CONFIDENCE) / 2 * 100.0

    def interval(value: float, resampled: np.ndarray) -> Estimate:
        if not math.isfinite(value):
            return Estimate.unknown()
        resampled = resampled[np.isfinite(resampled)]
        if len(resampled) == 0:
            return Estimate(value, value, value)
        lo, hi = np.percentile(resampled, [tail, 100.0 - tail])
        return Estimate(value, min(float(lo), value), max(float(hi), value))

    with np.errstate(invalid="ignore", divide="ignore"):
        sched = weights @ sched_b + extra_not_started
        result = {
            "rps": interval(g.rps, weights @ started_b / g.segment_s if g.segment_s > 0
                            else np.full(len(weights), np.nan)),
            "error_rate": interval(g.error_rate, (weights @ failed_b) / sched),
            "not_started_rate": interval(g.not_started_rate,
                                         (weights @ ns_b + extra_not_started) / sched),
        }
    good = ok & np.isfinite(total) & (total > 0)
    exact = {"p50": g.total.p50, "p95": g.total.p95, "p99": g.total.p99}
    if good.sum() < 2:
        result.update({k: interval(v, np.array([])) for k, v in exact.items()})
        return result
    logs = np.log(total[good])
    lowest, highest = float(logs.min()), float(logs.max())
    width = max(HISTOGRAM_BIN, (highest - lowest) / (MAX_HISTOGRAM_BINS - 1))
    nh = int((highest - lowest) / width) + 1
    hbin = np.minimum(((logs - lowest) / width).astype(np.int64), nh - 1)
    hist = np.bincount(b[good] * nh + hbin, minlength=n_kept * nh).reshape(n_kept, nh)
    used = np.flatnonzero(hist.sum(axis=0))
    hist = hist[:, used].astype(np.float32)
    edges = lowest + width * used  # the left edge of every bin kept
    qs = np.array(PERCENTILES) / 100.0
    base = _histogram_quantiles(hist.sum(axis=0, keepdims=True), edges, width, qs)[0]
    estimates = np.empty((len(weights), len(qs)))
    w32 = weights.astype(np.float32)
    for i in range(0, len(weights), 250):  # bounded memory however many windows and bins
        estimates[i:i + 250] = _histogram_quantiles(w32[i:i + 250] @ hist, edges, width, qs)
    for j, name in enumerate(("p50", "p95", "p99")):
        scale = exact[name] / base[j] if base[j] > 0 else math.nan
        result[name] = interval(exact[name], estimates[:, j] * scale)
    return result


def _resample_weights(strata: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """RESAMPLES x blocks: how often each block is drawn in each resample, drawing as many
    blocks from each stratum as it has."""
    n = len(strata)
    flat = []
    rows = np.arange(RESAMPLES)[:, None] * n
    for s in np.unique(strata).tolist():
        members = np.flatnonzero(strata == s)
        draws = members[rng.integers(0, len(members), size=(RESAMPLES, len(members)))]
        flat.append((rows + draws).ravel())
    counts = np.bincount(np.concatenate(flat), minlength=RESAMPLES * n)
    return counts.reshape(RESAMPLES, n).astype(np.float64)


def _histogram_quantiles(hist: np.ndarray, edges: np.ndarray, width: float,
                         qs: np.ndarray) -> np.ndarray:
    """Quantiles (linear-interpolation ranks) of log-binned histograms, one row each; values
    within a bin are taken as evenly spread over it."""
    cum = np.cumsum(hist, axis=1, dtype=np.float64)
    n = cum[:, -1]
    rows = np.arange(len(hist))
    out = np.full((len(hist), len(qs)), np.nan)
    for j, q in enumerate(qs):
        position = q * (n - 1)  # 0-based rank
        k = (cum <= position[:, None]).sum(axis=1)
        k = np.minimum(k, hist.shape[1] - 1)
        before = np.where(k > 0, cum[rows, np.maximum(k - 1, 0)], 0.0)
        count = hist[rows, k]
        with np.errstate(invalid="ignore", divide="ignore"):
            fraction = np.clip((position - before + 0.5) / count, 0.0, 1.0)
        value = np.exp(edges[k] + fraction * width)
        out[:, j] = np.where(n > 0, value, np.nan)
    return out


def _error_samples(key: Key, failed: np.ndarray, cls: np.ndarray, names: list[str],
                   sqls: np.ndarray, sql_names: list[str], msgs: np.ndarray,
                   msg_names: list[str]) -> list[ErrorSample]:
    result = []
    for ci in np.unique(cls[failed]).tolist():
        rows = failed & (cls == ci)
        m = msgs[rows]
        known = m[m >= 0]
        message = msg_names[int(np.bincount(known).argmax())] if len(known) else None
        s = sqls[rows]
        known_s = s[s >= 0]
        sqlstate = sql_names[int(np.bincount(known_s).argmax())] if len(known_s) else None
        result.append(ErrorSample(key, names[ci], int(rows.sum()), sqlstate, message))
    order = {c: i for i, c in enumerate(ERROR_CLASSES)}
    return sorted(result, key=lambda e: (order.get(e.error_class, len(order)), e.error_class))


def _peaks(group: Group, connections: Mapping[str, Series]) -> None:
    spans = [(s.start, max(s.end, s.start)) for s in group.spans]
    postgres = connections.get("postgres")
    if postgres is not None:
        group.peak_backends = postgres.peak_in("backends", spans)
        if group.endpoint == "dedicated":
            group.peak_auth_backends = postgres.peak_in("dedicated_auth", spans)
    bouncer = connections.get(group.endpoint)
    if bouncer is not None and bouncer.kind == "pgbouncer":
        group.peak_waiting = bouncer.peak_in("waiting", spans)
        group.peak_clients = bouncer.peak_in("clients", spans)
        group.peak_wait_s = bouncer.max_in("maxwait_s", spans)
    elif postgres is not None and group.endpoint == "direct":
        group.peak_clients = postgres.peak_in("direct", spans)


# -- what the run says -------------------------------------------------------------------------

GUIDE = {
    "serverless": ("transaction", "dedicated"),
    "persistent": ("direct", "session"),
}
GUIDE_TEXT = {
    "serverless": "Serverless and edge functions open a connection per invocation: Supabase's "
                  "guide sends them through a pooler in transaction mode (the shared pooler's "
                  "port 6543, or the dedicated pooler on a paid tier), because a direct "
                  "connection costs one Postgres backend per running invocation.",
    "persistent": "Persistent servers (VMs, containers) keep their connections open: Supabase's "
                  "guide connects them directly (or through the shared pooler's session mode "
                  "when they need IPv4), since their backend count is fixed by their pools.",
}
LABELS = {"direct": "direct connection", "session": "shared pooler, session mode",
          "transaction": "shared pooler, transaction mode",
          "dedicated": "dedicated PgBouncer pooler", "target": "the --target URI"}


def workload_of(phase: str, groups: list[Group]) -> str:
    """'serverless' or 'persistent': the phase when it says, else from how requests connected
    (a held connection records connect_ms 0)."""
    if phase in GUIDE:
        return phase
    connects = [g.connect.p50 for g in groups if g.connect.n]
    return "serverless" if connects and np.nanmedian(connects) > 0 else "persistent"


def _ms(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    if value >= 100:
        return f"{value:,.0f} ms"
    if value >= 10:
        return f"{value:.1f} ms"
    return f"{value:.2f} ms"


def _pct(value: float) -> str:
    return f"{100 * value:.2f}%" if value < 0.1 else f"{100 * value:.1f}%"


def _share(part: int, whole: int) -> str:
    """'300 of 666 arrivals (45%)'."""
    share = part / whole if whole else 0.0
    text = f"{100 * share:.0f}%" if share >= 0.1 else _pct(share)
    return f"{part:,} of {whole:,} arrivals ({text})"


def _queue_evidence(group: Group) -> str:
    """Where clients queued for a server connection shows: with a connection per request
    PgBouncer accepts the login and holds the first query; with an app-side pool the request
    waits for a pool checkout."""
    wait = (f", the longest for {group.peak_wait_s:.1f} s"
            if group.peak_wait_s is not None and math.isfinite(group.peak_wait_s) else "")
    queued = f"up to {group.peak_waiting} clients queued for a server connection{wait}"
    query, connect = group.query, group.connect
    in_query = query.n > 0 and (connect.n == 0 or query.p99 >= connect.p99)
    if in_query:
        return (f"{queued}; the wait shows in the first query (query p50 {_ms(query.p50)}, "
                f"p99 {_ms(query.p99)}), not in connect (p99 {_ms(connect.p99)})")
    where = "the pool checkout" if workload_of(group.phase, [group]) == "persistent" \
        else "connect"
    return (f"{queued}; the wait shows in {where} (connect p50 {_ms(connect.p50)}, "
            f"p99 {_ms(connect.p99)})")


def _outage_text(group: Group) -> str:
    if not group.outages:
        return "no outage in the connection samples"
    several = group.repeats > 1
    return "; ".join(o.describe() + (f" (repeat {o.repeat})" if several else "")
                     for o in group.outages)


def limit_hits(group: Group, limits: Mapping[str, int]) -> list[LimitHit]:
    """The documented limits a group ran into, with the measured evidence and the fix."""
    hits = []
    ep = group.endpoint
    max_conn = limits.get("max_connections")
    pool = limits.get("pool_size")
    max_client = limits.get("max_client_conn")
    backends = f"peak {group.peak_backends} Postgres backends" \
        if group.peak_backends is not None else "no backend samples"
    for cls, count in group.errors.items():
        share = _pct(count / group.scheduled) if group.scheduled else "-"
        if cls == "too_many_clients":
            hits.append(LimitHit(ep, "Postgres max_connections", max_conn,
                                 f"{count:,} requests ({share}) refused with too_many_clients; "
                                 f"{backends}",
                                 "connect through a pooler (transaction mode for serverless), or "
                                 "hold fewer connections (smaller app-side pools); a bigger tier "
                                 "raises max_connections", cls, count))
        elif cls == "max_client_conn":
            clients = f"peak {group.peak_clients} clients" if group.peak_clients is not None \
                else "no client samples"
            session_cap = limits.get("session_max_clients") if ep == "session" else None
            if session_cap is not None and (max_client is None or session_cap < max_client):
                # the lab's stand-in for Supavisor 2.8+'s (EMAXCONNSESSION)
                hits.append(LimitHit(
                    ep, "session mode max clients (pool_size; session_overflow = refuse)",
                    session_cap,
                    f"{count:,} requests ({share}) refused at connect: session mode allows "
                    f"only pool_size clients; {clients}",
                    "transaction mode (port 6543) for serverless and other short-lived "
                    "clients; fewer clients per session pool, or a larger pool_size (within "
                    "max_connections)", cls, count))
            else:
                hits.append(LimitHit(ep, "pooler max_client_conn (max pooler clients)",
                                     max_client, f"{count:,} requests ({share}) rejected; "
                                     f"{clients}",
                                     "fewer concurrent clients, or a tier with more pooler "
                                     "clients", cls, count))
        elif cls == "pool_timeout":
            waiting = f"peak {group.peak_waiting} waiting clients" \
                if group.peak_waiting is not None else "no pool samples"
            hits.append(LimitHit(ep, "pool size", pool,
                                 f"{count:,} requests ({share}) timed out queueing for a server "
                                 f"connection; {waiting}",
                                 "shorter transactions, a larger pool (within max_connections), "
                                 "or transaction mode instead of session mode", cls, count))
        elif cls == "prepared_statement":
            hits.append(LimitHit(ep, "transaction mode without prepared statements", None,
                                 f"{count:,} requests ({share}) failed on a prepared statement",
                                 "turn driver-side preparing off (psycopg prepare_threshold=None, "
                                 "asyncpg statement_cache_size=0, Prisma ?pgbouncer=true), or "
                                 "use session mode or a direct connection", cls, count))
        elif cls == "authentication":
            hits.append(LimitHit(ep, "credentials / tenant", None,
                                 f"{count:,} requests ({share}) failed to authenticate",
                                 "check the user name (postgres.<tenant> on the shared pooler) "
                                 "and the password", cls, count))
        elif cls == "tls":
            hits.append(LimitHit(ep, "TLS", None,
                                 f"{count:,} requests ({share}) were refused over TLS (plaintext "
                                 "where SSL is enforced, or a certificate that did not verify)",
                                 "connect with sslmode=verify-full and the lab's CA "
                                 "(lab connect --ssl-cert), or turn ssl_enforce off", cls, count))
        elif cls in CONNECTION_CLASSES:
            what = "could not connect" if cls == "connection_refused" \
                else "lost their connection"
            moved = (f", {group.reclassified:,} of them pool timeouts during the outage"
                     if cls == "connection_refused" and group.reclassified else "")
            hits.append(LimitHit(ep, "a pooler or host went away", None,
                                 f"{count:,} requests ({share}) {what}{moved}; "
                                 f"{_outage_text(group)}",
                                 "check `lab status` and `lab logs`; a pooler that was killed or "
                                 "paused has to be started again (lab up)", cls, count))
    classes = set(group.errors)
    if ("too_many_clients" not in classes and max_conn is not None
            and group.peak_backends is not None
            and group.peak_backends >= max_conn - RESERVED_CONNECTIONS):
        hits.append(LimitHit(ep, "Postgres max_connections", max_conn,
                             f"{backends}: every slot a client may use was taken",
                             "more concurrency will be refused: use a pooler or smaller pools"))
    if "pool_timeout" not in classes and _queued(group):
        hits.append(LimitHit(ep, "pool size", pool, _queue_evidence(group),
                             "queueing adds latency before any error: shorter transactions, "
                             "a larger pool within max_connections, or transaction mode"))
    return hits


def _queued(group: Group) -> bool:
    """Clients waited for a server connection long enough to be a limit: PgBouncer's maxwait
    reached QUEUE_WAIT_S (older samples without maxwait: any waiting client)."""
    if not group.peak_waiting:
        return False
    if group.peak_wait_s is None or not math.isfinite(group.peak_wait_s):
        return True
    return group.peak_wait_s >= QUEUE_WAIT_S


def ineligible_reason(group: Group, hits: Sequence[LimitHit]) -> str | None:
    """Why an endpoint cannot be recommended for its workload, or None when it can: it started
    every arrival it was given (but those due in the last END_GRACE_S of the load, which the
    stop cut off), failed at most HEALTHY_ERROR_RATE of them, had no outage and reached no
    documented limit."""
    ep = group.endpoint
    if group.outages:
        return f"{ep}: {_outage_text(group)}"
    if group.not_started > group.not_started_at_end:
        return f"{ep} left {_share(group.not_started, group.scheduled)} not started"
    if group.error_rate > HEALTHY_ERROR_RATE:
        worst = max(group.errors, key=lambda c: group.errors[c])
        return f"{ep} failed {_share(group.failed, group.scheduled)}, mostly {worst}"
    if hits:
        hit = hits[0]
        return f"{ep} reached {hit.limit} ({hit.evidence})"
    if group.total.n == 0:
        return f"{ep} completed no request"
    return None


def recommend(analysis: RunAnalysis) -> list[Recommendation]:
    result = []
    for scenario in analysis.scenarios:
        groups = analysis.groups_of(scenario)
        for phase in dict.fromkeys(g.phase for g in groups):
            result.append(_recommend_phase(scenario, phase,
                                           [g for g in groups if g.phase == phase],
                                           analysis.limits))
    return result


def _faster(challenger: Group, default: Group) -> bool:
    """Lower p95 by more than THRESHOLD, with the whole 95% interval below the default's."""
    a, b = challenger.estimate("p95"), default.estimate("p95")
    if not (a.known and b.known):
        return False
    return a.value < b.value * (1.0 - THRESHOLD) and a.high < b.low


def _pick(candidates: list[Group]) -> tuple[Group, Group]:
    """(default, choice): the first candidate, unless another is faster (see _faster)."""
    default = candidates[0]
    faster = [g for g in candidates[1:] if _faster(g, default)]
    choice = min(faster, key=lambda g: (g.total.p95, _endpoint_rank(g.endpoint))) \
        if faster else default
    return default, choice


def _unstarted(g: Group) -> str:
    if not g.not_started:
        return "left none unstarted"
    return (f"left only {g.not_started:,} arrival(s) unstarted, due in the last "
            f"{END_GRACE_S:g} s of the load")


def _p95_text(g: Group) -> str:
    e = g.estimate("p95")
    return f"{_ms(e.value)} (95% interval {_ms(e.low)} to {_ms(e.high)})"


def _recommend_phase(scenario: str, phase: str, groups: list[Group],
                     limits: Mapping[str, int]) -> Recommendation:
    workload = workload_of(phase, groups)
    guide = GUIDE[workload]
    sentences = [GUIDE_TEXT[workload]]
    measured = "; ".join(
        f"{g.endpoint}: p95 {_p95_text(g)}, {_pct(g.error_rate)} failed"
        + (f" ({', '.join(g.errors)})" if g.errors else "")
        + (f", {_pct(g.not_started_rate)} not started" if g.not_started else "")
        for g in groups)
    sentences.append(f"Measured (total time of successful requests; rates of scheduled "
                     f"arrivals): {measured}.")
    hits_of = {g.endpoint: limit_hits(g, limits) for g in groups}
    why_not = {}
    for g in groups:
        reason = ineligible_reason(g, hits_of[g.endpoint])
        if reason is not None:
            why_not[g.endpoint] = reason
    eligible = [g for g in groups if g.endpoint not in why_not]
    in_guide = sorted((g for g in eligible if g.endpoint in guide),
                      key=lambda g: guide.index(g.endpoint))
    others = sorted((g for g in eligible if g.endpoint not in guide),
                    key=lambda g: _endpoint_rank(g.endpoint))
    threshold = f"{100 * THRESHOLD:.0f}%"
    default: Group | None = None
    choice: Group | None = None
    if in_guide:
        default, choice = _pick(in_guide + others)
        # the guide's endpoints before the one that stands, and why they could not
        skipped = "; ".join(why_not[ep] for ep in guide[:guide.index(default.endpoint)]
                            if ep in why_not)
        if choice is default:
            stands = (f"failed {_pct(default.error_rate)} of {default.scheduled:,} arrivals "
                      f"and {_unstarted(default)}; no other endpoint was faster by more than "
                      f"{threshold} outside the 95% intervals, so the guide's choice stands")
            reason = (f"{skipped}, so the guide's next choice is {default.endpoint}: it {stands}"
                      if skipped else f"{default.endpoint} {stands}")
        else:
            gain = 1.0 - choice.total.p95 / default.total.p95
            reason = (f"{choice.endpoint} was {100 * gain:.0f}% faster than the guide's choice "
                      f"{default.endpoint} at p95 ({_p95_text(choice)} against "
                      f"{_p95_text(default)}): more than the {threshold} threshold, outside the "
                      "95% intervals")
    elif others:
        default, choice = _pick(others)
        tried = [ep for ep in guide if ep in why_not]
        lead = "; ".join(why_not[ep] for ep in tried) if tried \
            else f"the guide's endpoints ({', '.join(guide)}) were not measured"
        reason = (f"{lead}; {choice.endpoint} served the load with "
                  f"{_pct(choice.error_rate)} failed and was the best eligible endpoint")
    else:
        reason = "no endpoint was eligible: " + "; ".join(why_not.values())
    as_guide = choice is not None and choice is default and choice.endpoint in guide
    if choice is None:
        sentences.append(f"No recommendation: {reason}. The limits below have to move before "
                         "any connection method is one.")
    else:
        label = LABELS.get(choice.endpoint, choice.endpoint)
        advice = ", as the guide advises" if as_guide else ""
        sentences.append(f"Use {choice.endpoint} ({label}){advice}: {reason}.")
        shared = next((g for g in eligible if g.endpoint == "transaction"), None)
        if choice.endpoint == "dedicated" and shared is not None:
            sentences.append("The dedicated pooler needs a paid tier; without it use "
                             f"transaction (shared pooler): p95 {_p95_text(shared)}.")
        if workload == "serverless" and choice.endpoint in ("direct", "session"):
            sentences.append(f"{choice.endpoint} keeps one Postgres backend per running "
                             "invocation: a larger spike runs into max_connections, where a "
                             "transaction pooler's backends stay at the pool size.")
        if workload == "persistent" and choice.endpoint in ("transaction", "dedicated"):
            sentences.append("Transaction mode gives up session state and prepared statements; "
                             "it pays off when servers together want more connections than "
                             "Postgres has.")
    hits = [hit for g in groups for hit in hits_of[g.endpoint]]
    if hits:
        names = sorted({f"{h.limit} on {h.endpoint}" for h in hits})
        sentences.append(f"Limits reached: {'; '.join(names)}.")
    else:
        sentences.append("No documented limit was reached.")
    return Recommendation(scenario, phase, workload, guide,
                          choice.endpoint if choice else None,
                          bool(choice and choice.endpoint in guide), sentences, hits,
                          reason=reason, threshold=THRESHOLD,
                          default=default.endpoint if default else None, ineligible=why_not)


# -- warnings ----------------------------------------------------------------------------------


def _segment_label(s: Mapping[str, Any], repeats: int) -> str:
    label = f"{s.get('scenario', '?')} -> {s.get('endpoint', '?')}"
    if repeats > 1 and isinstance(s.get("repeat"), int):
        label += f" (repeat {s['repeat']})"
    return label


def distributed_text(m: Mapping[str, Any]) -> str | None:
    """Where a distributed run's load came from (`lab run --master-bind`); None otherwise."""
    dist = m.get("distributed")
    if not isinstance(dist, dict):
        return None
    segments = [s for s in m.get("segments") or [] if isinstance(s, dict)]
    expected = dist.get("expect_workers")
    hosts = sorted({str(w.get("host")) for s in segments
                    for w in (s.get("workers") or {}).get("joined") or [] if isinstance(w, dict)})
    plural = "" if expected == 1 else "s"
    return (f"The load came from {expected} worker{plural} (lab worker, Locust's distributed "
            f"mode: {', '.join(hosts) or 'none joined'}) through a master at "
            f"{dist.get('master_bind')}" + (" over TLS" if dist.get("tls") else "")
            + "; each generated its share of the seeded schedule.")


def _distributed_warnings(m: Mapping[str, Any], segments: list[dict[str, Any]],
                          repeats: int) -> list[str]:
    """Every worker of a distributed run that did not finish a segment or never joined it."""
    if not isinstance(m.get("distributed"), dict):
        return []
    out = []
    for s in segments:
        info = s.get("workers")
        if not isinstance(info, dict):
            continue
        label = _segment_label(s, repeats)
        for w in info.get("joined") or []:
            if not isinstance(w, dict) or w.get("finished"):
                continue
            when = w.get("last_file_at")
            said = (f" (its last at {dt.datetime.fromtimestamp(when, dt.UTC):%H:%M:%S} UTC)"
                    if isinstance(when, float | int) else "")
            out.append(f"Worker {w.get('index')} ({w.get('host')}) did not finish {label}: it "
                       f"went missing after sending {w.get('chunks', 0)} sample chunk(s){said}; "
                       "its share of the arrivals after its last chunk is not in the samples.")
        if info.get("never_joined"):
            out.append(f"{info['never_joined']} of {info.get('expected')} workers never joined "
                       f"{label}, so it did not start.")
    return out


def warnings_of(a: RunAnalysis) -> list[str]:
    """What a reader must know before trusting the numbers, most serious first."""
    m = a.manifest
    out = []
    if m.get("interrupted"):
        out.append("The run was interrupted (Ctrl-C or a failure): its last segment is cut "
                   "short and the segments after it never ran.")
    host = m.get("host") if isinstance(m.get("host"), dict) else {}
    noise = host.get("noise") if isinstance(host.get("noise"), dict) else {}
    cores = noise.get("cores") or host.get("cores")
    segments = [s for s in m.get("segments") or [] if isinstance(s, dict)]
    out += _distributed_warnings(m, segments, a.repeats)
    if isinstance(cores, int) and cores > 0:
        limit = NOISY_LOAD_PER_CORE * cores
        busy = []
        for s in segments:
            load = (s.get("noise") or {}).get("load_avg") if isinstance(s.get("noise"),
                                                                        dict) else None
            if isinstance(load, list) and load and isinstance(load[0], int | float) \
                    and load[0] > limit:
                busy.append((float(load[0]), s))
        if busy:
            worst, seg = max(busy, key=lambda x: x[0])
            out.append(f"The machine was busy: a load average above {limit:.1f} "
                       f"({NOISY_LOAD_PER_CORE:g} x {cores} cores) before {len(busy)} of "
                       f"{len(segments)} segments (the highest, {worst:.1f}, before "
                       f"{_segment_label(seg, a.repeats)}); latency there includes other work.")
        else:
            start = noise.get("load_avg_start")
            if isinstance(start, list) and start and isinstance(start[0], int | float) \
                    and start[0] > limit:
                out.append(f"The machine was busy when the run began: load average "
                           f"{start[0]:.1f} on {cores} cores.")
    labs = [x for x in noise.get("other_labs") or [] if isinstance(x, str)]
    containers = [x for x in noise.get("other_containers") or [] if isinstance(x, str)]
    if labs or containers:
        said = []
        if labs:
            said.append(f"other pooler-lab lab(s) ({', '.join(labs)})")
        if containers:
            shown = ", ".join(containers[:5]) + (" ..." if len(containers) > 5 else "")
            said.append(f"{len(containers)} other container(s) ({shown})")
        out.append(f"Other work shared the machine: {' and '.join(said)} were running.")
    cpu = noise.get("locust_cpu_warnings")
    if not isinstance(cpu, int):
        cpu = sum((s.get("noise") or {}).get("locust_cpu_warnings", 0) or 0
                  for s in segments if isinstance(s.get("noise"), dict))
    if cpu:
        out.append(f"Locust warned {cpu} time(s) that its CPU usage was above 90%: the load "
                   "generator itself was saturated, so its timings include its own queueing.")
    for o in a.outages:
        rep = f", repeat {o.repeat}" if a.repeats > 1 else ""
        out.append(f"Outage ({o.scenario} on {o.endpoint}{rep}): {o.describe()}; failures there "
                   "count as connection refused or lost, never as pool size.")
    for g in a.groups:
        if g.not_started:
            out.append(f"Not started ({g.scenario} on {g.endpoint}"
                       + (f", {g.phase}" if g.phase != workload_of(g.phase, [g]) else "")
                       + f"): {_share(g.not_started, g.scheduled)} never started"
                       + (f", all due in the last {END_GRACE_S:g} s of the load"
                          if g.not_started == g.not_started_at_end else "") + ".")
    if a.repeats < 2:
        out.append("One repeat only: the intervals come from windows of one run, so they "
                   "show how the run varied within itself, not from run to run "
                   "(--repeat N gives both).")
    return out


# -- two runs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delta:
    """One metric of one group in both runs: ``a`` this run, ``b`` the --compare run."""

    key: Key
    metric: str
    a: float | None
    b: float | None
    a_ci: Estimate | None = None
    b_ci: Estimate | None = None

    @property
    def change(self) -> float | None:
        if self.a is None or self.b is None or math.isnan(self.a) or math.isnan(self.b):
            return None
        return self.a - self.b

    @property
    def ratio(self) -> float | None:
        if self.change is None or not self.b:
            return None
        return self.a / self.b

    @property
    def beyond_intervals(self) -> bool | None:
        """The two 95% intervals do not overlap (None when either is unknown)."""
        if self.a_ci is None or self.b_ci is None or not (self.a_ci.known and self.b_ci.known):
            return None
        return self.a_ci.low > self.b_ci.high or self.a_ci.high < self.b_ci.low


@dataclass
class Comparison:
    a: RunAnalysis
    b: RunAnalysis
    deltas: list[Delta]
    settings: list[tuple[str, Any, Any]]  # settings that differ, by meaning: (key, a, b)
    only_a: list[Key]
    only_b: list[Key]
    warnings: list[str] = field(default_factory=list)  # what makes the runs unlike, first


# rates only: counts depend on how long each run was
DELTA_METRICS = ("requests/s", "error rate", "not-started rate", "p50 total ms",
                 "p95 total ms", "p99 total ms")
_DELTA_CI = {"requests/s": "rps", "error rate": "error_rate",
             "not-started rate": "not_started_rate", "p50 total ms": "p50",
             "p95 total ms": "p95", "p99 total ms": "p99"}


def _metric(g: Group, metric: str) -> float | None:
    return {
        "requests/s": g.rps, "error rate": g.error_rate, "not-started rate": g.not_started_rate,
        "p50 total ms": g.total.p50, "p95 total ms": g.total.p95, "p99 total ms": g.total.p99,
    }[metric]


SETTING_SECTIONS = ("scenario", "load", "lab", "components", "git", "lab_version")


def _flatten(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def legs_of(manifest: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per scenario: file, params, users, spawn_rate, whether the manifest keys them by scenario
    (a bench run, several legs) or not (one scenario)."""
    legs = manifest.get("legs")
    if isinstance(legs, list) and legs and all(isinstance(x, dict) for x in legs):
        return {str(x.get("scenario")): {"file": x.get("file"), "params": x.get("params") or {},
                                         "users": x.get("users"),
                                         "spawn_rate": x.get("spawn_rate")} for x in legs}
    scenario = manifest.get("scenario") if isinstance(manifest.get("scenario"), dict) else {}
    load = manifest.get("load") if isinstance(manifest.get("load"), dict) else {}
    names = [n.strip() for n in str(scenario.get("name") or "").split(" + ") if n.strip()]
    files = [f.strip() for f in str(scenario.get("file") or "").split(", ")]
    params = scenario.get("params") if isinstance(scenario.get("params"), dict) else {}
    if len(names) <= 1:
        name = names[0] if names else "?"
        return {name: {"file": scenario.get("file"), "params": params,
                       "users": load.get("users"), "spawn_rate": load.get("spawn_rate")}}

    def keyed(value: Any, name: str) -> Any:
        return value.get(name) if isinstance(value, dict) else value

    return {name: {"file": files[i] if i < len(files) else None,
                   "params": keyed(params, name) or {}, "users": keyed(load.get("users"), name),
                   "spawn_rate": keyed(load.get("spawn_rate"), name)}
            for i, name in enumerate(names)}


def settings_of(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest's settings flattened by meaning: a scenario's parameters are
    ``scenario.params.<scenario>.<name>`` and its users ``load.users.<scenario>`` whether the
    run had one leg or several."""
    flat: dict[str, Any] = {}
    for name, leg in legs_of(manifest).items():
        for k, v in (leg["params"] or {}).items():
            flat[f"scenario.params.{name}.{k}"] = v
        flat[f"scenario.file.{name}"] = leg["file"]
        flat[f"load.users.{name}"] = leg["users"]
        flat[f"load.spawn_rate.{name}"] = leg["spawn_rate"]
    for section in SETTING_SECTIONS:
        value = manifest.get(section)
        if section == "scenario" and isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in ("name", "file", "params")}
        elif section == "load" and isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in ("users", "spawn_rate")}
        flat.update(_flatten({section: value}, ""))
    return flat


def _scenario_of_key(key: str, names: Iterable[str]) -> str | None:
    for prefix in ("scenario.params.", "scenario.file.", "load.users.", "load.spawn_rate."):
        if key.startswith(prefix):
            rest = key[len(prefix):]
            return next((n for n in names if rest == n or rest.startswith(n + ".")), None)
    return None


def _describe_value(value: Any) -> str:
    if value is None:
        return "unknown"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int) and value > 2**30:
        return f"{value / 2**30:.1f} GiB"
    return str(value)


def _comparison_warnings(a: RunAnalysis, b: RunAnalysis) -> list[str]:
    ma, mb = a.manifest, b.manifest
    load_a = ma.get("load") if isinstance(ma.get("load"), dict) else {}
    load_b = mb.get("load") if isinstance(mb.get("load"), dict) else {}
    out = []
    da, db = load_a.get("duration_s"), load_b.get("duration_s")
    if da != db:
        out.append(f"Durations differ: A ran {_describe_value(da)} s per segment, B "
                   f"{_describe_value(db)} s. Counts are not comparable; compare the rates "
                   "(requests/s, error and not-started rates, percentiles).")
    lab_a = ma.get("lab") if isinstance(ma.get("lab"), dict) else {}
    lab_b = mb.get("lab") if isinstance(mb.get("lab"), dict) else {}
    keys = ("tier", "max_connections", "pool_size", "max_client_conn", "pool_sharing")
    differ = [k for k in keys if lab_a.get(k) != lab_b.get(k)]
    if differ:
        out.append("Tiers or limits differ: " + ", ".join(
            f"{k} A {_describe_value(lab_a.get(k))}, B {_describe_value(lab_b.get(k))}"
            for k in differ) + ".")
    host_a = ma.get("host") if isinstance(ma.get("host"), dict) else {}
    host_b = mb.get("host") if isinstance(mb.get("host"), dict) else {}
    differ = [k for k in ("cores", "memory_bytes", "kernel") if host_a.get(k) != host_b.get(k)]
    if differ:
        names = {"cores": "cores", "memory_bytes": "memory", "kernel": "kernel"}
        out.append("The machines differ: " + ", ".join(
            f"{names[k]} A {_describe_value(host_a.get(k))}, B {_describe_value(host_b.get(k))}"
            for k in differ) + ".")
    for what, verb, sa, sb, key in (
            ("scenarios", "ran", set(a.scenarios), set(b.scenarios), None),
            ("endpoints", "measured", {g.endpoint for g in a.groups},
             {g.endpoint for g in b.groups}, _endpoint_rank)):
        if sa != sb:
            parts = [f"only {side} {verb} {', '.join(sorted(only, key=key))}"
                     for side, only in (("A", sa - sb), ("B", sb - sa)) if only]
            out.append(f"The {what} differ: {'; '.join(parts)}.")
    if a.repeats != b.repeats:
        out.append(f"Repeats differ: A ran each segment {a.repeats} time(s), B {b.repeats}: "
                   "their intervals are not equally wide.")
    for run, name in ((a, "A"), (b, "B")):
        if run.manifest.get("interrupted"):
            out.append(f"Run {name} was interrupted: it has fewer segments than it planned.")
    return out


def compare(a: RunAnalysis, b: RunAnalysis) -> Comparison:
    keys_b = {g.key for g in b.groups}
    deltas = []
    for g in a.groups:
        other = b.group(g.key)
        if other is None:
            continue
        deltas += [Delta(g.key, m, _metric(g, m), _metric(other, m),
                         g.ci.get(_DELTA_CI[m]), other.ci.get(_DELTA_CI[m]))
                   for m in DELTA_METRICS]
    flat_a, flat_b = settings_of(a.manifest), settings_of(b.manifest)
    both = set(legs_of(a.manifest)) & set(legs_of(b.manifest))
    names = set(legs_of(a.manifest)) | set(legs_of(b.manifest))
    settings = []
    for k in dict.fromkeys([*flat_a, *flat_b]):
        scenario = _scenario_of_key(k, sorted(names, key=len, reverse=True))
        if scenario is not None and scenario not in both:
            continue  # a scenario only one run has: the warnings say so
        if flat_a.get(k) != flat_b.get(k):
            settings.append((k, flat_a.get(k), flat_b.get(k)))
    return Comparison(a, b, deltas, settings,
                      only_a=[g.key for g in a.groups if g.key not in keys_b],
                      only_b=[g.key for g in b.groups if a.group(g.key) is None],
                      warnings=_comparison_warnings(a, b))


# -- JSON ----------------------------------------------------------------------------------------


def _json_number(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    return value


def to_json(analysis: RunAnalysis) -> dict[str, Any]:
    """The analysis for scripts (`lab report RUN_DIR --json`); JSON-safe (NaN is null)."""
    segments = []
    for g in analysis.groups:
        segments.append({
            "scenario": g.scenario, "phase": g.phase, "endpoint": g.endpoint,
            "repeats": g.repeats, "scheduled": g.scheduled, "succeeded": g.ok,
            "failed": dict(g.errors), "not_started": g.not_started,
            "reclassified": g.reclassified,
            "requests_per_s": g.estimate("rps").to_json(),
            "error_rate": g.estimate("error_rate").to_json(),
            "not_started_rate": g.estimate("not_started_rate").to_json(),
            "latency_ms": {p: g.estimate(p).to_json() for p in ("p50", "p95", "p99")},
            "peak_backends": g.peak_backends, "peak_auth_backends": g.peak_auth_backends,
            "peak_waiting": g.peak_waiting,
            "faults": [f.to_json() for f in g.faults],
        })
    return {
        "run_id": analysis.run_id,
        "segments": segments,
        "outages": [{"scenario": o.scenario, "endpoint": o.endpoint, "repeat": o.repeat,
                     "target": o.target, "start_s": round(o.start_s, 3),
                     "end_s": None if o.end_s is None else round(o.end_s, 3),
                     "description": o.describe()} for o in analysis.outages],
        "recommendations": [{"scenario": r.scenario, "phase": r.phase, "workload": r.workload,
                             "endpoint": r.choice, "guide": list(r.guide), "agrees": r.agrees,
                             "reason": r.reason, "threshold": r.threshold}
                            for r in analysis.recommendations],
        "warnings": list(analysis.warnings),
        "ci_method": analysis.ci_method,
    }
