"""The orchestrator's side of a distributed run (`lab run ... --master-bind`).

Per run: the address Locust's masters bind (the run's segments each start one), and beyond
loopback the TLS tunnel in front of it with a token (lab.distributed.tunnel), whose join code
is printed once on the terminal and never written to a file. Per segment: the workers'
locustfile (lab.distributed.wrapper, a private file removed after the segment), and what the
master recorded of its workers (``workers/<segment>.json``) for the manifest. No gevent here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.distributed import wrapper
from lab.errors import ConfigError, RunError

# What a worker may send the master, by folder (lab.distributed.locust_side), and its chunks.
FOLDERS = {"requests": (".arrow", ".parquet"), "schedule": (".json",), "live": (".json",)}
CHUNK = re.compile(r"part-(\d+)-(\d+)(\.arrow|\.parquet)")  # .parquet: a worker before 2026-12
GAVE_UP = "Gave up waiting for workers"  # Locust's own words when --expect-workers-max-wait ends


@dataclass
class Master:
    bind: tuple[str, int]  # what the workers connect to
    locust_address: tuple[str, int]  # what Locust binds (the tunnel's inner end beyond loopback)
    expect_workers: int
    worker_wait_s: float
    run_id: str
    tunnel: Any = None
    token: str | None = None
    _private: Path | None = field(default=None, repr=False)

    @classmethod
    def open(cls, spec, run_id: str, log: Callable[[str], None]) -> Master:
        host, port = spec.master_address
        if not spec.master_beyond_loopback:
            _check_free(host, port)
            return cls((host, port), (host, port), spec.expect_workers, spec.worker_wait_s,
                       run_id)
        from lab.distributed import tunnel as tunnelmod
        from lab.state import LabState

        token = tunnelmod.new_token()
        inner = ("127.0.0.1", _free_port())
        state_dir = LabState(spec.lab_name).dir / "master-tls"
        tunnel = tunnelmod.MasterTunnel(host, port, inner[1], state_dir, token, log=log).start()
        code = tunnelmod.join_code(token, tunnel.fingerprint)
        shown = host if host not in ("0.0.0.0", "::") else "THIS-HOST"
        # once, on the terminal only: the code lets a machine join the run and read its URIs
        log(f"workers join with: lab worker --master {shown}:{port} --join {code}")
        return cls((host, port), inner, spec.expect_workers, spec.worker_wait_s, run_id,
                   tunnel, token)

    @property
    def secrets(self) -> tuple[str, ...]:
        return (self.token,) if self.token else ()

    def describe(self) -> dict[str, Any]:
        return {"master_bind": f"{self.bind[0]}:{self.bind[1]}",
                "expect_workers": self.expect_workers, "worker_wait_s": self.worker_wait_s,
                "tls": self.tunnel is not None,
                "refused_connections": getattr(self.tunnel, "connections_refused", 0)}

    def locustfile(self, scenario_path: Path, env: dict[str, str], segment: str,
                   last: bool) -> Path:
        """The segment's wrapper (and the master's own LAB_SEGMENT settings in ``env``)."""
        env.update(LAB_RUN_ID=self.run_id, LAB_SEGMENT=segment,
                   LAB_LAST_SEGMENT="1" if last else "")
        self.segment_done()
        self._private = wrapper.write_private(
            wrapper.render(scenario_path, env, self.run_id, segment, last), segment)
        return self._private

    def segment_done(self) -> None:
        if self._private is not None:
            wrapper.remove_private(self._private)
            self._private = None

    def close(self) -> None:
        self.segment_done()
        if self.tunnel is not None:
            self.tunnel.close()

    @staticmethod
    def segment_workers(run_dir: Path, segment: str) -> dict[str, Any]:
        try:
            data = json.loads((run_dir / "workers" / f"{segment}.json").read_text())
        except (OSError, ValueError):
            data = {"workers": []}
        return summarize(data)

    def gave_up(self, log_path: Path) -> bool:
        with contextlib.suppress(OSError):
            return GAVE_UP in log_path.read_text(errors="replace")
        return False

    def gave_up_error(self, segment: Mapping[str, Any], run_dir: Path) -> RunError:
        joined = len((segment.get("workers") or {}).get("joined", []))
        host, port = self.bind
        return RunError(
            f"only {joined} of {self.expect_workers} workers joined within "
            f"{self.worker_wait_s:.0f} s, so the segment did not start (a smaller load would "
            f"be another benchmark); measured so far: {run_dir}",
            fix=f"start `lab worker --master {host}:{port}` on each load machine, or give "
                f"--expect-workers {max(1, joined)}")


def node_tag(node_id: str) -> str:
    return hashlib.sha1(node_id.encode()).hexdigest()[:8]


def destination(run_dir: Path, rel: str, index: int, node_id: str) -> Path | None:
    """Where the master writes a worker's file; None for a path it does not take."""
    folder, _, name = rel.partition("/")
    if folder not in FOLDERS or "/" in name or not name.endswith(FOLDERS[folder]) \
            or name.startswith("."):
        return None
    if folder == "requests":
        match = CHUNK.fullmatch(name)
        if match is None:
            return None
        name = f"part-{index}-{node_tag(node_id)}-{match.group(2)}{match.group(3)}"
    else:  # <endpoint>-<index>.json: a worker writes under its own index only
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)-\d+\.json", name)
        if match is None:
            return None
        name = f"{match.group(1)}-{index}.json"
    return run_dir / folder / name


def summarize(data: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest's ``workers`` of a segment: who joined, who finished, who went missing."""
    workers = [w for w in data.get("workers") or [] if isinstance(w, dict)]
    expected = int(data.get("expected") or 0)
    joined = [{"index": w.get("index"), "host": w.get("host"), "node": w.get("node"),
               "chunks": w.get("chunks", 0), "rows": (w.get("done") or {}).get("rows"),
               "finished": w.get("done") is not None, "missing_at": w.get("missing_at"),
               "last_file_at": w.get("last_file_at")} for w in workers]
    return {"expected": expected, "joined": joined,
            "never_joined": max(0, expected - len(joined)),
            "lost": [w["index"] for w in joined if not w["finished"]]}


def _check_free(host: str, port: int) -> None:
    from lab.stack import port_problem

    try:
        problem = port_problem(host, port)
    except OSError as exc:  # a name that does not resolve, say
        problem = f"cannot bind the Locust master to {host}:{port} ({exc.strerror or exc})"
    if problem is not None:
        said = {"in-use": f"port {port} on {host} is in use",
                "no-address": f"{host} is not an address of this machine"}.get(problem, problem)
        raise ConfigError(said, fix="give another --master-bind HOST:PORT")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
