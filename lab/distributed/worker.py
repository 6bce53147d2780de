"""`lab worker`: this machine's share of a distributed run's load.

A distributed run starts one Locust master per segment (lab.run.orchestrate); a Locust worker
process lives for one segment (lab.distributed.locust_side quits it after its files are sent).
So `lab worker` starts a Locust worker (``--worker -f -``: the locustfile comes from the
master) again and again, until the run's last segment is done (``--runs`` runs; 0: until
Ctrl-C). Each Locust process writes in its own directory under the worker's (``--dir``); the
samples themselves are on the master. Beyond loopback the master's port is behind TLS and a
token (lab.distributed.tunnel): ``--join CODE``, printed by `lab run --master-bind`, carries
the token and the master certificate's fingerprint. No gevent here.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lab.distributed import DEFAULT_PORT
from lab.distributed.tunnel import is_loopback
from lab.distributed.wrapper import SEGMENT_FILE, WORKER_DIR_ENV
from lab.errors import ConfigError, RunError

Log = Callable[[str], None]
# Locust's worker asks for the locustfile for CONNECT_TIMEOUT x CONNECT_RETRY_COUNT (300 s)
# before it gives up. Between two segments of one run the next master is there in seconds (the
# cooldown, the poolers' drain, Locust's start): a master not back within this long after a
# segment that was not the run's last went away (its run was interrupted).
NEXT_SEGMENT_WAIT_S = 90.0


@dataclass(frozen=True)
class WorkerResult:
    runs: int  # runs whose last segment this worker served
    segments: int  # Locust processes that joined a master


def parse_address(text: str, flag: str) -> tuple[str, int]:
    """'HOST', 'HOST:PORT' or '[v6]:PORT' -> (host, port); ConfigError naming ``flag``."""
    text = text.strip()
    host, port = text, DEFAULT_PORT
    if text.startswith("["):
        inner, _, rest = text[1:].partition("]")
        host = inner
        if rest.startswith(":"):
            port = _port(rest[1:], text, flag)
    elif text.count(":") == 1:
        host, _, raw = text.partition(":")
        port = _port(raw, text, flag)
    if not host:
        raise ConfigError(f"{flag} {text!r} has no host", fix=f"use e.g. {flag} 127.0.0.1:5557")
    return host, port


def _port(raw: str, text: str, flag: str) -> int:
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ConfigError(f"{flag} {text!r} has no valid port",
                          fix=f"use e.g. {flag} 127.0.0.1:{DEFAULT_PORT}")
    return int(raw)


def serve(master: str, join: str | None = None, workdir: Path | None = None, runs: int = 1,
          log: Log = print, next_segment_wait_s: float = NEXT_SEGMENT_WAIT_S) -> WorkerResult:
    """Serve ``runs`` distributed runs of the master at ``master`` (0: until interrupted)."""
    host, port = parse_address(master, "--master")
    tunnel = None
    if join:
        from lab.distributed import tunnel as tunnelmod

        token, fingerprint = tunnelmod.parse_join_code(join)
        tunnel = tunnelmod.WorkerTunnel(host, port, token, fingerprint, log=log).start()
        locust_host, locust_port = "127.0.0.1", tunnel.port
    elif not is_loopback(host):
        raise ConfigError(f"the master {host} is beyond loopback, where its port takes TLS and "
                          "a token", fix="give --join CODE, as `lab run --master-bind` printed it")
    else:
        locust_host, locust_port = host, port
    own = workdir is None
    base = Path(tempfile.mkdtemp(prefix="pooler-lab-worker-")) if own else Path(workdir)
    base.mkdir(parents=True, exist_ok=True)
    os.chmod(base, 0o700)
    done_runs = segments = 0
    try:
        log(f"lab worker: joining the master at {host}:{port}"
            + (" (TLS)" if tunnel else "") + f"; files in {base}")
        mid_run: dict | None = None  # the last segment served, when the run goes on
        while runs == 0 or done_runs < runs:
            note = _one_segment(base, locust_host, locust_port, segments, tunnel,
                                give_up_s=next_segment_wait_s if mid_run else None)
            if note is None and mid_run is not None:
                raise RunError(f"the master at {host}:{port} did not come back within "
                               f"{next_segment_wait_s:.0f} s after {mid_run.get('segment')} of "
                               f"{mid_run.get('run_id')}: that run was interrupted or failed",
                               fix="read the master's terminal; start lab worker again for "
                                   "the next run")
            if note is None:
                if tunnel is not None and tunnel.last_error:
                    raise RunError(f"could not join the master at {host}:{port}: "
                                   f"{tunnel.last_error}",
                                   fix="check the address and copy the --join code again")
                raise RunError(f"no master answered at {host}:{port}"
                               + (" after the last segment" if segments else ""),
                               fix="start `lab run ... --master-bind` first (or check "
                                   "the address)")
            segments += 1
            log(f"served {note.get('segment')} of {note.get('run_id')}")
            mid_run = None if note.get("last") else note
            if note.get("last"):
                done_runs += 1
    finally:
        if tunnel is not None:
            tunnel.close()
        if own:
            shutil.rmtree(base, ignore_errors=True)
    return WorkerResult(runs=done_runs, segments=segments)


def _one_segment(base: Path, host: str, port: int, n: int, tunnel,
                 give_up_s: float | None = None) -> dict | None:
    """One Locust worker process; the segment it served (None: it joined no master, or none
    within ``give_up_s``)."""
    note_path = base / SEGMENT_FILE
    with contextlib.suppress(FileNotFoundError):
        note_path.unlink()
    tmp = base / "tmp"  # Locust saves the downloaded locustfile in TMPDIR: keep it private
    tmp.mkdir(mode=0o700, exist_ok=True)
    env = dict(os.environ, **{WORKER_DIR_ENV: str(base), "TMPDIR": str(tmp),
                              "PYTHONUNBUFFERED": "1"})
    env.pop("LAB_CLOCK_OFFSET", None)
    args = [sys.executable, "-m", "locust", "--worker", "-f", "-", "--master-host", host,
            "--master-port", str(port), "--loglevel", "WARNING"]
    log_path = base / f"locust-{n}.log"
    with open(log_path, "w") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, cwd=str(base))
    began = time.monotonic()
    try:
        while proc.poll() is None:
            time.sleep(0.2)
            if note_path.exists():
                continue
            if tunnel is not None and tunnel.last_error:
                break  # the master's certificate or address is wrong: no use waiting 300 s
            if give_up_s is not None and time.monotonic() - began > give_up_s:
                break
    finally:
        from lab.run.child import stop_process_group

        stop_process_group(proc)
        for leftover in tmp.iterdir():  # the downloaded locustfile holds the password
            with contextlib.suppress(OSError):
                leftover.unlink()
    try:
        return json.loads(note_path.read_text())
    except (OSError, ValueError):
        return None

