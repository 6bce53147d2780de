"""Running a node driver's script in the cell child: the script and workload.mjs are written
beside the npm packages (``node_modules`` resolves from there), the workload goes in as JSON on
stdin, the outcome comes back as the last line of JSON."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from lab.clients.workload import ForeignFailure, Workload
from lab.state import atomic_write

WORKLOAD_JS = Path(__file__).with_name("workload.mjs")


def _write_if_changed(path: Path, text: str) -> None:
    """Cells run one at a time, but two matrices may share the folder: never half a file."""
    if not (path.is_file() and path.read_text() == text):
        atomic_write(path, text, 0o644)


def run(w: Workload, script: str, options: dict[str, Any], package: str) -> None:
    node = shutil.which("node")
    if node is None:
        raise ForeignFailure("", "node is not on PATH", "connect", outcome="not installed")
    folder = Path(w.node_dir)
    folder.mkdir(parents=True, exist_ok=True)
    _write_if_changed(folder / "workload.mjs", WORKLOAD_JS.read_text())
    digest = hashlib.sha256(script.encode()).hexdigest()[:12]
    path = folder / f"driver-{digest}.mjs"
    _write_if_changed(path, script)
    workload = {"endpoint": w.endpoint, "dsn": w.dsn, **w.params}
    stdin = json.dumps({"workload": workload, "options": options, "package": package})
    proc = subprocess.Popen([node, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=folder)
    tail: list[str] = []
    where = [w.at.where]

    def relay() -> None:  # node's trace (@where) reaches the parent as it happens
        for line in proc.stderr:
            sys.stderr.write(line)
            sys.stderr.flush()
            if line.startswith("@where "):
                where[0] = line[len("@where "):].rstrip("\n")
            else:
                tail.append(line.rstrip())
                del tail[:-5]

    reader = threading.Thread(target=relay, daemon=True)
    reader.start()
    # No timeout here: the parent kills this cell's whole process group (node too) at its own
    # timeout, so a hang is recorded as one, by the parent.
    proc.stdin.write(stdin)
    proc.stdin.close()
    out = proc.stdout.read()
    proc.wait()
    reader.join()
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if not lines:
        last = (tail or [f"node exited with code {proc.returncode}"])[-1]
        raise ForeignFailure("node", last[:300], where[0], outcome="crashed")
    result = json.loads(lines[-1])
    if result.get("outcome") != "works":
        raise ForeignFailure(result.get("error_class", ""), result.get("message", ""),
                             result.get("where", ""), result.get("outcome", "fails"))
