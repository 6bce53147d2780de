"""Every arrival has an outcome, on the real stack through `lab run` as a user runs it.

For each built-in scenario, per segment: the arrivals its schedule holds (computed here from
lab.schedule alone, with the run's parameters, seed and duration) = succeeded + failed +
not_started rows. Then issue 8's finding 1, reproduced: invocations that never started through
a full session pool (a lab with session_overflow = queue), the same burst refused at connect
beyond the pool (the default, refuse), and a shared pooler killed mid-run (its failures named
as connections refused or lost, never as pool size). One micro-tier lab (pool size 15) serves
the module, and its twin with session_overflow = queue; runs last 6-8 s each."""

from __future__ import annotations

import collections
import json
import math
import os
import subprocess
import time
from pathlib import Path

import pytest

from lab import samples, scenarios
from lab import schedule as schedmod
from tests.conftest import LAB, ROOT, load_start

pytestmark = [pytest.mark.stack, pytest.mark.timeout(300)]

SEED = 5
DURATION_S = 6
STARTED = ("connection_refused", "connection_lost", "unfinished")


@pytest.fixture(scope="module")
def lab(lab_factory):
    return lab_factory("--tier", "micro")


@pytest.fixture(scope="module")
def queue_lab(lab_factory):
    return lab_factory("--tier", "micro", "--session-overflow", "queue")


def lab_run(lab, tmp_path: Path, scenario: str, *args: str) -> Path:
    proc = lab.cli("run", scenario, "--seed", str(SEED), "--cooldown", "1s",
                   "--reports-dir", str(tmp_path), *args, timeout=200)
    run_dir = Path(proc.stdout.strip().splitlines()[-1])
    assert run_dir.is_dir() and run_dir.parent == tmp_path, proc.stdout
    return run_dir


def pairs(params: dict[str, str]) -> list[str]:
    return [arg for key, value in params.items() for arg in ("-P", f"{key}={value}")]


# -- the schedule, from lab.schedule alone -------------------------------------------------------


def invocations_scheduled(params: dict, until: float) -> int:
    """The invocation stream of one Locust process (worker 0 of 1), stream "serverless"."""
    share, seed, phase = schedmod.worker_share(schedmod.from_params(params), SEED, 0, 1,
                                               stream="serverless")
    return sum(1 for _ in schedmod.arrivals(share, seed, phase=phase, until=until))


def servers_scheduled(params: dict, run_dir: Path, scenario: str, endpoint: str,
                      servers: int, until: float) -> int:
    """App server k of the process draws its arrivals with the seed SEED:persistent:0:k, from
    its own start to the end of the run time. Its start (a few ms after the test start, when
    every user is spawned at once) is the one number taken from the run's schedule file: a
    server does not get the arrivals of the moment before it existed."""
    schedule = schedmod.Schedule(base_rate=float(params["rate_per_server"]),
                                 poisson=params["arrivals"] != "even")
    sched = json.loads((run_dir / "schedule" / f"{scenario}.{endpoint}-0.json").read_text())
    starts = [s["start_s"] for s in sched["servers"]]
    assert len(starts) == servers and all(0 <= s < 0.5 for s in starts), sched["servers"]
    return sum(1 for k in range(servers)
               for _ in schedmod.arrivals(schedule, f"{SEED}:persistent:0:{k}",
                                          until=until - starts[k]))


def outcomes(rows: list[dict]) -> dict[str, int]:
    succeeded = sum(1 for r in rows if r["ok"])
    not_started = sum(1 for r in rows if r["error_class"] == "not_started")
    return {"succeeded": succeeded, "not_started": not_started,
            "failed": len(rows) - succeeded - not_started}


def assert_accounted(scheduled: int, rows: list[dict], what: str) -> dict[str, int]:
    got = outcomes(rows)
    assert scheduled == got["succeeded"] + got["failed"] + got["not_started"], (what, got,
                                                                                scheduled)
    for r in rows:
        if r["error_class"] == "not_started":
            assert r["user"] == -1 and math.isnan(r["start"]) and r["ok"] is False, r
            assert math.isnan(r["total_ms"]) and math.isnan(r["connect_ms"]), r
        else:
            assert r["start"] >= r["intended_start"] - 1e-6, r
            assert r["total_ms"] >= r["service_ms"] - 1e-6, r
    return got


def segments(run_dir: Path) -> tuple[dict, list[dict]]:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    return manifest, samples.read_requests(run_dir).to_pylist()


def test_every_built_in_scenario_has_an_accounting_test():
    """A new built-in scenario needs its case below (how its arrivals are scheduled)."""
    names = {s.name for s in scenarios.available()}
    assert names == {"serverless-burst", "persistent-server", "mixed", "pooler-restart"}, names


# -- per scenario ------------------------------------------------------------------------------


BURST = {"base_rate": "10", "spike_rate": "40", "spike_every": "4", "spike_length": "1.5",
         "spike_offset": "1", "hold_ms": "150"}


def test_serverless_burst_accounts_for_every_arrival_per_segment(lab, tmp_path):
    run_dir = lab_run(lab, tmp_path, "serverless-burst", "-e", "direct", "-e", "transaction",
                      "--duration", f"{DURATION_S}s", "--users", "8", *pairs(BURST))
    manifest, rows = segments(run_dir)
    params = scenarios.resolve("serverless-burst").coerce(BURST)
    scheduled = invocations_scheduled(params, DURATION_S)
    assert scheduled > 80  # 10/s, and 40/s in spikes: a real number to account for
    assert [s["endpoint"] for s in manifest["segments"]] == ["direct", "transaction"]
    for segment in manifest["segments"]:
        mine = [r for r in rows if r["endpoint"] == segment["endpoint"] and r["repeat"] == 1]
        got = assert_accounted(scheduled, mine, segment["endpoint"])
        assert got["succeeded"] > scheduled / 3, got
        # the manifest's count of arrivals left in the queue is the not_started rows'
        assert segment["unserved"] == got["not_started"], (segment, got)
    assert {r["scenario"] for r in rows} == {"serverless-burst"}


def test_persistent_server_accounts_for_every_arrival(lab, tmp_path):
    raw = {"rate_per_server": "25", "pool_size": "3"}
    run_dir = lab_run(lab, tmp_path, "persistent-server", "-e", "session",
                      "--duration", f"{DURATION_S}s", "--users", "2", *pairs(raw))
    _manifest, rows = segments(run_dir)
    params = scenarios.resolve("persistent-server").coerce(raw)
    scheduled = servers_scheduled(params, run_dir, "persistent-server", "session", 2,
                                  DURATION_S)
    assert scheduled > 200
    got = assert_accounted(scheduled, rows, "persistent-server")
    assert got["succeeded"] > scheduled * 0.9, got
    assert {r["user"] for r in rows if r["ok"]} == {0, 1}


def test_mixed_accounts_for_both_workloads(lab, tmp_path):
    raw = {"servers": "2", "rate_per_server": "20", "pool_size": "2", "base_rate": "10",
           "spike_rate": "30", "spike_every": "3", "spike_length": "1", "spike_offset": "1",
           "hold_ms": "100", "persistent_endpoint": "direct",
           "serverless_endpoint": "transaction"}
    run_dir = lab_run(lab, tmp_path, "mixed", "-e", "transaction",
                      "--duration", f"{DURATION_S}s", "--users", "6", *pairs(raw))
    _manifest, rows = segments(run_dir)
    params = scenarios.resolve("mixed").coerce(raw)
    persistent = [r for r in rows if r["phase"] == "persistent"]
    serverless = [r for r in rows if r["phase"] == "serverless"]
    assert len(persistent) + len(serverless) == len(rows)
    assert {r["endpoint"] for r in persistent} == {"direct"}
    assert {r["endpoint"] for r in serverless} == {"transaction"}
    scheduled = servers_scheduled(params, run_dir, "mixed", "transaction", 2, DURATION_S)
    got = assert_accounted(scheduled, persistent, "persistent")
    assert got["succeeded"] > 150, got
    got = assert_accounted(invocations_scheduled(params, DURATION_S), serverless, "serverless")
    assert got["succeeded"] > 40, got


# -- issue 8, finding 1 ------------------------------------------------------------------------


SESSION_BURST = {"base_rate": "10", "spike_rate": "80", "spike_every": "20",
                 "spike_length": "3", "spike_offset": "2", "hold_ms": "500"}


def test_invocations_stuck_behind_a_full_session_pool_are_not_started(queue_lab, tmp_path):
    """Serverless bursts through session mode with more invocation slots (40) than the session
    pool (15), on a session pooler that queues (session_overflow = queue, Supavisor before
    2.8): every slot ends up waiting on the pool, arrivals pile up in the queue, and the
    ones still queued at the end are not_started rows instead of vanishing."""
    raw = SESSION_BURST
    run_dir = lab_run(queue_lab, tmp_path, "serverless-burst", "-e", "session",
                      "--duration", "8s", "--users", "40", *pairs(raw))
    manifest, rows = segments(run_dir)
    params = scenarios.resolve("serverless-burst").coerce(raw)
    scheduled = invocations_scheduled(params, 8)
    got = assert_accounted(scheduled, rows, "session")
    # 15 server connections x 2 invocations/s each cannot serve a 3 s spike of 80/s
    assert got["not_started"] > 30, got
    assert got["succeeded"] > 100, got
    assert manifest["segments"][0]["unserved"] == got["not_started"]
    not_started = [r for r in rows if r["error_class"] == "not_started"]
    assert all("still queued" in r["message"] for r in not_started)
    # what did start waited: the queue is in total_ms, from the intended start
    waited = max(r["total_ms"] - r["service_ms"] for r in rows if r["ok"])
    assert waited > 1000, waited


def test_invocations_beyond_the_session_pool_are_refused_and_accounted(lab, tmp_path):
    """The same burst on the default session pooler (session_overflow = refuse, as Supavisor
    2.8+): invocations beyond the pool's 15 clients are refused at login, counted as
    max_client_conn failures, and no slot waits on the pool, so nothing piles up unstarted."""
    run_dir = lab_run(lab, tmp_path, "serverless-burst", "-e", "session",
                      "--duration", "8s", "--users", "40", *pairs(SESSION_BURST))
    manifest, rows = segments(run_dir)
    params = scenarios.resolve("serverless-burst").coerce(SESSION_BURST)
    got = assert_accounted(invocations_scheduled(params, 8), rows, "session")
    by_class = collections.Counter(r["error_class"] for r in rows if not r["ok"])
    assert by_class["max_client_conn"] > 30, by_class
    assert set(by_class) <= {"max_client_conn", "not_started", "unfinished"}, by_class
    assert all("client connections exceeded (max_user_client_connections)" in r["message"]
               for r in rows if r["error_class"] == "max_client_conn")
    assert got["succeeded"] > 100, got
    assert got["not_started"] < by_class["max_client_conn"], got
    assert manifest["segments"][0]["unserved"] == got["not_started"]


def pooler_container(lab):
    import docker

    (name,) = [c["name"] for c in lab.status()["containers"] if c["service"] == "pooler"]
    return docker.from_env().containers.get(name)


def test_a_killed_pooler_is_connections_refused_and_lost_never_pool_size(lab, tmp_path):
    """persistent-server on the transaction pooler, the shared pooler container killed 3 s
    into the load: the rows go on to the end of the segment, every failure after the kill is a
    connection refused or lost (or cut off, or never started), none is pool_timeout, and every
    scheduled arrival is accounted for."""
    raw = {"rate_per_server": "20", "checkout_timeout": "2", "connect_timeout": "2"}
    duration = 8
    env = {"POOLER_LAB_HOME": str(lab.home), "NO_COLOR": "1"}
    proc = subprocess.Popen([*LAB, "run", "persistent-server", "--name", lab.name,
                             "-e", "transaction", "--duration", f"{duration}s", "--users", "2",
                             "--seed", str(SEED), "--reports-dir", str(tmp_path), *pairs(raw)],
                            env=dict(os.environ, **env), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    pooler = pooler_container(lab)
    killed_at = None
    try:
        t0 = load_start(tmp_path, "transaction", proc)
        time.sleep(max(0.0, t0 + 3 - time.time()))
        kill_sent = time.time()
        pooler.kill()
        killed_at = time.time()
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        pooler.reload()
        if pooler.status != "running":
            pooler.start()
    # the pooler stayed down past the run's end, outside its faults: exit 4, in one line
    assert proc.returncode == 4, err
    assert err.strip().splitlines()[-1].startswith("error: the run ended with the lab not "
                                                   "whole (pooler exited"), err[-500:]
    run_dir = Path(out.strip().splitlines()[-1])
    _manifest, rows = segments(run_dir)
    params = scenarios.resolve("persistent-server").coerce(raw)
    scheduled = servers_scheduled(params, run_dir, "persistent-server", "transaction", 2,
                                  duration)
    got = assert_accounted(scheduled, rows, "killed pooler")
    classes = collections.Counter(r["error_class"] or "ok" for r in rows)
    assert "pool_timeout" not in classes, classes
    # what ended before the kill was sent succeeded (on a loaded machine an arrival scheduled
    # before the kill can start after it: its intended start says nothing of when it ran)
    before = [r for r in rows
              if r["intended_start"] + r["total_ms"] / 1000 < kill_sent - 0.2]
    assert before and all(r["ok"] for r in before), classes
    after = [r for r in rows if r["intended_start"] > killed_at + 0.5]
    # the segment's rows run to its end: arrivals up to the last second are there
    assert after and max(r["intended_start"] for r in after) > t0 + duration - 1.0
    after_classes = collections.Counter(r["error_class"] or "ok" for r in after)
    assert set(after_classes) <= {*STARTED, "not_started"}, after_classes
    assert after_classes["connection_refused"] > 10, after_classes
    # the pooled connections that were open when it died were lost, not refused
    lost = [r for r in rows if r["error_class"] == "connection_lost"]
    assert lost and all(killed_at - 1 < r["start"] + r["service_ms"] / 1000 for r in lost)
    refused = [r for r in rows if r["error_class"] == "connection_refused"]
    assert any(r["message"].startswith("pool checkout timed out after 2 s") for r in refused)
    assert got["failed"] > 0


def test_pooler_restart_accounts_for_both_workloads_through_the_restart(lab, tmp_path):
    """Both workloads on the segment's endpoint while the shared pooler restarts: every
    arrival still has an outcome, the ones the restart broke among the failed."""
    raw = {"servers": "2", "rate_per_server": "20", "pool_size": "2", "base_rate": "10",
           "hold_ms": "20"}
    run_dir = lab_run(lab, tmp_path, "pooler-restart", "-e", "transaction",
                      "--duration", f"{DURATION_S}s", "--users", "6",
                      "--fault", "2s:pooler:restart", *pairs(raw))
    _manifest, rows = segments(run_dir)
    params = scenarios.resolve("pooler-restart").coerce(raw)
    persistent = [r for r in rows if r["phase"] == "persistent"]
    serverless = [r for r in rows if r["phase"] == "serverless"]
    assert {r["endpoint"] for r in rows} == {"transaction"}
    scheduled = servers_scheduled(params, run_dir, "pooler-restart", "transaction", 2,
                                  DURATION_S)
    assert_accounted(scheduled, persistent, "persistent")
    got = assert_accounted(invocations_scheduled(params, DURATION_S), serverless, "serverless")
    assert got["succeeded"] > 10, got
    assert (run_dir / "faults.jsonl").exists()
