"""`lab sweep` on the real stack: two pool sizes (a restart between them) x two user counts x
two endpoints, interrupted after its first point by Ctrl-C (SIGINT to its process group) and
resumed; the sweep's curves and capacity answer are checked against each point's own analysis
(`lab report RUN_DIR --json`). About 80 s here."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from tests.conftest import LAB, ROOT, lab_cli

pytestmark = pytest.mark.stack

OBJECTIVE_MS = 150.0


def _doc(sweep_root):
    found = sorted(sweep_root.glob("*/sweep.json"))
    return json.loads(found[0].read_text()) if found else None


@pytest.mark.timeout(240)
def test_sweep_interrupted_then_resumed_matches_each_point(lab_factory, tmp_path):
    lab = lab_factory("--pool-size", "4")
    reports = tmp_path / "reports"
    args = [*LAB, "sweep", "serverless-burst", "--vary", "pool_size=2,4", "--vary",
            "users=2,4", "-e", "direct", "-e", "transaction", "--duration", "2s",
            "--cooldown", "0s", "-P", "spike_offset=0", "-P", "spike_length=2",
            "-P", "spike_rate=40", "-P", "hold_ms=50", "--objective", f"p99<{OBJECTIVE_MS:g}ms",
            "--reports-dir", str(reports), "--name", lab.name]
    env = dict(os.environ, POOLER_LAB_HOME=str(lab.home), NO_COLOR="1")
    started = time.monotonic()
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        while time.monotonic() - started < 90:
            doc = _doc(reports)
            if doc and doc["points"][0]["status"] == "done":
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.3)
        time.sleep(1.0)  # the second point is under way
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "--resume" in err
    doc = _doc(reports)
    sweep_dir = reports / doc["sweep_id"]
    # the lab as it was (pool_size 4) first: no restart for the first two points
    assert [p["lab"] for p in doc["points"]] == [{"pool_size": 4}] * 2 + [{"pool_size": 2}] * 2
    assert doc["points"][0]["status"] == "done" and doc["points"][0]["restarted"] is False
    assert doc["points"][1]["status"] == "interrupted" and doc["status"] == "interrupted"
    assert all(p["status"] == "pending" for p in doc["points"][2:])

    resumed = lab_cli("sweep", "--resume", str(sweep_dir), home=lab.home, timeout=200)
    assert resumed.stdout.strip().splitlines()[-1] == str(sweep_dir)
    elapsed = time.monotonic() - started
    doc = json.loads((sweep_dir / "sweep.json").read_text())
    assert doc["status"] == "finished"
    assert [p["status"] for p in doc["points"]] == ["done"] * 4
    assert doc["points"][1]["run"].endswith(".try2")  # the interrupted try is kept apart
    assert (sweep_dir / doc["points"][1]["attempts"][0]["run"]).is_dir()
    assert [bool(p["restarted"]) for p in doc["points"][1:]] == [False, True, False]
    for figure in ("latency", "failures", "connections"):
        assert (sweep_dir / "figures" / f"sweep-{figure}.png").stat().st_size > 10_000

    sweep = json.loads(lab_cli("report", str(sweep_dir), "--json", home=lab.home).stdout)
    own = {}
    for point in sweep["points"]:
        run = json.loads(lab_cli("report", str(sweep_dir / point["run"]), "--json",
                                 home=lab.home).stdout)
        assert point["segments"] == run["segments"]  # the curves are each point's numbers
        own[point["id"]] = {s["endpoint"]: s for s in run["segments"]}
        manifest = json.loads((sweep_dir / point["run"] / "manifest.json").read_text())
        assert manifest["lab"]["pool_size"] == point["lab"]["pool_size"]
        assert manifest["load"]["users"] == point["load"]["users"]
        assert manifest["scenario"]["seed"] == 1
    # the capacity answer: per users and endpoint, the smallest pool size whose p99 meets it
    for answer in sweep["capacity"]:
        candidates = sorted((p for p in sweep["points"]
                             if p["load"]["users"] == answer["workload"]["users"]),
                            key=lambda p: p["lab"]["pool_size"])
        met = [p["id"] for p in candidates
               if (own[p["id"]][answer["endpoint"]]["latency_ms"]["p99"]["value"] or 1e9)
               < OBJECTIVE_MS]
        assert answer["point"] == (met[0] if met else None), answer
    assert elapsed < 150, elapsed
