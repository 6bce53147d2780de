"""The Locust child process of a segment: its command line, its environment, and stopping it
with every process it forked. Locust is never imported here: gevent must stay out of the
orchestrator, whose psycopg serves the connection sampler."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from lab import clock
from lab.run.spec import RunSpec, mask_uri

STOP_GRACE_S = 15  # how long Locust gets to stop its users and write its CSV


def argv(spec: RunSpec, scenario_path: Path, segment: str, users: int, spawn_rate: float,
         run_dir: Path, master: tuple[str, int] | None = None) -> list[str]:
    """Locust's command line; with ``master`` (the address Locust itself binds: the tunnel's
    inner end beyond loopback), a master that waits for ``spec.expect_workers`` workers."""
    args = [sys.executable, "-m", "locust", "-f", str(scenario_path),
            "--users", str(users), "--spawn-rate", f"{spawn_rate:g}",
            "--run-time", f"{max(1, round(spec.duration_s))}s",
            "--csv", str((run_dir / "locust" / segment).resolve()),
            "--stop-timeout", "10", "--loglevel", "WARNING",
            # Locust's --host is only shown in its UI; the real URI travels in LAB_TARGET_URI.
            "--host", mask_uri(spec.target) if spec.target else f"lab:{segment}"]
    if master is not None:
        args += ["--master", "--master-bind-host", master[0], "--master-bind-port",
                 str(master[1]), "--expect-workers", str(spec.expect_workers),
                 "--expect-workers-max-wait", f"{max(1, round(spec.worker_wait_s))}"]
    if spec.ui:
        args += ["--web-host", "127.0.0.1", "--web-port", str(spec.web_port), "--autostart",
                 "--autoquit", "10"]
    else:
        args += ["--headless", "--only-summary"]
    if spec.workers > 1:
        args += ["--processes", str(spec.workers)]
    return args


def environment(spec: RunSpec, scenario_name: str, params: dict[str, Any], endpoint: str,
                uris: dict[str, str], run_dir: Path, repeat: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        LAB_RUN_DIR=str(run_dir.resolve()),
        LAB_ENDPOINT=endpoint,
        LAB_SCENARIO=scenario_name,
        LAB_TARGET_URI=uris[endpoint],
        LAB_TARGET_URIS=json.dumps(uris),
        LAB_PARAMS=json.dumps(dict(params)),
        LAB_SEED=str(spec.seed),
        LAB_WORKERS=str(spec.expect_workers if spec.master_bind else spec.workers),
        LAB_REPEAT=str(repeat),
        LAB_RUN_TIME=str(max(1, round(spec.duration_s))),
        PYTHONUNBUFFERED="1",
        **clock.environment(),  # one timebase with the orchestrator (lab.clock)
    )
    return env


def start(args: list[str], env: dict[str, str], log_path: Path, cwd: Path) -> subprocess.Popen:
    with open(log_path, "w") as log_file:
        return subprocess.Popen(args, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                cwd=str(cwd.resolve()))


def stop_process_group(child: subprocess.Popen) -> int | None:
    """Stop a Locust child and every process it forked; return its exit code."""
    if child.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGTERM)  # Locust stops its users and writes its CSV
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=STOP_GRACE_S)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGKILL)  # workers of --processes, whatever is left
    try:
        return child.wait(timeout=10)
    except subprocess.TimeoutExpired:
        return None


def last_line(path: Path) -> str:
    """The last meaningful line of a Locust log (its error), at most 300 characters."""
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines()]
    except OSError:
        return "no log"
    lines = [ln for ln in lines if ln and not ln.startswith("^")]
    return (lines[-1] if lines else "no output")[:300]
