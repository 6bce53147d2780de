"""The Locust side for real: Locust child processes with lab.users against a real lab, judged
by the requests/1 samples they write. One small lab (max_connections 20, pool size 3) serves
the module; every Locust run is a few seconds and its process group is always stopped."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from lab import samples
from tests.conftest import ROOT

pytestmark = [pytest.mark.stack, pytest.mark.timeout(300)]

MAX_CONNECTIONS, POOL_SIZE = 20, 3
PROBE = ROOT / "tests" / "locustfiles" / "session_probe.py"
BURST = ROOT / "scenarios" / "serverless_burst.py"
PERSISTENT = ROOT / "scenarios" / "persistent_server.py"
MIXED = ROOT / "scenarios" / "mixed.py"


@pytest.fixture(scope="module")
def lab(lab_factory):
    return lab_factory("--max-connections", str(MAX_CONNECTIONS), "--pool-size", str(POOL_SIZE))


@pytest.fixture(scope="module")
def eps(lab):
    return lab.connect()


def locust(locustfile: Path, run_dir: Path, uri: str, *, users: int, seconds: int,
           endpoint: str, params: dict | None = None, extra_env: dict | None = None) -> str:
    """Run Locust headless as a child process, as `lab run` does; return its output."""
    argv = [sys.executable, "-m", "locust", "-f", str(locustfile), "--headless",
            "-u", str(users), "-r", str(max(users, 1) * 100), "-t", f"{seconds}s",
            "--stop-timeout", "5", "--only-summary", "--host", f"lab:{endpoint}"]
    env = dict(os.environ, LAB_RUN_DIR=str(run_dir), LAB_ENDPOINT=endpoint,
               LAB_TARGET_URI=uri, LAB_PARAMS=json.dumps(params or {}), LAB_SEED="7",
               PYTHONUNBUFFERED="1", **(extra_env or {}))
    run_dir.mkdir(parents=True, exist_ok=True)
    child = subprocess.Popen(argv, env=env, cwd=run_dir, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = child.communicate(timeout=seconds + 60)
    finally:
        if child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.wait(timeout=10)
    # Locust exits 1 when any request failed; anything else is a crash.
    assert child.returncode in (0, 1), output
    assert "Traceback" not in output, output
    return output


def rows(run_dir: Path) -> list[dict]:
    return samples.read_requests(run_dir).to_pylist()


def test_concurrency_is_real(eps, tmp_path):
    """N users each sleeping 0.5 s in Postgres finish in about one sleep, not N."""
    n = 10
    locust(PROBE, tmp_path, eps["direct"]["bench_uri"], users=n, seconds=4, endpoint="direct",
           params={"query": "select pg_sleep(0.5)", "once": "true"})
    got = rows(tmp_path)
    assert len(got) == n and all(r["ok"] for r in got), got
    for r in got:
        assert 480 <= r["query_ms"] < 1500, r
    first_start = min(r["start"] for r in got)
    last_end = max(r["start"] + r["service_ms"] / 1000 for r in got)
    # one at a time would take n * 0.5 s = 5 s
    assert last_end - first_start < 1.5, (last_end - first_start)
    assert {r["user"] for r in got} == set(range(n))


def test_sub_millisecond_requests_are_recorded_as_such(eps, tmp_path):
    output = locust(PROBE, tmp_path, eps["direct"]["bench_uri"], users=1, seconds=3,
                    endpoint="direct")
    got = rows(tmp_path)
    assert len(got) > 200
    queries = [r["query_ms"] for r in got]
    assert all(q > 0 for q in queries)
    assert statistics.median(queries) < 1.0, statistics.median(queries)
    assert sum(q < 1.0 for q in queries) / len(queries) > 0.5
    for r in got:
        assert r["ok"] and r["connect_ms"] >= 0 and r["service_ms"] >= r["query_ms"]
        assert r["total_ms"] == pytest.approx(r["service_ms"])  # closed loop: intended = start
        assert r["scenario"] == "session-probe" and r["endpoint"] == "direct"
        assert r["phase"] == "closed" and r["name"] == "probe"
    # Locust's own statistics counted every request (successes fed in bulk with their chunk,
    # lab.locust_stats; the last chunk before Locust prints its summary): its final summary
    # line is "direct  probe  <count>  0(0.00%) | ...". (Its CSV can be written a moment
    # before the last requests end, so the printed summary is the one compared.)
    line = next(ln for ln in output.splitlines() if ln.split()[:2] == ["direct", "probe"])
    assert int(line.split()[2]) == len(got), (line, len(got))


@pytest.mark.parametrize("request_events", [False, True])
def test_every_success_is_counted_once_by_locust(eps, tmp_path, request_events):
    """Successes reach Locust's statistics in bulk (lab.locust_stats), or through
    events.request for a user class with request_events = True; never both, never neither."""
    output = locust(PROBE, tmp_path, eps["direct"]["bench_uri"], users=2, seconds=2,
                    endpoint="direct", params={"events": str(request_events).lower()})
    got = rows(tmp_path)
    assert len(got) > 50 and all(r["ok"] for r in got)
    line = next(ln for ln in output.splitlines() if ln.split()[:2] == ["direct", "probe"])
    assert int(line.split()[2]) == len(got), (line, len(got))
    fired = int(next(ln for ln in output.splitlines()
                     if ln.startswith("probe events:")).split(":")[1])
    assert fired == (len(got) if request_events else 0)


@pytest.mark.parametrize("endpoint", ["direct", "transaction"])
def test_serverless_burst_exhausts_direct_but_not_the_transaction_pooler(eps, lab, tmp_path,
                                                                         endpoint):
    # ~80 invocations/s each holding its connection ~0.3 s: ~25 at once, over max_connections.
    params = {"base_rate": "80", "spike_rate": "160", "spike_every": "2", "spike_length": "1",
              "spike_offset": "1", "hold_ms": "300", "queries": "2"}
    locust(BURST, tmp_path, eps[endpoint]["bench_uri"], users=40, seconds=5,
           endpoint=endpoint, params=params)
    got = rows(tmp_path)
    assert len(got) > 150
    started = [r for r in got if r["error_class"] != "not_started"]
    errors = collections.Counter(r["error_class"] for r in started if not r["ok"])
    ok = [r for r in got if r["ok"]]
    assert ok
    if endpoint == "direct":
        assert errors["too_many_clients"] > 10, errors
        bad = [r for r in got if r["error_class"] == "too_many_clients"]
        assert all(r["sqlstate"] == "53300" for r in bad)
        assert all("too many clients" in r["message"] for r in bad)
        assert all(r["query_ms"] != r["query_ms"] for r in bad)  # NaN: no query ran
    else:
        assert not errors, errors
    for r in got:
        assert r["endpoint"] == endpoint and r["phase"] == "serverless"
        assert r["scenario"] == "serverless-burst" and r["name"] == "invocation"
        assert r["repeat"] == 1
    for r in started:
        assert r["intended_start"] <= r["start"]
        assert r["total_ms"] >= r["service_ms"] - 1e-6
    for r in ok:
        assert r["service_ms"] >= 300 and r["query_ms"] < r["service_ms"]
    # the schedule file: t0, spike windows, typed params
    sched = json.loads((tmp_path / "schedule" / f"{endpoint}-0.json").read_text())
    first = min(r["intended_start"] for r in got)
    assert sched["t0"] <= first < sched["t0"] + 0.5
    assert sched["spikes"] and sched["spikes"][0] == pytest.approx(
        [sched["t0"] + 1, sched["t0"] + 2])
    assert sched["params"]["hold_ms"] == 300.0
    # arrivals left in the queue at the stop: one not_started row each
    assert sched["unserved"]["serverless"] == len(got) - len(started)
    # spikes are where the schedule says: more arrivals per second inside them
    inside = sum(any(a <= r["intended_start"] < b for a, b in sched["spikes"]) for r in got)
    assert inside > len(got) * 0.5 * 0.9
    assert_no_password(tmp_path, lab.password)


def test_prepared_statements_through_the_transaction_pooler(eps, tmp_path):
    """prepare_threshold=0 on a transaction pooler fails as prepared_statement; the default
    (auto: off on transaction endpoints) does not."""
    uri = eps["transaction"]["bench_uri"]
    params = {"rate_per_server": "100", "pool_size": "2", "queries": "2"}
    locust(PERSISTENT, tmp_path / "on", uri, users=3, seconds=3, endpoint="transaction",
           params={**params, "prepare_threshold": "0"})
    errors = collections.Counter(r["error_class"] for r in rows(tmp_path / "on") if not r["ok"])
    assert errors["prepared_statement"] > 0, errors
    locust(PERSISTENT, tmp_path / "auto", uri, users=3, seconds=3, endpoint="transaction",
           params=params)
    got = rows(tmp_path / "auto")
    assert len(got) > 300 and all(r["ok"] for r in got)
    assert all(r["phase"] == "persistent" for r in got)


def test_a_busy_pool_with_healthy_connects_times_out_as_pool_timeout(eps, tmp_path):
    """One pooled connection, requests that hold it 0.4 s, arrivals at 10/s: checkouts time
    out because the pool is too small (its connects work), so the class stays pool_timeout;
    and the requests Locust cuts off at the stop are unfinished, not lost."""
    locust(PERSISTENT, tmp_path, eps["direct"]["bench_uri"], users=1, seconds=4,
           endpoint="direct", params={"rate_per_server": "10", "pool_size": "1",
                                      "sleep_ms": "400", "queries": "1",
                                      "checkout_timeout": "1"})
    got = rows(tmp_path)
    classes = collections.Counter(r["error_class"] or "ok" for r in got)
    assert classes["pool_timeout"] > 5 and classes["ok"] > 3, classes
    assert set(classes) <= {"ok", "pool_timeout", "unfinished", "not_started"}, classes
    timeouts = [r for r in got if r["error_class"] == "pool_timeout"]
    assert all(r["message"].startswith("couldn't get a connection after 1.00 sec")
               for r in timeouts), timeouts[0]
    assert all(900 <= r["connect_ms"] < 1500 for r in timeouts)


def test_the_pool_names_a_refused_connect_instead_of_pool_size(eps, tmp_path):
    """The same app server aimed at a port nothing listens on: its checkouts time out because
    the pool cannot connect, and the rows say so (connection_refused, with the cause)."""
    uri = eps["direct"]["bench_uri"].rsplit(":", 1)[0] + ":1/postgres"
    locust(PERSISTENT, tmp_path, uri, users=1, seconds=3, endpoint="direct",
           params={"rate_per_server": "5", "checkout_timeout": "1", "connect_timeout": "1"})
    got = rows(tmp_path)
    classes = collections.Counter(r["error_class"] or "ok" for r in got)
    assert classes["connection_refused"] >= 5 and "pool_timeout" not in classes, classes
    refused = [r for r in got if r["error_class"] == "connection_refused"]
    assert all(r["message"].startswith("pool checkout timed out after 1 s; the last "
                                       "connection attempt failed: connection failed:")
               for r in refused), refused[0]
    assert all("Connection refused" in r["message"] for r in refused), refused[0]


def test_mixed_routes_each_phase_to_its_endpoint(eps, lab, tmp_path):
    uris = {name: ep["bench_uri"] for name, ep in eps.items()}
    locust(MIXED, tmp_path, uris["transaction"], users=12, seconds=4, endpoint="transaction",
           params={"servers": "2", "pool_size": "2", "rate_per_server": "50",
                   "base_rate": "20", "spike_every": "0", "hold_ms": "50"},
           extra_env={"LAB_TARGET_URIS": json.dumps(uris), "LAB_SCENARIO": "mixed"})
    got = rows(tmp_path)
    seen = collections.Counter((r["phase"], r["endpoint"]) for r in got)
    assert seen[("persistent", "direct")] > 100, seen
    assert seen[("serverless", "transaction")] > 20, seen
    assert set(seen) == {("persistent", "direct"), ("serverless", "transaction")}
    assert {r["user"] for r in got if r["phase"] == "persistent"} <= set(range(12))
    assert all(r["ok"] for r in got)
    assert_no_password(tmp_path, lab.password)


def assert_no_password(run_dir: Path, password: str) -> None:
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert password.encode() not in path.read_bytes(), path
