"""The live progress line of a run: what the current segment has done so far, read from the
sample chunks and live files the Locust processes write and from the sampler's latest records
(no second poller). Updated about once a second; counts are the segment's own."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lab import clock, samples
from lab.errors import LabError
from lab.watch import frame

NOT_STARTED = "not_started"


@dataclass
class Live:
    """What the progress line shows; updated about once a second."""

    endpoint: str = ""
    scenario: str = ""
    repeat: str = ""  # "r2/3" with --repeat, else ""
    elapsed_s: float = 0.0
    duration_s: float = 0.0
    requests: int = 0  # started in this segment (succeeded + failed)
    errors: int = 0  # failed in this segment
    not_started: int = 0  # arrivals due but not started (queued now, or left at the end)
    rps: float = 0.0
    p95_ms: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    errors_by_class: dict[str, int] = field(default_factory=dict)  # this segment's
    phase: str | None = None  # "spike" or "base" for a spiky schedule, else None
    backends: int | None = None
    waiting: int | None = None
    unreachable: str | None = None  # e.g. "transaction pooler not answering for 2.1 s"
    noisy: str | None = None  # e.g. "load 3.4 on 2 cores"
    fault: str | None = None  # the injected faults in effect, e.g. "pooler killed for 3 s"
    done: bool = False

    def line(self) -> str:
        where = " ".join(x for x in (self.endpoint, self.repeat) if x)
        if self.done:
            state = f"[{where} done {self.duration_s:.0f}s]"
        else:
            elapsed = min(self.elapsed_s, self.duration_s)
            stopping = " stopping" if self.elapsed_s > self.duration_s + 0.5 else ""
            state = f"[{where} {elapsed:4.0f}/{self.duration_s:.0f}s{stopping}]"
        p95 = "-" if self.p95_ms is None else f"{self.p95_ms:.2f} ms"
        text = (f"{state} {self.rps:7.1f} req/s  p95 {p95}  errors {self.errors}  "
                f"not started {self.not_started}  backends {_dash(self.backends)}  "
                f"waiting {_dash(self.waiting)}")
        if self.fault:
            text += f"  !! FAULT: {self.fault}"
        if self.unreachable:
            text += f"  !! UNREACHABLE: {self.unreachable}"
        if self.noisy:
            text += f"  (noisy machine: {self.noisy})"
        return text


def _dash(value: int | None) -> str:
    return "-" if value is None else str(value)


TARGET_LABELS = {"postgres": "Postgres", "session": "session pooler",
                 "transaction": "transaction pooler", "dedicated": "dedicated pooler"}


def merge_sampler(live: Live, latest: dict[str, dict[str, Any]], endpoint: str,
                  now: float | None = None) -> None:
    """Backends, waiting clients and reachability of ``endpoint`` from the sampler's newest
    records. A target is unreachable when its newest sample failed or is stale."""
    now = clock.now() if now is None else now
    pg = latest.get("postgres")
    live.backends = pg.get("total") if pg and pg.get("ok") else None
    bouncer = latest.get(endpoint)
    live.waiting = bouncer["pools"]["cl_waiting"] if bouncer and bouncer.get("ok") else None
    down = []
    for name in dict.fromkeys(("postgres", endpoint)):
        record = latest.get(name)
        if record is None:
            continue
        ok, why = frame.reachable(record, now)
        if not ok:
            down.append(f"{TARGET_LABELS.get(name, name)} {why}"[:120])
    live.unreachable = "; ".join(down) or None


class SampleWatcher:
    """Reads new sample chunks as Locust writes them, for the progress line and the totals."""

    WINDOW_S = 5.0

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.seen: set[str] = set()
        # per chunk: its latest start, and its start, total_ms and ok arrays
        self.recent: list[tuple[float, Any, Any, Any]] = []
        self.requests = 0  # every row read, the whole run (not_started rows excluded)
        self.segment_requests = 0
        self.segment_errors = 0
        self.segment_not_started = 0
        self.segment_error_classes: dict[str, int] = {}

    def _read_new(self) -> None:
        """Count the new chunks' rows with Arrow and numpy, never a Python loop per row: the
        orchestrator shares the machine's cores with the load (issue "Scale")."""
        for path in sorted((self.run_dir / "requests").glob("part-*.parquet")):
            if path.name in self.seen:
                continue
            try:
                table = samples.read_chunk(path, columns=["start", "total_ms", "ok",
                                                          "error_class"])
            except Exception:  # a file mid-rename is retried at the next tick
                continue
            self.seen.add(path.name)
            classes = table.column("error_class").cast(pa.string())
            started = pc.invert(pc.fill_null(pc.equal(classes, NOT_STARTED), False))
            n_started = pc.sum(started).as_py() or 0
            self.segment_not_started += table.num_rows - n_started
            self.requests += n_started
            self.segment_requests += n_started
            table = table.filter(started)
            ok = table.column("ok").to_numpy(zero_copy_only=False).astype(bool)
            failed = pc.filter(table.column("error_class").cast(pa.string()), pa.array(~ok))
            self.segment_errors += len(failed)
            for item in pc.value_counts(failed).to_pylist() if len(failed) else []:
                key = item["values"] or "other"
                self.segment_error_classes[key] = (self.segment_error_classes.get(key, 0)
                                                   + item["counts"])
            if n_started:
                starts = table.column("start").to_numpy(zero_copy_only=False)
                self.recent.append((float(np.nanmax(starts)), starts,
                                    table.column("total_ms").to_numpy(zero_copy_only=False),
                                    ok))

    def new_segment(self) -> None:
        """Take in what the last segment wrote, then count afresh: the next endpoint's
        numbers are its own from its first tick."""
        self._read_new()
        self.recent = []
        self.segment_requests = self.segment_errors = self.segment_not_started = 0
        self.segment_error_classes = {}

    def update(self, live: Live) -> None:
        self._read_new()
        now = clock.now()
        # chunks with a start in the last WINDOW_S + 2 seconds (their latest start first)
        self.recent = [c for c in self.recent if c[0] >= now - self.WINDOW_S - 2]
        live.requests, live.errors = self.segment_requests, self.segment_errors
        live.errors_by_class = dict(self.segment_error_classes)
        live.not_started = max(self.segment_not_started, queued_now(self.run_dir))
        if self.recent:
            starts = np.concatenate([c[1] for c in self.recent])
            totals = np.concatenate([c[2] for c in self.recent])
            oks = np.concatenate([c[3] for c in self.recent])
            window = starts >= now - self.WINDOW_S - 1
            live.rps = int(window.sum()) / self.WINDOW_S
            latencies = totals[window & oks]
        else:
            live.rps, latencies = 0.0, np.empty(0)
        n = len(latencies)
        ranks = [int(q * (n - 1)) for q in (0.50, 0.95, 0.99)]
        if n:  # three order statistics: a partition, not a sort (O(n), twice a second)
            latencies = np.partition(latencies, sorted(set(ranks)))
        live.p50_ms, live.p95_ms, live.p99_ms = (
            (float(latencies[k]) if n else None) for k in ranks)

    def totals(self) -> tuple[int, int]:
        """(requests started, failed) of the whole run, from the merged samples."""
        try:
            table = samples.read_requests(self.run_dir, columns=["ok", "error_class"])
        except LabError:
            return 0, 0
        classes = table.column("error_class").to_pylist()
        oks = table.column("ok").to_pylist()
        started = [ok for ok, cls in zip(oks, classes, strict=True) if cls != NOT_STARTED]
        return len(started), sum(1 for ok in started if not ok)

    def not_started_total(self) -> int:
        try:
            table = samples.read_requests(self.run_dir, columns=["error_class"])
        except LabError:
            return 0
        return sum(1 for cls in table.column("error_class").to_pylist() if cls == NOT_STARTED)


def queued_now(run_dir: Path) -> int:
    """Arrivals due but not started right now, summed over the Locust processes' live files."""
    total = 0
    for path in (run_dir / "live").glob("*.json"):
        with contextlib.suppress(OSError, ValueError, TypeError):
            total += int(json.loads(path.read_text()).get("queued") or 0)
    return total


def clear_live_files(run_dir: Path) -> None:
    for path in (run_dir / "live").glob("*.json"):
        with contextlib.suppress(OSError):
            path.unlink()


def test_schedule(run_dir: Path,
                  endpoint: str) -> tuple[float, list[list[float]] | None] | None:
    """(t0, spike windows as absolute [start, end] pairs, None for a schedule without spikes)
    of the current segment's Locust test, from the first process's schedule file (every
    process shares them), once it has started."""
    for path in sorted((run_dir / "schedule").glob(f"{endpoint}-*.json")):
        with contextlib.suppress(OSError, ValueError, TypeError):
            data = json.loads(path.read_text())
            t0 = data.get("t0")
            if isinstance(t0, int | float):
                spikes = [[float(a), float(b)] for a, b in data.get("spikes") or []]
                streams = data.get("streams") or {}
                spiky = any((s or {}).get("spike_every") for s in streams.values())
                return float(t0), spikes if (spikes or spiky) else None
    return None


def phase_at(spikes: list[list[float]] | None, now: float) -> str | None:
    """"spike" inside a spike window, "base" outside, None for a schedule without spikes."""
    if spikes is None:
        return None
    return "spike" if any(a <= now < b for a, b in spikes) else "base"
