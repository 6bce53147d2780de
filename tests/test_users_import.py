"""lab.users without Docker: it refuses a process where psycopg was imported before Locust, and
every arrival has an outcome (Locust child processes on a stand-in connection,
tests/locustfiles/fake_load.py, judged by the rows and files they write)."""

from __future__ import annotations

import collections
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab import samples
from lab import schedule as schedmod
from tests.conftest import ROOT

FAKE = ROOT / "tests" / "locustfiles" / "fake_load.py"
SEED = 7
FAKE_URI = "postgresql://u:not-a-real-password@127.0.0.1:1/db"


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)


def test_psycopg_first_fails_loudly():
    proc = run("import psycopg\nimport lab.users")
    assert proc.returncode != 0
    assert "ImportError" in proc.stderr and "one at a time" in proc.stderr


def test_lab_users_first_gets_a_cooperative_wait():
    proc = run("import lab.users, psycopg.waiting\nprint(psycopg.waiting.wait.__name__)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() not in ("", "wait_c")


def test_sleep_until_never_wakes_early_and_lets_others_run():
    # Arrival times: sleep_until must not return before the due time (an early start would
    # bend the schedule) and must yield to the other greenlets while it waits.
    proc = run(
        "import time, gevent, lab.users as u\n"
        "ticks = []\n"
        "g = gevent.spawn(lambda: [ticks.append(1) or gevent.sleep(0) for _ in range(10**6)])\n"
        "early = 0\n"
        "for delay in (0, 0.0003, 0.001, 0.0012, 0.002, 0.005, 0.02):\n"
        "    due = time.perf_counter() + delay\n"
        "    u.sleep_until(due)\n"
        "    early += time.perf_counter() < due\n"
        "g.kill()\n"
        "print(early, len(ticks) > 0)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["0", "True"]


def test_arrivals_are_taken_counted_and_left_exactly_once():
    proc = run(
        "import lab.users as u\n"
        "a = u._Arrivals([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], t0=10.0)\n"
        "first = a.take()\n"
        "a.current = first\n"
        "print(a.due_by(10.05), a.due_by(10.1), a.due_by(10.35))\n"  # 0; current; +2 ahead
        "print(a.take(), a.due_by(10.35))\n"  # taken from what was pulled ahead
        "print(a.left(10.45))\n"  # current + 0.3 + 0.4, not 0.5 (after the end)
        "print(a.take(), a.left(99))\n")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["0", "1", "3"]
    assert lines[1].split() == ["10.2", "2"]
    assert json.loads(lines[2]) == pytest.approx([10.1, 10.3, 10.4])
    assert lines[3].split() == ["None", "[]"]


# -- every arrival has an outcome (Locust on a stand-in connection) ----------------------------


def run_fake(run_dir: Path, shape: str, *, users: int, seconds: int, stop_timeout: int = 3,
             params: dict | None = None, repeat: int = 1,
             sigterm_after: float | None = None) -> dict:
    """Run fake_load.py's ``shape`` under Locust as `lab run` does; return what the live file
    said while the test ran (``max_queued``, ``max_inflight``) and at the end (``final``)."""
    argv = [sys.executable, "-m", "locust", "-f", str(FAKE), "--headless", "-u", str(users),
            "-r", "100", "-t", f"{seconds}s", "--stop-timeout", str(stop_timeout),
            "--only-summary", shape]
    env = dict(os.environ, LAB_RUN_DIR=str(run_dir), LAB_ENDPOINT="direct",
               LAB_TARGET_URI=FAKE_URI, LAB_SEED=str(SEED), LAB_REPEAT=str(repeat),
               LAB_PARAMS=json.dumps(params or {}), PYTHONUNBUFFERED="1")
    run_dir.mkdir(parents=True, exist_ok=True)
    live = run_dir / "live" / "direct-0.json"
    seen = {"max_queued": 0, "max_inflight": 0, "ticks": 0}
    child = subprocess.Popen(argv, env=env, cwd=run_dir, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
    began = time.monotonic()
    try:
        while child.poll() is None and time.monotonic() - began < seconds + stop_timeout + 30:
            time.sleep(0.2)
            with contextlib.suppress(OSError, ValueError):
                data = json.loads(live.read_text())
                if not data.get("stopped"):
                    seen["ticks"] += 1
                    seen["max_queued"] = max(seen["max_queued"], data["queued"])
                    seen["max_inflight"] = max(seen["max_inflight"], data["inflight"])
            if sigterm_after is not None and time.monotonic() - began > sigterm_after:
                os.killpg(child.pid, signal.SIGTERM)  # what `lab run` does on Ctrl-C
                sigterm_after = None
        output, _ = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.wait(timeout=10)
    assert child.returncode in (0, 1), output  # 1: some request failed (or was cut off)
    assert "Traceback" not in output, output
    seen["final"] = json.loads(live.read_text())
    return seen


def rows_of(run_dir: Path) -> list[dict]:
    return samples.read_requests(run_dir).to_pylist()


def schedule_file(run_dir: Path) -> dict:
    return json.loads((run_dir / "schedule" / "direct-0.json").read_text())


def stream_arrivals(params: dict, until: float) -> int:
    """The invocation stream's arrivals in [0, until), from lab.schedule alone."""
    share, seed, phase = schedmod.worker_share(schedmod.from_params(params), SEED, 0, 1,
                                               stream="serverless")
    return sum(1 for _ in schedmod.arrivals(share, seed, phase=phase, until=until))


def server_arrivals(rate: float, sched: dict, until: float) -> int:
    """Every app server's arrivals up to ``until`` seconds after the test start: server k's seed
    is SEED:persistent:0:k and its stream starts when it does (``start_s``, a few ms in when
    every user is spawned at once: the one thing taken from the run's own files)."""
    schedule = schedmod.Schedule(base_rate=rate)
    total = 0
    for k, server in enumerate(sched["servers"]):
        assert server["server"] == k and 0 <= server["start_s"] < 1, server
        total += sum(1 for _ in schedmod.arrivals(schedule, f"{SEED}:persistent:0:{k}",
                                                  until=until - server["start_s"]))
    return total


def assert_not_started_rows(rows: list[dict], t0: float, end: float) -> None:
    for r in rows:
        assert r["ok"] is False and r["user"] == -1 and r["worker"] == 0
        assert math.isnan(r["start"]), r
        for column in ("connect_ms", "query_ms", "service_ms", "total_ms"):
            assert math.isnan(r[column]), (column, r)
        assert t0 <= r["intended_start"] < end, (r["intended_start"] - t0, end - t0)
        assert r["message"].startswith("not started: ") and r["sqlstate"] is None


def test_invocations_left_in_the_queue_are_not_started_rows(tmp_path):
    # 3 slots, 50 arrivals/s, each holding 0.2 s: at most 15/s are served, the rest queue.
    params = {"base_rate": 50, "hold_ms": 200}
    live = run_fake(tmp_path, "Invocations", users=3, seconds=3, params=params, repeat=2)
    rows = rows_of(tmp_path)
    sched = schedule_file(tmp_path)
    # The load ran its whole run time (Locust's timer fires early; the stop waits for the end).
    assert sched["run_time_s"] == 3 and sched["horizon_s"] == 3
    assert 3 <= sched["stop_s"] < 3.2
    scheduled = stream_arrivals(params, until=3)
    classes = collections.Counter(r["error_class"] or "ok" for r in rows)
    assert scheduled == len(rows) == classes["ok"] + classes["not_started"], classes
    assert classes["ok"] >= 3 * 2 * 3 and classes["not_started"] > scheduled / 2, classes
    not_started = [r for r in rows if r["error_class"] == "not_started"]
    assert_not_started_rows(not_started, sched["t0"], sched["t0"] + 3)
    assert sched["unserved"] == {"serverless": len(not_started)}
    assert {r["repeat"] for r in rows} == {2}
    assert {r["user"] for r in rows if r["ok"]} == {0, 1, 2}
    # the live file: a backlog while running, what never started at the end
    assert live["ticks"] >= 2 and live["max_queued"] > 10, live
    assert 1 <= live["max_inflight"] <= 3, live
    assert live["final"]["queued"] == len(not_started) and live["final"]["inflight"] == 0
    assert abs(live["final"]["t"] - time.time()) < 60


def test_app_server_arrivals_without_a_slot_are_not_started_rows(tmp_path):
    # 2 servers x 50 requests/s, 2 in flight each holding 0.2 s: 10/s per server are served.
    params = {"rate_per_server": 50, "max_inflight": 2, "hold_ms": 200}
    live = run_fake(tmp_path, "Servers", users=2, seconds=3, params=params)
    rows = rows_of(tmp_path)
    sched = schedule_file(tmp_path)
    assert len(sched["servers"]) == 2
    scheduled = server_arrivals(50, sched, until=3)
    classes = collections.Counter(r["error_class"] or "ok" for r in rows)
    assert scheduled == len(rows) == classes["ok"] + classes["not_started"], classes
    assert classes["not_started"] > scheduled / 2, classes
    not_started = [r for r in rows if r["error_class"] == "not_started"]
    assert_not_started_rows(not_started, sched["t0"], sched["t0"] + 3)
    assert all("in-flight slot (max_inflight 2)" in r["message"] for r in not_started)
    assert [s["seed"] for s in sched["servers"]] == [f"{SEED}:persistent:0:0",
                                                     f"{SEED}:persistent:0:1"]
    assert sum(s["not_started"] for s in sched["servers"]) == len(not_started)
    # the live file is read once a second: it sees the slots busy, never beyond the 2 x 2 cap
    # (all four at one reading is likely, not certain, on a loaded machine)
    assert live["max_queued"] > 10 and 2 <= live["max_inflight"] <= 4, live
    assert live["final"] == {**live["final"], "queued": len(not_started), "inflight": 0}


def test_requests_cut_off_at_the_stop_are_unfinished_rows_written_before_the_last_flush(
        tmp_path):
    """Requests that never end: Locust kills them at --stop-timeout. Each gets an unfinished
    row with the time it ran, and those rows reach the files (Locust fires test_stop, where
    lab.users flushes, only after every user greenlet has ended)."""
    forever = {"hold_ms": 60_000, "rate_per_server": 5, "max_inflight": 3, "base_rate": 5}
    for shape, users in (("Sessions", 2), ("Invocations", 2), ("Servers", 1)):
        run_dir = tmp_path / shape
        run_fake(run_dir, shape, users=users, seconds=2, stop_timeout=4, params=forever)
        rows = rows_of(run_dir)
        classes = collections.Counter(r["error_class"] or "ok" for r in rows)
        unfinished = [r for r in rows if r["error_class"] == "unfinished"]
        in_flight = 3 if shape == "Servers" else users
        assert len(unfinished) == in_flight, (shape, classes)
        for r in unfinished:
            assert r["ok"] is False and r["user"] >= 0 and r["connect_ms"] >= 0
            # ran from its start until the kill: the rest of the run, then the stop's wait
            assert 1_000 < r["service_ms"] < 10_000, (shape, r)
            assert r["total_ms"] >= r["service_ms"]
            assert r["message"].startswith("unfinished: still running when the load stopped")
        if shape != "Sessions":
            scheduled = (stream_arrivals(forever, until=2) if shape == "Invocations"
                         else server_arrivals(5, schedule_file(run_dir), until=2))
            assert scheduled == classes["unfinished"] + classes["not_started"], classes
            assert set(classes) == {"unfinished", "not_started"}, classes


def test_a_sigterm_stop_ends_the_schedule_at_the_stop(tmp_path):
    """Ctrl-C on `lab run` (SIGTERM to Locust) mid-run: the schedule ends at the stop, and
    every arrival due before it has its row."""
    params = {"base_rate": 40, "hold_ms": 150}
    run_fake(tmp_path, "Invocations", users=2, seconds=30, params=params, sigterm_after=3.5)
    sched = schedule_file(tmp_path)
    assert 1.5 < sched["horizon_s"] == sched["stop_s"] < 10
    rows = rows_of(tmp_path)
    classes = collections.Counter(r["error_class"] or "ok" for r in rows)
    assert stream_arrivals(params, until=sched["horizon_s"]) == len(rows), classes
    assert classes["ok"] > 10 and classes["not_started"] > 10, classes


def test_a_pool_that_cannot_connect_names_the_cause_of_its_timeout():
    """psycopg_pool's PoolTimeout against a closed local port: classified as the failed
    connection attempt, with both facts in the message; healthy connects stay pool_timeout."""
    proc = run(
        "import json, socket, time\n"
        "import lab.users as u\n"
        "from lab.classify import classify\n"
        "s = socket.socket(); s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]; s.close()\n"
        "uri = 'postgresql://u:not-a-real-password@127.0.0.1:' + str(port) + '/db'\n"
        "pool = u.AppPool(uri, {'connect_timeout': 1}, size=1, timeout=1.5, name='t')\n"
        "began = time.monotonic()\n"
        "try:\n"
        "    pool.get()\n"
        "except Exception as exc:\n"
        "    out = [type(exc).__name__, *classify(exc), type(exc.__cause__).__name__,\n"
        "           round(time.monotonic() - began, 1)]\n"
        "pool.close()\n"
        "ok = u._Attempts(ended_at=time.monotonic(), error=None)\n"  # the latest attempt worked
        "pool.attempts = ok\n"
        "out.append(pool.connect_failure(time.monotonic() - 1.5, time.monotonic()))\n"
        "old = u._Attempts(ended_at=time.monotonic() - 60, error=ConnectionRefusedError())\n"
        "pool.attempts = old\n"  # failed long before this checkout: not its cause
        "out.append(pool.connect_failure(time.monotonic() - 1.5, time.monotonic()))\n"
        "pool.attempts = u._Attempts(pending_since=time.monotonic() - 1.2)\n"
        "cause = pool.connect_failure(time.monotonic() - 1.5, time.monotonic())\n"
        "wrapped = pool._wrapped(cause)\n"
        "wrapped.__cause__ = cause\n"
        "out += [str(wrapped), classify(wrapped)[0]]\n"
        "print(json.dumps(out))\n")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    name, cls, sqlstate, message, cause, seconds = out[:6]
    assert (name, cls, sqlstate, cause) == ("PoolCheckoutFailed", "connection_refused", None,
                                            "OperationalError")
    assert message.startswith("pool checkout timed out after 1.5 s; the last connection "
                              "attempt failed: connection failed: connection to server at "
                              '"127.0.0.1"'), message
    assert message.endswith("failed: Connection refused"), message
    assert 1.4 <= seconds < 5
    assert out[6] is None and out[7] is None  # healthy or stale: a plain pool_timeout
    assert out[8].startswith("pool checkout timed out after 1.5 s; a connection attempt has "
                             "had no answer for 1.")
    assert out[9] == "connection_refused"
