"""Stage 6 of the pipeline: the numbers of a run directory, and what they say.

``analyze(run_dir)`` reads a run directory (docs/formats.md: manifest/1, requests/1,
connections/1) and returns a ``RunAnalysis``: for each (scenario, phase, endpoint) the request
count, requests/s, p50/p95/p99/max of connect, query and total time, errors by class, peak
Postgres backends and peak waiting clients; one-second windows for the time plots; latency
distributions; the connection samples as arrays (failed samples are NaN: gaps, never zeros);
and the recommendation of ``recommend`` (Supabase's decision guide applied to what was
measured). ``compare(a, b)`` lines two analyses up.

Definitions (the report states them too):

* latency percentiles are over successful requests only (a refused connection is fast and
  would flatter the numbers; failures are counted by class instead). Percentiles are linear
  interpolation between order statistics, as ``numpy.percentile``'s default;
* a group's time span runs from its first intended start to its last end; requests/s is the
  request count over that span;
* one-second windows bin requests by intended start, counted from the start of the segment the
  group ran in, so endpoints run one after another share one time axis and the arrival
  schedule's spike windows line up;
* peaks come from the connection samples taken within the group's time span.

Pure: no plotting, no printing, no click. Large runs stay in numpy arrays from pyarrow.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterable, Mapping
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
                 "authentication", "network", "other")
ENDPOINT_ORDER = ("direct", "session", "transaction", "dedicated", "target")
# An endpoint "serves" a workload when at most this share of its requests failed.
HEALTHY_ERROR_RATE = 0.01
# Postgres keeps superuser_reserved_connections (3 by default) out of clients' reach.
RESERVED_CONNECTIONS = 3
COLUMNS = ("scenario", "phase", "endpoint", "intended_start", "start", "connect_ms", "query_ms",
           "service_ms", "total_ms", "ok", "error_class", "sqlstate", "message")

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


@dataclass
class Windows:
    """One-second windows of a group; ``t`` is each window's start, seconds after ``t0``."""

    t: np.ndarray
    requests: np.ndarray
    ok: np.ndarray
    errors: dict[str, np.ndarray]
    p50: np.ndarray  # total_ms of successful requests; NaN where a window has none
    p95: np.ndarray
    p99: np.ndarray


@dataclass
class Group:
    """Everything measured for one (scenario, phase, endpoint)."""

    scenario: str
    phase: str
    endpoint: str
    requests: int
    ok: int
    first: float  # earliest intended start (Unix s)
    last: float  # latest end (Unix s)
    connect: Stats
    query: Stats
    total: Stats
    errors: dict[str, int]  # class -> count, classes with at least one error
    t0: float  # start of the segment the group ran in: the origin of its time axis
    spikes: list[tuple[float, float]]  # spike windows, seconds after t0
    windows: Windows
    distribution: dict[str, tuple[np.ndarray, np.ndarray]]  # metric -> (quantiles, ms)
    peak_backends: int | None = None
    peak_clients: int | None = None
    peak_waiting: int | None = None

    @property
    def key(self) -> Key:
        return (self.scenario, self.phase, self.endpoint)

    @property
    def duration_s(self) -> float:
        return max(self.last - self.first, 0.0)

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else math.nan

    @property
    def failed(self) -> int:
        return self.requests - self.ok

    @property
    def error_rate(self) -> float:
        return self.failed / self.requests if self.requests else 0.0

    def error_rate_of(self, cls: str) -> float:
        return self.errors.get(cls, 0) / self.requests if self.requests else 0.0


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
        if name not in self.values:
            return None
        inside = (self.t >= first) & (self.t <= last) & self.ok
        values = self.values[name][inside]
        values = values[~np.isnan(values)]
        return int(values.max()) if len(values) else None


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
    choice: str | None  # the endpoint this run recommends; None when nothing served it
    agrees: bool  # the choice is one of the guide's
    sentences: list[str]
    limits: list[LimitHit]


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
        names = ("backends", "direct", "shared", "dedicated", "local")
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
            values["maxwait_s"][i] = _num(pools, "maxwait_s")
        else:
            values["backends"][i] = _num(r, "total")
            origins = r.get("by_origin") or {}
            for origin in ("direct", "shared", "dedicated", "local"):
                values[origin][i] = _num(origins, origin)
    return Series(target, kind, t, ok, values, limits, failures)


def _num(mapping: Mapping[str, Any], key: str) -> float:
    value = mapping.get(key)
    return float(value) if isinstance(value, int | float) else 0.0


# -- the analysis ------------------------------------------------------------------------------


def analyze(run_dir: Path | str) -> RunAnalysis:
    """Every number of the report, from a run directory (ReportError when it is unusable)."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    segments = _segments(manifest)
    # no reference to the table is kept here: _groups drops it once it has the arrays it needs
    groups, samples = _groups(read_requests(run_dir), segments)
    pa.default_memory_pool().release_unused()
    connections, skipped = read_connections(run_dir)
    limits = _limits(manifest, connections)
    for g in groups:
        _peaks(g, connections)
    analysis = RunAnalysis(run_dir=run_dir, manifest=manifest, groups=groups,
                           connections=connections, limits=limits, error_samples=samples,
                           recommendations=[], skipped_lines=skipped)
    analysis.recommendations = recommend(analysis)
    return analysis


def _limits(manifest: Mapping[str, Any], connections: Mapping[str, Series]) -> dict[str, int]:
    """Limits from the samples (what the sampler saw configured), else the lab's settings."""
    limits: dict[str, int] = {}
    lab = manifest.get("lab") or {}
    for key in ("max_connections", "pool_size", "max_client_conn"):
        if isinstance(lab.get(key), int):
            limits[key] = lab[key]
    for series in connections.values():
        limits.update(series.limits)
    return limits


@dataclass(frozen=True)
class _Segment:
    endpoint: str
    start: float
    end: float
    spikes: tuple[tuple[float, float], ...]


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


def _segments(manifest: Mapping[str, Any]) -> list[_Segment]:
    raw = [s for s in manifest.get("segments") or [] if isinstance(s, dict)]
    result = []
    for i, s in enumerate(raw):
        start = _time(s.get("started_at"))
        if start is None:
            continue
        end = _time(s.get("ended_at"))
        if end is None:  # still running when the manifest was last written
            end = _time(raw[i + 1].get("started_at")) if i + 1 < len(raw) else None
        spikes = tuple((float(a), float(b)) for a, b in (s.get("spikes") or [])
                       if isinstance(a, int | float) and isinstance(b, int | float))
        result.append(_Segment(str(s.get("endpoint", "")), start,
                               end if end is not None else math.inf, spikes))
    return result


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


def _groups(table: pa.Table, segments: list[_Segment]) -> tuple[list[Group], list[ErrorSample]]:
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
    del table

    code = ((scen.astype(np.int64) * (len(phase_names) + 1) + phase)
            * (len(endp_names) + 1) + endp)
    uniq, inverse = np.unique(code, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.concatenate(([0], np.cumsum(np.bincount(inverse, minlength=len(uniq)))))
    groups: list[Group] = []
    samples: list[ErrorSample] = []
    for gi in range(len(uniq)):
        idx = order[bounds[gi]:bounds[gi + 1]]
        first_row = idx[0]
        key = (scen_names[scen[first_row]], phase_names[phase[first_row]],
               endp_names[endp[first_row]])
        g_ok = ok[idx]
        g_intended = intended[idx]
        ends = start[idx] + service[idx] / 1000.0
        first = float(np.nanmin(g_intended))
        last = float(np.nanmax(np.where(np.isnan(ends), g_intended, ends)))
        g_err = errc[idx]
        errors: dict[str, int] = {}
        failed = ~g_ok
        counts = np.bincount(g_err[failed & (g_err >= 0)], minlength=len(err_names))
        for ci, n in enumerate(counts):
            if n:
                errors[err_names[ci]] = int(n)
        unclassified = int((failed & (g_err < 0)).sum())
        if unclassified:
            errors["other"] = errors.get("other", 0) + unclassified
        t0, spikes = _origin(key[2], float(np.nanmedian(g_intended)), first, segments)
        ok_idx = idx[g_ok]
        sorted_values = {name: _sorted_finite(column[ok_idx])
                         for name, column in (("connect", connect), ("query", query),
                                              ("total", total))}
        groups.append(Group(
            scenario=key[0], phase=key[1], endpoint=key[2], requests=len(idx),
            ok=int(g_ok.sum()), first=first, last=last,
            connect=Stats.of_sorted(sorted_values["connect"]),
            query=Stats.of_sorted(sorted_values["query"]),
            total=Stats.of_sorted(sorted_values["total"]),
            errors={c: errors[c] for c in _class_order(errors)},
            t0=t0, spikes=spikes,
            windows=_windows(g_intended - t0, g_ok, total[idx], g_err, err_names),
            distribution={name: _distribution(values) for name, values in sorted_values.items()},
        ))
        samples += _error_samples(key, failed, g_err, err_names, sqls[idx], sql_names,
                                  msgs[idx], msg_names)
    # scenarios and their phases in the order they ran, then the documented endpoint order
    first_seen: dict[tuple[str, ...], float] = {}
    for g in groups:
        for key in ((g.scenario,), (g.scenario, g.phase)):
            first_seen[key] = min(first_seen.get(key, math.inf), g.first)
    groups.sort(key=lambda g: (first_seen[(g.scenario,)], g.scenario,
                               first_seen[(g.scenario, g.phase)], g.phase,
                               _endpoint_rank(g.endpoint)))
    return groups, samples


def _class_order(errors: Mapping[str, int]) -> list[str]:
    return [c for c in ERROR_CLASSES if c in errors] + sorted(set(errors) - set(ERROR_CLASSES))


def _origin(endpoint: str, median: float, first: float,
            segments: list[_Segment]) -> tuple[float, list[tuple[float, float]]]:
    """The segment a group ran in (its own endpoint's first, else any) -> (t0, spikes)."""
    containing = [s for s in segments if s.start <= median <= s.end]
    segment = next((s for s in containing if s.endpoint == endpoint),
                   containing[0] if containing else None)
    if segment is None:
        return first, []
    return segment.start, [(a - segment.start, b - segment.start) for a, b in segment.spikes]


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


def _windows(rel: np.ndarray, ok: np.ndarray, total: np.ndarray, err: np.ndarray,
             err_names: list[str]) -> Windows:
    bins = np.floor(rel).astype(np.int64)
    low = int(bins.min())
    bins -= low
    nbins = int(bins.max()) + 1
    requests = np.bincount(bins, minlength=nbins)
    ok_count = np.bincount(bins[ok], minlength=nbins)
    errors = {}
    failed = ~ok
    for ci in np.unique(err[failed]):
        name = err_names[ci] if ci >= 0 else "other"
        counts = np.bincount(bins[failed & (err == ci)], minlength=nbins)
        errors[name] = errors.get(name, 0) + counts
    errors = {c: errors[c] for c in _class_order(errors)}
    good = ok & np.isfinite(total)
    p50, p95, p99 = _binned_percentiles(bins[good], total[good], nbins, PERCENTILES)
    return Windows(t=np.arange(nbins, dtype=np.float64) + low, requests=requests, ok=ok_count,
                   errors=errors, p50=p50, p95=p95, p99=p99)


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


def _error_samples(key: Key, failed: np.ndarray, err: np.ndarray, err_names: list[str],
                   sqls: np.ndarray, sql_names: list[str], msgs: np.ndarray,
                   msg_names: list[str]) -> list[ErrorSample]:
    result = []
    for ci in np.unique(err[failed]):
        rows = failed & (err == ci)
        m = msgs[rows]
        known = m[m >= 0]
        message = msg_names[int(np.bincount(known).argmax())] if len(known) else None
        s = sqls[rows]
        known_s = s[s >= 0]
        sqlstate = sql_names[int(np.bincount(known_s).argmax())] if len(known_s) else None
        result.append(ErrorSample(key, err_names[ci] if ci >= 0 else "other", int(rows.sum()),
                                  sqlstate, message))
    return result


def _peaks(group: Group, connections: Mapping[str, Series]) -> None:
    postgres = connections.get("postgres")
    if postgres is not None:
        group.peak_backends = postgres.peak("backends", group.first, group.last)
    bouncer = connections.get(group.endpoint)
    if bouncer is not None and bouncer.kind == "pgbouncer":
        group.peak_waiting = bouncer.peak("waiting", group.first, group.last)
        group.peak_clients = bouncer.peak("clients", group.first, group.last)
    elif postgres is not None and group.endpoint == "direct":
        group.peak_clients = postgres.peak("direct", group.first, group.last)


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


def _ms(value: float) -> str:
    if value is None or math.isnan(value):
        return "-"
    if value >= 100:
        return f"{value:,.0f} ms"
    if value >= 10:
        return f"{value:.1f} ms"
    return f"{value:.2f} ms"


def _pct(value: float) -> str:
    return f"{100 * value:.2f}%" if value < 0.1 else f"{100 * value:.1f}%"


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
        share = _pct(count / group.requests)
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
            hits.append(LimitHit(ep, "pooler max_client_conn (max pooler clients)", max_client,
                                 f"{count:,} requests ({share}) rejected; {clients}",
                                 "fewer concurrent clients, or a tier with more pooler clients; "
                                 "session mode allows only pool_size clients", cls, count))
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
        elif cls == "network":
            hits.append(LimitHit(ep, "a pooler or host went away", None,
                                 f"{count:,} requests ({share}) lost their connection",
                                 "see the gaps in the connection samples; check `lab status` "
                                 "and `lab logs`", cls, count))
    classes = set(group.errors)
    if ("too_many_clients" not in classes and max_conn is not None
            and group.peak_backends is not None
            and group.peak_backends >= max_conn - RESERVED_CONNECTIONS):
        hits.append(LimitHit(ep, "Postgres max_connections", max_conn,
                             f"{backends}: every slot a client may use was taken",
                             "more concurrency will be refused: use a pooler or smaller pools"))
    if "pool_timeout" not in classes and group.peak_waiting:
        hits.append(LimitHit(ep, "pool size", pool,
                             f"up to {group.peak_waiting} clients queued for a server connection "
                             f"(connect p99 {_ms(group.connect.p99)})",
                             "queueing adds latency before any error: shorter transactions, "
                             "or a larger pool within max_connections"))
    return hits


def recommend(analysis: RunAnalysis) -> list[Recommendation]:
    result = []
    for scenario in analysis.scenarios:
        groups = analysis.groups_of(scenario)
        for phase in dict.fromkeys(g.phase for g in groups):
            result.append(_recommend_phase(scenario, phase,
                                           [g for g in groups if g.phase == phase],
                                           analysis.limits))
    return result


def _recommend_phase(scenario: str, phase: str, groups: list[Group],
                     limits: Mapping[str, int]) -> Recommendation:
    workload = workload_of(phase, groups)
    guide = GUIDE[workload]
    sentences = [GUIDE_TEXT[workload]]
    measured = "; ".join(
        f"{g.endpoint}: p95 {_ms(g.total.p95)}, {_pct(g.error_rate)} errors"
        + (f" ({', '.join(g.errors)})" if g.errors else "") for g in groups)
    sentences.append(f"Measured (total time, successful requests): {measured}.")
    healthy = [g for g in groups if g.error_rate <= HEALTHY_ERROR_RATE and g.total.n]
    by_p95 = sorted(healthy, key=lambda g: g.total.p95)
    guided = [g for g in by_p95 if g.endpoint in guide]
    choice: Group | None = guided[0] if guided else (by_p95[0] if by_p95 else None)
    if choice is None:
        sentences.append("No endpoint served this workload with at most "
                         f"{_pct(HEALTHY_ERROR_RATE)} errors: the limits below have to move "
                         "before any connection method is a recommendation.")
    else:
        label = LABELS.get(choice.endpoint, choice.endpoint)
        if choice.endpoint in guide:
            sentences.append(f"Use {choice.endpoint} ({label}): it served this workload "
                             f"with {_pct(choice.error_rate)} errors at p95 "
                             f"{_ms(choice.total.p95)}, as the guide advises.")
            shared = next((g for g in healthy if g.endpoint == "transaction"), None)
            if choice.endpoint == "dedicated" and shared is not None:
                sentences.append("The dedicated pooler needs a paid tier; without it use "
                                 f"transaction (shared pooler): p95 {_ms(shared.total.p95)}, "
                                 f"{_pct(shared.error_rate)} errors.")
        else:
            tried = [g.endpoint for g in groups if g.endpoint in guide]
            why = (f"the guide's choice{'s' if len(tried) > 1 else ''} "
                   f"({', '.join(tried)}) failed more than {_pct(HEALTHY_ERROR_RATE)} of "
                   "requests" if tried else "the guide's endpoints were not measured")
            sentences.append(f"Use {choice.endpoint} ({label}) for this load: {why}; "
                             f"it served it with {_pct(choice.error_rate)} errors at p95 "
                             f"{_ms(choice.total.p95)}.")
        faster = by_p95[0]
        if faster is not choice:
            sentences.append(_faster_note(workload, faster, choice, limits))
    hits = [hit for g in groups for hit in limit_hits(g, limits)]
    if hits:
        names = sorted({f"{h.limit} on {h.endpoint}" for h in hits})
        sentences.append(f"Limits reached: {'; '.join(names)}.")
    else:
        sentences.append("No documented limit was reached.")
    return Recommendation(scenario, phase, workload, guide,
                          choice.endpoint if choice else None,
                          bool(choice and choice.endpoint in guide), sentences, hits)


def _faster_note(workload: str, faster: Group, choice: Group, limits: Mapping[str, int]) -> str:
    base = (f"{faster.endpoint} had the lower p95 here ({_ms(faster.total.p95)} against "
            f"{_ms(choice.total.p95)})")
    if workload == "serverless" and faster.endpoint in ("direct", "session"):
        max_conn = limits.get("max_connections")
        peak = faster.peak_backends
        room = (f" (peak {peak} of max_connections {max_conn})"
                if peak is not None and max_conn is not None else "")
        return (f"{base}, but its backends{room} grow with every concurrent invocation, so a "
                "larger spike runs into max_connections; the transaction pooler's stay at the "
                "pool size.")
    if workload == "persistent" and faster.endpoint in ("transaction", "dedicated"):
        return (f"{base}, but transaction mode gives up session state and prepared statements; "
                "it pays off when servers together want more connections than Postgres has.")
    return f"{base}; the guide's choice is within the measured error budget."


# -- two runs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delta:
    """One metric of one group in both runs: ``a`` this run, ``b`` the --compare run."""

    key: Key
    metric: str
    a: float | None
    b: float | None

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


@dataclass
class Comparison:
    a: RunAnalysis
    b: RunAnalysis
    deltas: list[Delta]
    settings: list[tuple[str, Any, Any]]  # manifest keys that differ: (key, a, b)
    only_a: list[Key]
    only_b: list[Key]


DELTA_METRICS = ("requests/s", "p50 total ms", "p95 total ms", "p99 total ms", "error rate",
                 "peak backends", "peak waiting")


def _metric(g: Group, metric: str) -> float | None:
    return {
        "requests/s": g.rps, "p50 total ms": g.total.p50, "p95 total ms": g.total.p95,
        "p99 total ms": g.total.p99, "error rate": g.error_rate,
        "peak backends": None if g.peak_backends is None else float(g.peak_backends),
        "peak waiting": None if g.peak_waiting is None else float(g.peak_waiting),
    }[metric]


SETTING_SECTIONS = ("scenario", "load", "lab", "components", "git", "lab_version")


def _flatten(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def compare(a: RunAnalysis, b: RunAnalysis) -> Comparison:
    keys_b = {g.key for g in b.groups}
    deltas = []
    for g in a.groups:
        other = b.group(g.key)
        if other is None:
            continue
        deltas += [Delta(g.key, m, _metric(g, m), _metric(other, m)) for m in DELTA_METRICS]
    flat_a = _flatten({k: a.manifest.get(k) for k in SETTING_SECTIONS}, "")
    flat_b = _flatten({k: b.manifest.get(k) for k in SETTING_SECTIONS}, "")
    settings = [(k, flat_a.get(k), flat_b.get(k)) for k in dict.fromkeys([*flat_a, *flat_b])
                if flat_a.get(k) != flat_b.get(k)]
    return Comparison(a, b, deltas, settings,
                      only_a=[g.key for g in a.groups if g.key not in keys_b],
                      only_b=[g.key for g in b.groups if a.group(g.key) is None])
