"""The live progress line of a run: what the current segment has done so far, read from the
sample chunks and live files the Locust processes write and from the sampler's latest records
(no second poller). Updated about once a second; counts are the segment's own."""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

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


class _Chunk:
    """What the live counters keep of one chunk: its started rows' starts, and the starts and
    latencies of its successes (the percentiles are of successes)."""

    __slots__ = ("first", "last", "starts", "ok_starts", "ok_ms")

    def __init__(self, starts, ok_starts, ok_ms):
        self.first, self.last = float(np.nanmin(starts)), float(np.nanmax(starts))
        self.starts, self.ok_starts, self.ok_ms = starts, ok_starts, ok_ms


class SampleWatcher:
    """Reads new sample chunks as Locust writes them, for the progress line and the totals.

    The orchestrator shares the machine's cores with the load (issue "Scale"): a chunk is
    read once, on one thread, and what the window needs is kept per chunk, so a tick masks
    only the chunk or two the window's edge cuts through."""

    WINDOW_S = 5.0

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.seen: set[str] = set()
        self.recent: list[_Chunk] = []
        self.requests = 0  # every row read, the whole run (not_started rows excluded)
        self.segment_requests = 0
        self.segment_errors = 0
        self.segment_not_started = 0
        self.segment_error_classes: dict[str, int] = {}
        self._changed = False  # a chunk came since the percentiles were taken
        self._percentiles: tuple[float | None, ...] = (None, None, None)  # p50, p95, p99

    def _read_new(self) -> None:
        """Count the new chunks' rows with numpy, never a Python loop per row (but over the
        failed ones' classes)."""
        for name in samples.chunk_names(self.run_dir, skip=self.seen):
            path = self.run_dir / samples.CHUNK_DIR / name
            try:
                table = samples.read_chunk(path, columns=["start", "total_ms", "ok",
                                                          "error_class"], threads=False)
            except Exception:  # a file mid-rename is retried at the next tick
                continue
            self.seen.add(name)
            ok = table.column("ok").to_numpy(zero_copy_only=False).astype(bool)
            starts = table.column("start").to_numpy(zero_copy_only=False)
            if ok.all():  # the common chunk: nothing failed, nothing left unstarted
                started = None
                n_started = len(ok)
            else:
                bad = np.flatnonzero(~ok)
                classes = table.column("error_class").take(pa.array(bad)).to_pylist()
                never = np.array([c == NOT_STARTED for c in classes], dtype=bool)
                started = np.ones(len(ok), dtype=bool)
                started[bad[never]] = False
                n_started = int(started.sum())
                for cls in (c for c, n in zip(classes, never, strict=True) if not n):
                    key = cls or "other"
                    self.segment_error_classes[key] = self.segment_error_classes.get(key, 0) + 1
                self.segment_errors += len(bad) - int(never.sum())
            self.segment_not_started += len(ok) - n_started
            self.requests += n_started
            self.segment_requests += n_started
            if n_started:
                totals = table.column("total_ms").to_numpy(zero_copy_only=False)
                self.recent.append(_Chunk(starts if started is None else starts[started],
                                          starts[ok], totals[ok]))
                self._changed = True

    def new_segment(self) -> None:
        """Take in what the last segment wrote, then count afresh: the next endpoint's
        numbers are its own from its first tick."""
        self._read_new()
        self.recent, self._changed = [], True
        self.segment_requests = self.segment_errors = self.segment_not_started = 0
        self.segment_error_classes = {}

    def update(self, live: Live) -> None:
        self._read_new()
        now = clock.now()
        # chunks with a start in the last WINDOW_S + 2 seconds
        kept = [c for c in self.recent if c.last >= now - self.WINDOW_S - 2]
        changed = self._changed or len(kept) != len(self.recent)
        self.recent, self._changed = kept, False
        live.requests, live.errors = self.segment_requests, self.segment_errors
        live.errors_by_class = dict(self.segment_error_classes)
        live.not_started = max(self.segment_not_started, queued_now(self.run_dir))
        cut = now - self.WINDOW_S - 1
        # requests/s every tick; the percentiles when a chunk came or went (once a second a
        # Locust process): a partition of the window's successes is most of a tick's cost
        live.rps = sum(len(c.starts) if c.first >= cut else int(np.count_nonzero(c.starts >= cut))
                       for c in self.recent) / self.WINDOW_S
        if changed:
            values = (np.concatenate([c.ok_ms if c.first >= cut else c.ok_ms[c.ok_starts >= cut]
                                      for c in self.recent]) if self.recent else np.empty(0))
            n = len(values)
            ranks = [int(q * (n - 1)) for q in (0.50, 0.95, 0.99)]
            if n:  # three order statistics: a partition, not a sort (O(n))
                values = np.partition(values, sorted(set(ranks)))
            self._percentiles = tuple((float(values[k]) if n else None) for k in ranks)
        live.p50_ms, live.p95_ms, live.p99_ms = self._percentiles

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
    for path in _live_files(run_dir):
        with contextlib.suppress(OSError, ValueError, TypeError), open(path, "rb") as fh:
            total += int(json.loads(fh.read()).get("queued") or 0)
    return total


def _live_files(run_dir: Path) -> list[Path]:
    """The Locust processes' live files (by name: pathlib's glob costs more than the read,
    twice a second)."""
    folder = run_dir / "live"
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return [folder / n for n in names if n.endswith(".json") and not n.startswith(".")]


def clear_live_files(run_dir: Path) -> None:
    for path in _live_files(run_dir):
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
