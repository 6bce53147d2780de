"""Locust's distributed mode through the lab, on the real stack: `lab run --master-bind` and two
`lab worker` processes, each in its own working directory, as a user with several machines
runs them (here on one machine). The merged samples are checked against the seeded schedule
(each worker's share of it, exactly once); a worker killed mid-segment and a worker that never
joins are in the manifest and the report; beyond loopback the master's port takes TLS and the
printed join code, and refuses a worker without it."""

from __future__ import annotations

import collections
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from lab import samples, scenarios
from lab import schedule as schedmod
from tests.conftest import LAB, ROOT, lab_cli, load_start

# ~90 s: in `make test-heavy` (.ci/run runs it); tests/test_distributed_unit.py covers the parts
pytestmark = [pytest.mark.stack, pytest.mark.heavy, pytest.mark.timeout(300)]

SEED = 5
DURATION_S = 6
BURST = {"base_rate": "10", "spike_rate": "40", "spike_every": "4", "spike_length": "1.5",
         "spike_offset": "1", "hold_ms": "100"}


@pytest.fixture(scope="module")
def lab(lab_factory):
    return lab_factory("--tier", "micro")


def loopback(k: int) -> str:
    """A loopback address of the master's own, away from the labs' (tests.conftest)."""
    return f"127.0.{10 + os.getpid() % 200}.{240 + k}"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def pairs(params: dict[str, str]) -> list[str]:
    return [arg for key, value in params.items() for arg in ("-P", f"{key}={value}")]


def start(args: list[str], lab, cwd: Path) -> subprocess.Popen:
    cwd.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, POOLER_LAB_HOME=str(lab.home), NO_COLOR="1",
               PYTHONPATH=str(ROOT))
    return subprocess.Popen([*LAB, *args], env=env, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
                            start_new_session=True)


def master(lab, tmp_path: Path, bind: str, workers: int, *extra: str) -> subprocess.Popen:
    return start(["run", "serverless-burst", "--name", lab.name, "--master-bind", bind,
                  "--expect-workers", str(workers), "--duration", f"{DURATION_S}s",
                  "--users", "8", "--seed", str(SEED), "--cooldown", "1s",
                  "--reports-dir", str(tmp_path / "reports"), *pairs(BURST), *extra],
                 lab, tmp_path / "master")


def worker(lab, tmp_path: Path, k: int, address: str, *extra: str) -> subprocess.Popen:
    return start(["worker", "--master", address, "--dir", str(tmp_path / f"w{k}" / "files"),
                  *extra], lab, tmp_path / f"w{k}")


def finish(*procs: subprocess.Popen, timeout: float = 150) -> list[tuple[int, str, str]]:
    out = []
    deadline = time.time() + timeout
    for proc in procs:
        try:
            stdout, stderr = proc.communicate(timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate(timeout=10)
        out.append((proc.returncode, stdout, stderr))
    return out


def kill_all(*procs: subprocess.Popen) -> None:
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def shares(workers: int) -> list[int]:
    params = scenarios.resolve("serverless-burst").coerce(BURST)
    whole = schedmod.from_params(params)
    counts = []
    for k in range(workers):
        share, seed, phase = schedmod.worker_share(whole, SEED, k, workers, stream="serverless")
        counts.append(sum(1 for _ in schedmod.arrivals(share, seed, phase=phase,
                                                       until=DURATION_S)))
    return counts


def test_two_workers_on_loopback_generate_each_share_exactly_once(lab, tmp_path):
    address = f"{loopback(0)}:{free_port(loopback(0))}"
    run = master(lab, tmp_path, address, 2, "-e", "direct", "-e", "transaction")
    time.sleep(1.0)
    workers = [worker(lab, tmp_path, k, address) for k in (1, 2)]
    try:
        (rc, out, err), *served = finish(run, *workers)
    finally:
        kill_all(run, *workers)
    assert rc == 0, err[-2000:]
    for code, wout, werr in served:  # each served both segments, then exited by itself
        assert code == 0, werr[-1500:]
        assert "served 2 segment(s) of 1 run(s)" in wout, (wout, werr[-800:])
    run_dir = Path(out.strip().splitlines()[-1])
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["distributed"]["expect_workers"] == 2
    assert manifest["distributed"]["tls"] is False
    assert "--master-bind" in manifest["reproduce"]
    rows = samples.read_requests(run_dir).to_pylist()
    expected = shares(2)
    assert sum(expected) > 80
    for segment in manifest["segments"]:
        info = segment["workers"]
        assert info["expected"] == 2 and info["never_joined"] == 0 and info["lost"] == [], info
        assert sorted(w["index"] for w in info["joined"]) == [0, 1], info
        mine = [r for r in rows if r["endpoint"] == segment["endpoint"]]
        per_worker = collections.Counter(r["worker"] for r in mine)
        # every arrival of each worker's share has one row: succeeded, failed or not started
        assert [per_worker[k] for k in range(2)] == expected, (segment["endpoint"], per_worker)
        assert sum(r["ok"] for r in mine) > sum(expected) / 2, segment["endpoint"]
        assert sum(w["rows"] for w in info["joined"]) == len(mine), info
        # the seeded schedule of each worker, as `lab run --workers 2` draws it on one machine
        assert segment["unserved"] == sum(1 for r in mine if r["error_class"] == "not_started")
    # the run directory holds no password, and no worker file stays on the workers
    for path in run_dir.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".log", ".csv", ".jsonl", ".md"):
            assert lab.password not in path.read_text(errors="replace"), path
    lab_cli("report", str(run_dir), home=lab.home)
    report = (run_dir / "report.md").read_text()
    assert "The load came from 2 workers" in report, report[:3000]


def test_a_worker_that_dies_or_never_joins_is_in_the_manifest_and_report(lab, tmp_path):
    address = f"{loopback(1)}:{free_port(loopback(1))}"
    run = master(lab, tmp_path, address, 2, "-e", "transaction")
    time.sleep(1.0)
    workers = [worker(lab, tmp_path, k, address) for k in (1, 2)]
    try:
        # kill worker 2's Locust process 3 s into the load (its chunks so far stay)
        t0 = load_start(tmp_path / "reports", "transaction", run, timeout=90)
        time.sleep(max(0.0, t0 + 3 - time.time()))
        import psutil  # Locust's own dependency

        # the machine dies: `lab worker` and its Locust worker process (a session of its own)
        doomed = psutil.Process(workers[1].pid)
        for proc in [*doomed.children(recursive=True), doomed]:
            proc.kill()
        (rc, out, err), (rc1, _o1, err1) = finish(run, workers[0])
    finally:
        kill_all(run, *workers)
    assert rc == 0, err[-2000:]
    assert rc1 == 0, err1[-1500:]
    run_dir = Path(out.strip().splitlines()[-1])
    manifest = json.loads((run_dir / "manifest.json").read_text())
    info = manifest["segments"][0]["workers"]
    assert len(info["joined"]) == 2 and len(info["lost"]) == 1, info
    (lost,) = [w for w in info["joined"] if not w["finished"]]
    assert lost["chunks"] >= 1, lost  # what it measured before it died reached the master
    rows = samples.read_requests(run_dir).to_pylist()
    by_worker = collections.Counter(r["worker"] for r in rows)
    finished = next(w for w in info["joined"] if w["finished"])
    assert by_worker[finished["index"]] == shares(2)[finished["index"]]
    assert 0 < by_worker[lost["index"]] < shares(2)[lost["index"]]
    lab_cli("report", str(run_dir), home=lab.home)
    report = (run_dir / "report.md").read_text()
    assert f"Worker {lost['index']} (" in report and "did not finish" in report, report[:3000]

    # one worker for two expected: the segment does not start, and says why in one line
    address = f"{loopback(2)}:{free_port(loopback(2))}"
    run = master(lab, tmp_path / "again", address, 2, "-e", "transaction",
                 "--worker-wait", "8s")
    time.sleep(1.0)
    alone = worker(lab, tmp_path / "again", 1, address)
    try:
        ((rc, out, err),) = finish(run)
    finally:
        kill_all(run, alone)
    assert rc != 0
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: only 1 of 2 workers joined within 8 s"), err[-1500:]
    assert "Traceback" not in err
    run_dir = next((tmp_path / "again" / "reports").iterdir())
    segment = json.loads((run_dir / "manifest.json").read_text())["segments"][0]
    assert segment["workers"]["never_joined"] == 1, segment


def host_address() -> str | None:
    """This machine's address beyond loopback (the Docker bridge's at least), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: the route picks the address
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_beyond_loopback_the_master_takes_tls_and_the_join_code(lab, tmp_path):
    host = host_address()
    if host is None:
        pytest.skip("no address beyond loopback on this machine")
    address = f"{host}:{free_port(host)}"
    run = master(lab, tmp_path, address, 1, "-e", "transaction")
    code = None
    deadline = time.time() + 60
    lines = []
    while code is None and time.time() < deadline and run.poll() is None:
        line = run.stderr.readline()
        lines.append(line)
        if "--join " in line:
            code = line.split("--join ", 1)[1].split()[0]
    assert code, "".join(lines)
    intruder = worker(lab, tmp_path, 9, address)  # no code: refused before it starts
    joined = worker(lab, tmp_path, 1, address, "--join", code)
    try:
        (rc, out, err), (wrc, _wout, werr), (irc, _iout, ierr) = finish(run, joined, intruder)
    finally:
        kill_all(run, joined, intruder)
    assert rc == 0, err[-2000:]
    assert wrc == 0, werr[-1500:]
    assert irc != 0 and "give --join CODE" in ierr.strip().splitlines()[-1], ierr[-800:]
    run_dir = Path(out.strip().splitlines()[-1])
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["distributed"]["tls"] is True
    assert manifest["segments"][0]["workers"]["lost"] == []
    token = code.split(".")[0]
    for path in run_dir.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".log", ".csv", ".jsonl"):
            text = path.read_text(errors="replace")
            assert token not in text and lab.password not in text, path
    rows = samples.read_requests(run_dir).to_pylist()
    assert collections.Counter(r["worker"] for r in rows)[0] == shares(1)[0]


def test_a_worker_whose_master_goes_away_mid_run_says_so(lab, tmp_path):
    """The run is interrupted after its first segment (its master killed): `lab worker`, left
    waiting for the second segment's master, gives up with one line instead of hanging."""
    from lab.distributed.worker import serve
    from lab.errors import RunError

    address = f"{loopback(3)}:{free_port(loopback(3))}"
    run = master(lab, tmp_path, address, 1, "-e", "direct", "-e", "transaction",
                 "--cooldown", "30s")
    said: list[str] = []
    try:
        with pytest.raises(RunError) as err:
            # the master's cooldown gives time to kill it after the first segment
            def log(text: str) -> None:
                said.append(text)
                if text.startswith("served "):
                    os.killpg(run.pid, signal.SIGKILL)

            serve(address, workdir=tmp_path / "w", log=log, next_segment_wait_s=8)
    finally:
        kill_all(run)
    assert any(s.startswith("served serverless-burst.direct") for s in said), said
    assert "did not come back within 8 s after serverless-burst.direct" in err.value.message
