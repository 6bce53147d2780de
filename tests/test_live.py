"""The live progress line and bad load input, without Docker: each is what a user sees."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab import samples
from lab.run import live
from lab.run.live import Live, SampleWatcher
from lab.watch import frame

ROOT = Path(__file__).resolve().parent.parent


def row(**values) -> tuple:
    """One requests row in the current schema's column order (defaults for the rest)."""
    now = time.time()
    base = {"scenario": "s", "endpoint": "transaction", "phase": "serverless",
            "name": "invocation", "worker": 0, "user": 0, "intended_start": now,
            "start": now, "connect_ms": 1.0, "query_ms": 1.0, "service_ms": 2.0,
            "total_ms": 2.0, "ok": True, "error_class": None, "sqlstate": None,
            "message": None, "repeat": 1}
    base.update(values)
    return tuple(base[c] for c in samples.COLUMNS)


def write_chunk(run_dir: Path, rows: list[tuple], seq: int) -> None:
    folder = run_dir / "requests"
    folder.mkdir(parents=True, exist_ok=True)
    samples.write_table(samples.to_table(rows), folder / f"part-0-{seq:06d}.parquet")


def test_counts_are_the_segments_own_and_not_started_is_its_own_count(tmp_path):
    watcher = SampleWatcher(tmp_path)
    state = Live(endpoint="session", duration_s=12)
    write_chunk(tmp_path, [row(ok=False, error_class="too_many_clients")] * 89 + [row()] * 5, 0)
    watcher.update(state)
    assert (state.requests, state.errors) == (94, 89)
    watcher.new_segment()  # the next endpoint: nothing failed there
    write_chunk(tmp_path, [row()] * 7 + [row(ok=False, error_class="not_started",
                                             start=math.nan, total_ms=math.nan)] * 3, 1)
    watcher.update(state)
    assert (state.requests, state.errors, state.not_started) == (7, 0, 3)
    assert "errors 0" in state.line() and "not started 3" in state.line()
    assert watcher.totals() == (101, 89)
    assert watcher.not_started_total() == 3


def test_the_queue_of_the_locust_processes_shows_as_not_started(tmp_path):
    (tmp_path / "live").mkdir()
    (tmp_path / "live" / "session-0.json").write_text('{"t": 1, "queued": 40, "inflight": 15}')
    (tmp_path / "live" / "session-1.json").write_text('{"t": 1, "queued": 2}')
    state = Live(endpoint="session", duration_s=12)
    SampleWatcher(tmp_path).update(state)
    assert state.not_started == 42



def test_the_window_counts_rows_not_chunks_and_percentiles_follow_the_chunks(tmp_path):
    """A chunk the window's edge cuts through counts only its rows inside (requests/s);
    the percentiles are of the window's successes, taken again when a chunk comes or goes."""
    now = time.time()
    watcher = SampleWatcher(tmp_path)
    state = Live(endpoint="transaction", duration_s=30)
    # 50 rows 4 s ago (in the 6 s window), 50 rows 20 s ago (out): one chunk across the edge
    old = [row(start=now - 20.0, total_ms=1000.0)] * 50
    write_chunk(tmp_path, old + [row(start=now - 4.0, total_ms=float(ms))
                                 for ms in range(1, 51)], 0)
    watcher.update(state)
    assert state.rps == 50 / SampleWatcher.WINDOW_S
    assert (state.p50_ms, state.p99_ms) == (25.0, 49.0)  # the 1000 ms ones are out
    write_chunk(tmp_path, [row(start=now - 1.0, total_ms=500.0)] * 50, 1)
    watcher.update(state)
    assert state.rps == 100 / SampleWatcher.WINDOW_S and state.p99_ms == 500.0
    watcher.new_segment()  # the next endpoint starts with nothing of this one's
    watcher.update(state)
    assert state.rps == 0 and state.p95_ms is None

def test_elapsed_never_counts_past_the_duration_and_the_end_is_one_done_line():
    state = Live(endpoint="session", duration_s=12, elapsed_s=18)
    assert state.line().startswith("[session   12/12s stopping]")
    state.done = True
    assert state.line().startswith("[session done 12s]")


def test_a_pooler_that_stops_answering_is_said_loudly():
    now = time.time()
    latest = {"postgres": {"t": now - 0.3, "ok": True, "total": 12, "ms": 2},
              "transaction": {"t": now - 3.0, "ok": True, "ms": 1,
                              "pools": {"cl_waiting": 0}}}
    state = Live(endpoint="transaction", duration_s=30)
    live.merge_sampler(state, latest, "transaction", now=now)
    assert state.unreachable == "transaction pooler not answering for 3.0 s"
    assert "!! UNREACHABLE: transaction pooler" in state.line()
    latest["transaction"] = {"t": now - 0.2, "ok": False, "ms": 2000,
                             "error": "connection refused"}
    live.merge_sampler(state, latest, "transaction", now=now)
    assert "transaction pooler refuses the sampler (connection refused)" in state.line()
    latest["transaction"] = {"t": now - 0.2, "ok": False, "ms": 10000,
                             "error": "no answer within 10 s"}
    live.merge_sampler(state, latest, "transaction", now=now)
    assert "transaction pooler not answering (no answer within 10 s)" in state.line()
    from lab import sampler
    assert frame.TIMED_OUT == (sampler.NO_ANSWER, sampler.NO_CONNECTION)
    assert state.waiting is None and state.backends == 12
    latest["transaction"] = {"t": now - 0.2, "ok": True, "ms": 1, "pools": {"cl_waiting": 4}}
    live.merge_sampler(state, latest, "transaction", now=now)
    assert state.unreachable is None and "UNREACHABLE" not in state.line()
    assert state.waiting == 4


@pytest.mark.parametrize("args, says", [
    (["--users", "0"], "--users 0 is below 1; fix: use --users 1 or more"),
    (["--users", "-3"], "--users -3 is below 1"),
    (["--repeat", "0"], "--repeat 0 is below 1; fix: use --repeat 1"),
    (["--workers", "0"], "--workers 0 is below 1"),
    (["--spawn-rate", "0"], "--spawn-rate 0 is not positive"),
    (["--cooldown", "-1s"], "is negative"),
    (["--duration", "0s"], "is not positive"),
])
def test_bad_load_input_is_one_line_naming_the_fix_and_writes_nothing(tmp_path, args, says):
    env = dict(os.environ, POOLER_LAB_HOME=str(tmp_path / "home"), NO_COLOR="1")
    for command in (["run", "serverless-burst"], ["bench", "--quick"]):
        if command[0] == "bench" and args[0] in ("--users", "--spawn-rate"):
            continue  # bench takes each scenario's own users
        proc = subprocess.run([sys.executable, "-m", "lab", *command, *args, "--reports-dir",
                               str(tmp_path / "reports")], capture_output=True, text=True,
                              env=env, stdin=subprocess.DEVNULL, cwd=ROOT, timeout=60)
        assert proc.returncode == 2, (command, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
        assert says in lines[0] and "Traceback" not in proc.stderr
        assert not (tmp_path / "reports").exists()
