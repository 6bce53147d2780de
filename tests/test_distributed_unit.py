"""The parts of distributed load that need no stack: addresses, the checks of `lab run
--master-bind`, the workers' locustfile, where the master writes a worker's files, the
manifest's record of workers and the report's words for them. The real thing (a master and two
`lab worker` processes on the real stack) is tests/test_distributed.py."""

from __future__ import annotations

import json
import os
import stat
import subprocess

import pytest

from lab import analysis
from lab.distributed import master, worker, wrapper
from lab.errors import ConfigError
from lab.run import RunSpec
from tests.conftest import LAB, ROOT


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1", ("127.0.0.1", 5557)), ("10.0.0.5:6000", ("10.0.0.5", 6000)),
    ("[::1]:5600", ("::1", 5600)), ("host.example", ("host.example", 5557))])
def test_addresses(text, expected):
    assert worker.parse_address(text, "--master") == expected


@pytest.mark.parametrize("text", [":5557", "10.0.0.5:x", "10.0.0.5:70000"])
def test_bad_addresses_name_the_flag(text):
    with pytest.raises(ConfigError) as err:
        worker.parse_address(text, "--master-bind")
    assert "--master-bind" in err.value.one_line()


@pytest.mark.parametrize("spec, said", [
    (RunSpec("serverless-burst", master_bind="127.0.0.1", workers=2), "--expect-workers N"),
    (RunSpec("serverless-burst", expect_workers=2), "--master-bind"),
    (RunSpec("serverless-burst", master_bind="127.0.0.1", expect_workers=0), "--expect-workers"),
    (RunSpec("serverless-burst", master_bind="127.0.0.1", ui=True), "--ui")])
def test_run_refuses_what_distributed_load_cannot_do(spec, said):
    with pytest.raises(ConfigError) as err:
        spec.check()
    assert said in err.value.one_line()


def test_the_workers_locustfile_carries_the_segment_and_points_at_the_workers_files(tmp_path):
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\nxyz\n-----END CERTIFICATE-----\n")
    uri = f"postgresql://postgres:s3cret@10.1.2.3:6543/postgres?sslmode=verify-full&sslrootcert={ca}"
    env = {"LAB_ENDPOINT": "transaction", "LAB_SCENARIO": "serverless-burst",
           "LAB_TARGET_URI": uri, "LAB_TARGET_URIS": json.dumps({"transaction": uri}),
           "LAB_PARAMS": "{}", "LAB_SEED": "7", "LAB_WORKERS": "2", "LAB_RUN_TIME": "6",
           "LAB_RUN_DIR": "/master/only", "LAB_CLOCK_OFFSET": "1.0"}
    text = wrapper.render(ROOT / "scenarios" / "serverless_burst.py", env, "run-1",
                          "serverless-burst.transaction", last=True)
    compile(text, "wrapper", "exec")  # a locustfile Locust can import
    path = wrapper.write_private(text, "serverless-burst.transaction")
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    finally:
        wrapper.remove_private(path)
    assert not path.parent.exists()
    data = wrapper.unpack(text.split("unpack(", 1)[1].split(")", 1)[0].strip("'\""))
    assert "LAB_RUN_DIR" not in data["settings"] and "LAB_CLOCK_OFFSET" not in data["settings"]
    assert "class ServerlessFunction" in data["source"] or "InvocationUser" in data["source"]

    # on the master (no LAB_WORKER_DIR): nothing changes
    master_env = {"LAB_RUN_DIR": "/master/only"}
    assert wrapper.apply_worker_environment(data, master_env) is None
    assert master_env == {"LAB_RUN_DIR": "/master/only"}
    # on a worker: the settings, its own run directory, the CA written there and named
    worker_env = {wrapper.WORKER_DIR_ENV: str(tmp_path / "w"), "LAB_CLOCK_OFFSET": "5"}
    run_dir = wrapper.apply_worker_environment(data, worker_env)
    assert run_dir == tmp_path / "w" / "run-1" / "serverless-burst.transaction"
    assert worker_env["LAB_RUN_DIR"] == str(run_dir)
    assert worker_env["LAB_SEED"] == "7" and worker_env["LAB_WORKERS"] == "2"
    assert "LAB_CLOCK_OFFSET" not in worker_env
    local_ca = run_dir / "ca-0.crt"
    assert local_ca.read_text() == ca.read_text()
    assert f"sslrootcert={local_ca}" in worker_env["LAB_TARGET_URI"]
    assert str(ca) not in worker_env["LAB_TARGET_URIS"]
    note = json.loads((tmp_path / "w" / wrapper.SEGMENT_FILE).read_text())
    assert note["segment"] == "serverless-burst.transaction" and note["last"] is True


def test_the_master_writes_a_workers_files_under_names_of_its_own(tmp_path):
    dest = master.destination(tmp_path, "requests/part-0-000003.arrow", 1, "vm_abc")
    assert dest == tmp_path / "requests" / f"part-1-{master.node_tag('vm_abc')}-000003.arrow"
    # the same file sent twice lands on itself; another worker's never does
    assert dest == master.destination(tmp_path, "requests/part-0-000003.arrow", 1, "vm_abc")
    assert dest != master.destination(tmp_path, "requests/part-0-000003.arrow", 1, "vm_def")
    # a worker of an older lab sends Parquet chunks: kept as they are
    assert master.destination(tmp_path, "requests/part-0-000003.parquet", 1, "vm_abc") == \
        tmp_path / "requests" / f"part-1-{master.node_tag('vm_abc')}-000003.parquet"
    # a schedule or live file is written under the sender's own index
    assert master.destination(tmp_path, "schedule/transaction-0.json", 1, "a") == \
        tmp_path / "schedule" / "transaction-1.json"
    for bad in ("requests/../../x.parquet", "../manifest.json", "manifest.json",
                "requests/part-0-1.json", "schedule/.hidden-0.json", "live/a/b-0.json",
                "requests/evil.parquet"):
        assert master.destination(tmp_path, bad, 0, "a") is None, bad


def test_the_manifest_and_report_name_every_worker_that_did_not_finish():
    summary = master.summarize({"expected": 3, "workers": [
        {"index": 0, "host": "load-a", "node": "n0", "chunks": 6, "done": {"rows": 90}},
        {"index": 1, "host": "load-b", "node": "n1", "chunks": 3, "done": None,
         "missing_at": 100.5}]})
    assert summary["never_joined"] == 1 and summary["lost"] == [1]
    assert summary["joined"][0]["rows"] == 90 and summary["joined"][0]["finished"]
    manifest = {"distributed": {"master_bind": "10.0.0.5:5557", "expect_workers": 3,
                                "tls": True},
                "segments": [{"scenario": "serverless-burst", "endpoint": "transaction",
                              "workers": summary}]}
    said = analysis._distributed_warnings(manifest, manifest["segments"], 1)
    text = analysis.distributed_text(manifest)
    assert text.startswith("The load came from 3 workers")
    assert "load-a, load-b" in text and "over TLS" in text
    assert any(s.startswith("Worker 1 (load-b) did not finish serverless-burst -> "
                            "transaction") for s in said), said
    assert any("1 of 3 workers never joined" in s for s in said), said
    assert analysis._distributed_warnings({}, [], 1) == [] and not analysis.distributed_text({})


def lab_worker(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*LAB, "worker", *args], capture_output=True, text=True, timeout=60,
                          cwd=ROOT, stdin=subprocess.DEVNULL, env=dict(os.environ, NO_COLOR="1"))


def test_lab_worker_beyond_loopback_needs_the_join_code_in_one_line():
    proc = lab_worker("--master", "10.255.255.1:5557")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "beyond loopback" in last and "--join CODE" in last, proc.stderr
    proc = lab_worker("--master", "10.255.255.1", "--join", "not-a-code")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "join code is malformed" in proc.stderr.strip().splitlines()[-1], proc.stderr


def test_lab_run_master_bind_on_a_port_in_use_is_one_line(tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        spec = RunSpec("serverless-burst", master_bind=f"127.0.0.1:{port}")
        with pytest.raises(ConfigError) as err:
            master.Master.open(spec, "run-1", print)
    assert f"port {port} on 127.0.0.1 is in use" in err.value.one_line()
    assert "another --master-bind" in err.value.one_line()

