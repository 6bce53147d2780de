"""Faults in a real run: injected on schedule into every segment, seen on the live line,
measured per endpoint in the report; bad --fault input is one line; `lab status` names a
service that is down and `lab up` brings it back."""

from __future__ import annotations

import json
from pathlib import Path

import docker
import pytest

from tests.conftest import lab_cli

pytestmark = pytest.mark.stack

KILL_S = 3.0
# psycopg_pool reconnects with a backoff (1 s, then longer, with jitter) after its connections
# broke; the container's own start adds under a second here
POOL_RECONNECT_S = 5.0


@pytest.fixture(scope="module")
def lab(lab_factory):
    return lab_factory()


def test_a_killed_pooler_is_measured_per_endpoint_and_workload(lab, tmp_path):
    reports = tmp_path / "reports"
    proc = lab.cli("run", "pooler-restart", "-e", "transaction", "-e", "direct",
                   "--duration", "14s", "--cooldown", "0s",
                   "--fault", f"5s:pooler:kill:{KILL_S:g}s",
                   "--reports-dir", str(reports), timeout=300)
    run_dir = Path(proc.stdout.strip().splitlines()[-1])
    assert "!! FAULT: pooler killed for 3 s" in proc.stdout + proc.stderr
    events = [json.loads(line) for line in (run_dir / "faults.jsonl").read_text().splitlines()]
    assert [(e["segment"], e["phase"], e["ok"]) for e in events] == [
        ("pooler-restart.transaction", "inject", True), ("pooler-restart.transaction", "recover",
                                                         True),
        ("pooler-restart.direct", "inject", True), ("pooler-restart.direct", "recover", True)]
    for inject in events[::2]:
        assert abs(inject["t"] - inject["planned_t"]) < 0.5
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["faults"][0]["text"] == "5s:pooler:kill:3s"
    assert "--fault 5s:pooler:kill:3s" in manifest["reproduce"]
    data = json.loads(lab_cli("report", str(run_dir), "--json", home=lab.home).stdout)
    faults = {(s["endpoint"], s["phase"]): s["faults"] for s in data["segments"]}
    for phase in ("serverless", "persistent"):
        direct = faults[("direct", phase)][0]
        assert not direct["failed_during"] and not direct["failed_after"], direct
        hit = faults[("transaction", phase)][0]
        assert sum(hit["failed_during"].values()) > 0, hit
        assert set(hit["failed_during"]) <= {"connection_refused", "connection_lost"}, hit
        # whole again no sooner than the pooler is back, and no later than a pool's reconnect
        limit = KILL_S + POOL_RECONNECT_S
        assert KILL_S <= hit["recovered_s"] <= limit, (phase, hit)
        assert KILL_S <= hit["first_success_s"] <= limit, (phase, hit)
        assert hit["backends"]["during"] == 0 and hit["backends"]["after"] >= 1
    lab_cli("report", str(run_dir), home=lab.home)
    report = (run_dir / "report.md").read_text()
    assert "## Faults" in report and "### Under the injected faults" in report
    assert "transaction (serverless): pooler killed for 3 s at 5.0 s:" in report
    assert lab.status()["running"]  # the injector started the pooler again


@pytest.mark.parametrize("fault, said", [
    ("5s:pooler:explode", "unknown action 'explode'"),
    ("50s:pooler:kill", "50"),
    ("5s:dedicated:disconnect", "dedicated"),
])
def test_bad_faults_are_one_line_and_nothing_runs(lab, tmp_path, fault, said):
    proc = lab.cli("run", "serverless-burst", "--duration", "10s", "--fault", fault,
                   "--reports-dir", str(tmp_path), check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "fix:" in lines[0]
    assert said in lines[0] and "Traceback" not in proc.stderr
    assert not list(tmp_path.iterdir())  # nothing was written


def test_status_names_the_service_that_is_down_and_up_brings_it_back(lab):
    client = docker.from_env()
    project = f"pooler-lab-{lab.name}"
    pooler = client.containers.list(filters={"label": [f"com.docker.compose.project={project}",
                                                       "com.docker.compose.service=pooler"]})[0]
    pooler.stop(timeout=5)
    try:
        proc = lab.cli("status", check=False)
        assert proc.returncode == 4, proc.stdout + proc.stderr
        assert "pooler exited" in proc.stderr and "lab up" in proc.stderr
        assert "not running" not in proc.stderr.replace("not every service is running", "")
        assert "direct" in proc.stdout  # what still runs is still shown
        data = lab.status()
        assert data["down"] == {"pooler": "exited"} and not data["running"]
        assert "error" in data["endpoints"]["transaction"]
        assert data["postgres"]["ok"]
    finally:
        lab.cli("up")
    assert lab.status()["running"]
    assert lab.cli("status").returncode == 0


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 kB file system for a run directory (needs root, as CI runs)."""
    import os
    import subprocess

    mount = tmp_path / "tiny"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs",
                                            str(mount)], capture_output=True).returncode:
        pytest.skip("needs root to mount a small tmpfs")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_disk_ends_the_run_in_one_line_and_leaves_no_process(lab, tiny_disk):
    import subprocess

    proc = lab.cli("run", "serverless-burst", "-e", "transaction", "-e", "direct",
                   "--duration", "6s", "--cooldown", "0s", "--reports-dir", str(tiny_disk),
                   check=False, timeout=240)
    assert proc.returncode == 5, proc.stdout[-500:] + proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and "fix:" in last and "Traceback" not in proc.stderr
    assert "No space left on device" in last or "is full" in last
    run_dirs = list(tiny_disk.iterdir())
    assert len(run_dirs) == 1 and (run_dirs[0] / "manifest.json").exists()
    left = subprocess.run(["pgrep", "-f", str(tiny_disk)], capture_output=True, text=True)
    assert left.stdout.strip() == "", "a Locust process outlived the run"
    assert lab.status()["running"]


def test_a_container_stopped_outside_the_runs_faults_ends_it_with_exit_4(lab, tmp_path):
    """What a Docker engine restart does to a lab (it stops every container), on one service:
    the run goes on to its end, keeps what it measured, names the outage in its report and
    ends in one line naming `lab up`."""
    import threading

    client = docker.from_env()
    project = f"pooler-lab-{lab.name}"
    dedicated = client.containers.list(filters={"label": [
        f"com.docker.compose.project={project}", "com.docker.compose.service=dedicated"]})[0]
    reports = tmp_path / "reports"
    timer = threading.Timer(6.0, lambda: dedicated.stop(timeout=2))
    timer.start()
    try:
        proc = lab.cli("run", "persistent-server", "-e", "dedicated", "--duration", "12s",
                       "--reports-dir", str(reports), check=False, timeout=240)
    finally:
        timer.cancel()
    try:
        assert proc.returncode == 4, proc.stdout[-500:] + proc.stderr[-1500:]
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("error:") and "dedicated exited" in last, last
        assert f"lab up --name {lab.name}" in last and "Traceback" not in proc.stderr
        run_dir = next(reports.iterdir())
        doc = json.loads((run_dir / "manifest.json").read_text())
        assert doc["lab_after"]["down"] == {"dedicated": "exited"}
        analysis = json.loads(lab_cli("report", str(run_dir), "--json", home=lab.home).stdout)
        assert any(o["target"] == "dedicated" and o["end_s"] is None
                   for o in analysis["outages"]), analysis["outages"]
    finally:
        lab.cli("up")
    assert lab.status()["running"]
