"""`lab run` for real: Locust child processes, the connection sampler and the run directory,
judged by what a user finds in reports/<run-id>/. One small lab (max_connections 20, pool size
3, query_wait_timeout 5 s) serves the module, and its twin with session_overflow = queue the
session-mode queue; every run lasts a few seconds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.compute as pc
import pytest

from lab import analysis, samples
from tests.conftest import LAB, ROOT, lab_cli

pytestmark = [pytest.mark.stack, pytest.mark.timeout(300)]

MAX_CONNECTIONS, POOL_SIZE = 20, 3
BURST = ["-P", "base_rate=30", "-P", "spike_rate=150", "-P", "spike_every=3",
         "-P", "spike_length=1.5", "-P", "spike_offset=0.5", "-P", "hold_ms=150"]


@pytest.fixture(scope="module")
def lab(lab_factory):
    return lab_factory("--max-connections", str(MAX_CONNECTIONS), "--pool-size", str(POOL_SIZE),
                       "--query-wait-timeout", "5")


@pytest.fixture(scope="module")
def queue_lab(lab_factory):
    """Supavisor before 2.8: session clients beyond the pool log in and queue."""
    return lab_factory("--max-connections", str(MAX_CONNECTIONS), "--pool-size", str(POOL_SIZE),
                       "--query-wait-timeout", "5", "--session-overflow", "queue")


def run_dir_of(proc) -> Path:
    return Path(proc.stdout.strip().splitlines()[-1])


def lab_run(lab, tmp_path, *args) -> Path:
    proc = lab.cli("run", *args, "--reports-dir", str(tmp_path), timeout=200)
    path = run_dir_of(proc)
    assert path.is_dir() and path.parent == tmp_path
    return path


def connection_records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "connections.jsonl").read_text().splitlines()]


def no_secret_in(run_dir: Path, secrets: list[str]) -> None:
    for path in run_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for secret in secrets:
                assert secret.encode() not in data, path


def lab_secrets(lab) -> list[str]:
    data = json.loads((lab.home / lab.name / "secrets.json").read_text())
    return [data["postgres_password"], data["pgbouncer_password"], data["admin_password"]]


def segment_window(manifest: dict, endpoint: str) -> tuple[float, float]:
    from datetime import datetime

    seg = next(s for s in manifest["segments"] if s["endpoint"] == endpoint)
    return (datetime.fromisoformat(seg["started_at"]).timestamp(),
            datetime.fromisoformat(seg["ended_at"]).timestamp())


def test_bursts_exhaust_direct_but_not_the_transaction_pooler(lab, tmp_path):
    run_dir = lab_run(lab, tmp_path, "serverless-burst", "-e", "direct", "-e", "transaction",
                      "--duration", "6s", "--cooldown", "2s", "--users", "40", *BURST)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["format"] == "manifest/1" and manifest["interrupted"] is False
    assert [s["endpoint"] for s in manifest["segments"]] == ["direct", "transaction"]
    assert all(s["spikes"] for s in manifest["segments"])
    assert manifest["lab"]["max_connections"] == MAX_CONNECTIONS
    assert "lab run serverless-burst --endpoint direct --endpoint transaction" in \
        manifest["reproduce"]
    assert (run_dir / "requests.parquet").exists() and not (run_dir / "requests").exists()
    assert list((run_dir / "locust").glob("serverless-burst.direct_stats*.csv"))
    no_secret_in(run_dir, lab_secrets(lab))

    table = samples.read_requests(run_dir)
    by_endpoint = {}
    for endpoint in ("direct", "transaction"):
        rows = table.filter(pc.equal(table.column("endpoint"), endpoint))
        by_endpoint[endpoint] = rows
        assert rows.num_rows > 50, endpoint
    direct_errors = by_endpoint["direct"].filter(pc.invert(by_endpoint["direct"].column("ok")))
    assert "too_many_clients" in direct_errors.column("error_class").to_pylist()
    # The transaction pooler refuses nobody: every request that started succeeded. (Arrivals
    # the 40 users could not start in time, on a slow machine, are not_started rows: the load
    # generator's limit, accounted in tests/test_accounting.py, not the pooler's.)
    tx = by_endpoint["transaction"]
    started = tx.filter(pc.not_equal(tx.column("error_class").fill_null(""), "not_started"))
    assert started.num_rows > 50
    assert pc.all(started.column("ok")).as_py(), started.column("error_class").to_pylist()

    # While the transaction segment ran, Postgres held at most POOL_SIZE backends from the
    # shared pooler host, whatever the number of clients.
    start, end = segment_window(manifest, "transaction")
    pg = [r for r in connection_records(run_dir)
          if r["target"] == "postgres" and r["ok"] and start <= r["t"] <= end]
    assert pg, "no Postgres samples during the transaction segment"
    assert max(r["by_origin"].get("shared", 0) for r in pg) <= POOL_SIZE
    tx = [r for r in connection_records(run_dir)
          if r["target"] == "transaction" and r["ok"] and start <= r["t"] <= end]
    assert max(r["pools"]["cl_active"] + r["pools"]["cl_waiting"] for r in tx) > POOL_SIZE


SESSION_REFUSED = "client connections exceeded (max_user_client_connections)"


def test_session_mode_refuses_extra_invocations_at_connect(lab, tmp_path):
    """session_overflow = refuse (the default, Supavisor 2.8+): invocation POOL_SIZE+1 is
    refused at login, never queued, and the report names the session-mode limit."""
    run_dir = lab_run(lab, tmp_path, "serverless-burst", "-e", "session", "--duration", "6s",
                      "--users", "15", *BURST)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["lab"]["session_overflow"] == "refuse"
    assert "--session-overflow refuse" in manifest["reproduce"]
    records = [r for r in connection_records(run_dir) if r["target"] == "session" and r["ok"]]
    assert max(r["pools"]["sv_active"] for r in records) <= POOL_SIZE
    assert max(r["pools"]["cl_active"] + r["pools"]["cl_waiting"] for r in records) <= POOL_SIZE
    table = samples.read_requests(run_dir)
    failed = table.filter(pc.invert(table.column("ok")))
    refused = failed.filter(pc.equal(failed.column("error_class"), "max_client_conn"))
    assert refused.num_rows > 0
    assert all(SESSION_REFUSED in m for m in refused.column("message").to_pylist())
    assert set(failed.column("error_class").to_pylist()) <= {"max_client_conn", "unfinished"}
    assert pc.max(refused.column("total_ms")).as_py() < 1000  # refused at once, not queued
    hits = [h for rec in analysis.analyze(run_dir).recommendations for h in rec.limits
            if h.endpoint == "session" and h.error_class == "max_client_conn"]
    assert [(h.limit, h.value) for h in hits] == [
        ("session mode max clients (pool_size; session_overflow = refuse)", POOL_SIZE)]


def test_session_mode_makes_extra_invocations_wait(queue_lab, tmp_path):
    """session_overflow = queue (Supavisor before 2.8): they log in and queue for a backend."""
    run_dir = lab_run(queue_lab, tmp_path, "serverless-burst", "-e", "session",
                      "--duration", "6s", "--users", "15", *BURST)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert "--session-overflow queue" in manifest["reproduce"]
    records = [r for r in connection_records(run_dir) if r["target"] == "session" and r["ok"]]
    assert max(r["pools"]["cl_waiting"] for r in records) > 0  # the sampler saw the queue
    assert max(r["pools"]["sv_active"] for r in records) <= POOL_SIZE
    table = samples.read_requests(run_dir)
    assert "max_client_conn" not in table.column("error_class").to_pylist()
    waited = pc.max(table.column("total_ms")).as_py()
    assert waited > 300  # far beyond one invocation's 150 ms hold: the queue, in the samples


def test_target_uri_and_several_workers(lab, tmp_path):
    direct = lab.connect()["direct"]
    run_dir = lab_run(lab, tmp_path, "serverless-burst", "--target", direct["bench_uri"],
                      "--workers", "2", "--duration", "5s", "--users", "4",
                      "-P", "spike_every=0", "-P", "base_rate=20", "-P", "hold_ms=0")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["lab"] is None and list(manifest["endpoints"]) == ["target"]
    assert "[YOUR-PASSWORD]" in manifest["endpoints"]["target"]["uri"]
    table = samples.read_requests(run_dir)
    assert set(table.column("endpoint").to_pylist()) == {"target"}
    assert len(set(table.column("worker").to_pylist())) == 2
    assert table.num_rows > 40
    assert any(r["target"] == "postgres" and r["ok"] for r in connection_records(run_dir))
    no_secret_in(run_dir, lab_secrets(lab))


def locust_processes(run_dir: Path) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if str(run_dir).encode() in cmdline:
                found.append(int(proc.name))
    return found


def start_run(lab, tmp_path, *args) -> subprocess.Popen:
    env = dict(os.environ, POOLER_LAB_HOME=str(lab.home), NO_COLOR="1")
    return subprocess.Popen([*LAB, "run", *args, "--name", lab.name, "--reports-dir",
                             str(tmp_path)], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)


def test_ctrl_c_keeps_what_was_measured_and_leaves_no_locust_behind(lab, tmp_path):
    proc = start_run(lab, tmp_path, "persistent-server", "-e", "transaction",
                     "--duration", "60s", "--users", "2", "-P", "rate_per_server=50")
    time.sleep(8)
    proc.send_signal(signal.SIGINT)  # what a terminal's Ctrl-C sends to the lab process
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    run_dir = Path(out.strip().splitlines()[-1])
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["interrupted"] is True and manifest["ended_at"]
    table = samples.read_requests(run_dir)
    assert table.num_rows > 50
    assert connection_records(run_dir)
    assert locust_processes(run_dir) == []


def report_json(lab, run_dir: Path) -> dict:
    return json.loads(lab_cli("report", str(run_dir), "--json", home=lab.home,
                              timeout=120).stdout)


def test_a_pooler_stopped_mid_run_is_an_outage_not_pool_size(lab, tmp_path):
    """Issue 8, findings 1, 3 and 5: the load and the sampler survive a stopped pooler, the
    live line says it loudly, the report names the outage and never blames the pool size, and
    the time series run to the end of the segment."""
    from lab import engine

    proc = start_run(lab, tmp_path, "persistent-server", "-e", "transaction",
                     "--duration", "16s", "--users", "2", "-P", "rate_per_server=30",
                     "-P", "checkout_timeout=2", "-P", "connect_timeout=2")
    pooler = engine.container(f"pooler-lab-{lab.name}", "pooler")
    try:
        time.sleep(5)
        stopped_at = time.time()
        pooler.stop(timeout=2)
        time.sleep(3)
        pooler.start()
        restarted_at = time.time()
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        pooler.reload()
        if pooler.status != "running":
            pooler.start()
    assert proc.returncode == 0, err
    assert "UNREACHABLE: transaction pooler" in err, err
    run_dir = Path(out.strip().splitlines()[-1])
    table = samples.read_requests(run_dir)
    failed = table.filter(pc.invert(table.column("ok")))
    classes = set(failed.column("error_class").to_pylist())
    assert classes & {"connection_refused", "connection_lost"}, classes
    late = table.filter(pc.greater(table.column("start"), restarted_at + 3))
    assert late.num_rows > 0 and pc.any(late.column("ok")).as_py()  # the load went on
    records = [r for r in connection_records(run_dir) if r["target"] == "transaction"]
    gap = [r for r in records if not r["ok"] and r["t"] >= stopped_at]
    after = [r for r in records if r["ok"] and r["t"] > restarted_at]
    assert gap and after  # the sampler recorded the gap and kept sampling

    data = report_json(lab, run_dir)
    (seg,) = data["segments"]
    assert "pool_timeout" not in seg["failed"], seg["failed"]
    assert seg["scheduled"] == seg["succeeded"] + sum(seg["failed"].values()) + seg[
        "not_started"]
    start, _ = segment_window(json.loads((run_dir / "manifest.json").read_text()),
                              "transaction")
    (outage,) = [o for o in data["outages"] if o["endpoint"] == "transaction"]
    assert abs(outage["start_s"] - (stopped_at - start)) < 3, outage
    assert outage["end_s"] is not None and outage["end_s"] < restarted_at - start + 3
    assert not any(r["endpoint"] == "transaction" for r in data["recommendations"]), data


def test_repeats_are_interleaved_with_the_same_seed_and_give_intervals(lab, tmp_path):
    run_dir = lab_run(lab, tmp_path, "persistent-server", "-e", "transaction", "-e", "direct",
                      "--duration", "4s", "--cooldown", "0s", "--repeat", "2", "--users", "2",
                      "-P", "rate_per_server=40")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["load"]["repeat"] == 2 and "--repeat 2" in manifest["reproduce"]
    assert [(s["endpoint"], s["repeat"]) for s in manifest["segments"]] == [
        ("transaction", 1), ("direct", 1), ("transaction", 2), ("direct", 2)]
    assert all(isinstance(s["noise"]["load_avg"], list) for s in manifest["segments"])
    assert sorted((run_dir / "locust").glob("persistent-server.direct.r2*.csv"))
    table = samples.read_requests(run_dir)
    assert set(table.column("repeat").to_pylist()) == {1, 2}
    data = report_json(lab, run_dir)
    assert {s["endpoint"]: s["repeats"] for s in data["segments"]} == {
        "transaction": 2, "direct": 2}
    for seg in data["segments"]:
        assert seg["scheduled"] == seg["succeeded"] + sum(seg["failed"].values()) + seg[
            "not_started"]
        for p in ("p50", "p95", "p99"):
            est = seg["latency_ms"][p]
            low, high = est["ci"]
            assert low <= est["value"] <= high, (seg["endpoint"], p, est)
    assert data["ci_method"]


def test_a_locustfile_of_ones_own_by_path_with_a_live_progress_line(lab, tmp_path):
    # Relative to where the user stands (lab_cli runs in ROOT), as a user would type it.
    probe = "tests/locustfiles/session_probe.py"
    proc = lab.cli("run", probe, "-e", "session", "--duration", "3s", "--users", "2",
                   "-P", "query=select 2", "--reports-dir", str(tmp_path), timeout=120)
    assert "req/s" in proc.stderr and "p95" in proc.stderr and "backends" in proc.stderr
    run_dir = run_dir_of(proc)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["scenario"]["name"] == "session-probe"
    assert manifest["scenario"]["params"]["query"] == "select 2"
    assert "tests/locustfiles/session_probe.py" in manifest["reproduce"]
    table = samples.read_requests(run_dir)
    assert table.num_rows > 10 and pc.all(table.column("ok")).as_py()
    assert set(table.column("endpoint").to_pylist()) == {"session"}


def test_a_locustfile_locust_cannot_load_is_a_one_line_error_that_keeps_the_run(lab, tmp_path):
    broken = tmp_path / "broken_locustfile.py"
    broken.write_text('"""Imports what is not installed."""\nimport no_such_module_here\n')
    reports = tmp_path / "reports"
    proc = lab.cli("run", str(broken), "-e", "transaction", "-e", "direct", "--duration", "5s",
                   "--reports-dir", str(reports), check=False, timeout=120)
    assert proc.returncode == 5, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "No module named 'no_such_module_here'" in errors[0]
    assert "fix: read " in errors[0] and "broken-locustfile.transaction.log" in errors[0]
    (run_dir,) = reports.iterdir()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    # The run stopped at the first segment; its manifest says why and is complete.
    assert [s["endpoint"] for s in manifest["segments"]] == ["transaction"]
    assert "no_such_module_here" in manifest["segments"][0]["failed"]
    assert manifest["ended_at"] and manifest["reproduce"]
    assert str(run_dir) in errors[0]


@pytest.mark.heavy  # make test-heavy (.ci/run): keeps make test under 20 minutes
def test_the_locust_web_ui_serves_the_run(lab, tmp_path):
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = start_run(lab, tmp_path, "persistent-server", "-e", "direct", "--duration", "8s",
                     "--users", "1", "--ui", "--web-port", str(port))
    try:
        page = None
        for _ in range(40):
            time.sleep(0.5)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as resp:
                    page = resp.read().decode(errors="replace")
                    break
            except OSError:
                continue
        assert page and "locust" in page.lower()
        # Locust's statistics count the load while it runs (successes fed a second at a time,
        # lab.locust_stats), as its UI shows them
        counted = 0
        for _ in range(24):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats/requests",
                                            timeout=2) as resp:
                    stats = json.loads(resp.read())
                counted = max(e["num_requests"] for e in stats["stats"]
                              if e["name"] == "Aggregated")
            except (OSError, ValueError, KeyError):
                pass
            if counted > 0:
                break
            time.sleep(0.5)
        assert counted > 0, "Locust's web UI counted no request while the load ran"
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert samples.read_requests(Path(out.strip().splitlines()[-1])).num_rows > 0


@pytest.mark.heavy  # make test-heavy (.ci/run, which also runs make demo: lab bench)
def test_bench_writes_one_report_of_both_workloads_on_all_endpoints(lab, tmp_path):
    proc = lab.cli("bench", "--quick", "--duration", "1s", "--cooldown", "0s",
                   "--reports-dir", str(tmp_path), timeout=280)
    html = Path(proc.stdout.strip().splitlines()[-1])
    assert html.name == "report.html" and html.exists()
    run_dir = html.parent
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["command"][:3] == ["lab", "bench", "--quick"]
    assert [(s["scenario"], s["endpoint"]) for s in manifest["segments"]] == [
        (scenario, endpoint) for scenario in ("serverless-burst", "persistent-server")
        for endpoint in ("direct", "session", "transaction", "dedicated")]
    assert all(s["poolers_reset"] == {"dedicated": 0, "session": 0, "transaction": 0}
               for s in manifest["segments"])
    table = samples.read_requests(run_dir)
    pairs = {(r["scenario"], r["endpoint"]) for r in
             table.select(["scenario", "endpoint"]).to_pylist()}
    assert len(pairs) == 8
    text = (run_dir / "report.md").read_text()
    assert "### serverless-burst" in text and "### persistent-server" in text
