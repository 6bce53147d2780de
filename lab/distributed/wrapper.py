"""The locustfile a distributed segment's master hands its workers.

Locust's workers fetch their locustfile from the master (``-f -``), one file, as text. Our
scenarios read their parameters when they are imported (``users.params(PARAMS)``) from the
LAB_* variables `lab run` gives its Locust processes, and a worker on another machine has none
of them, nor the scenario file when it is the user's own, nor the lab's CA certificate. So the
master's ``-f`` is this wrapper: the segment's settings, the CA certificates its URIs name, and
the scenario's source. Imported by a worker started by `lab worker` (LAB_WORKER_DIR set), it
first makes those settings the process's environment, pointing LAB_RUN_DIR at the worker's own
directory; then it runs the scenario's source and installs ``locust_side`` (files to the master).

It holds the database password: the master's copy is a private temporary file (0600, removed
after the segment), and it only travels over loopback or the TLS tunnel (lab.distributed.tunnel).
Pure standard library, no gevent: it runs before lab.users is imported.
"""

from __future__ import annotations

import base64
import json
import os
import re
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

# What a worker takes from the master's environment; the run directory, the clock offset and
# the rest stay with the master (another machine has its own paths and its own clock).
CARRIED = ("LAB_ENDPOINT", "LAB_SCENARIO", "LAB_TARGET_URI", "LAB_TARGET_URIS", "LAB_PARAMS",
           "LAB_SEED", "LAB_WORKERS", "LAB_REPEAT", "LAB_RUN_TIME", "LAB_RUN_ID", "LAB_SEGMENT",
           "LAB_LAST_SEGMENT", "LAB_MASTER_FILE_WAIT")
WORKER_DIR_ENV = "LAB_WORKER_DIR"  # set by `lab worker` for its Locust processes
SEGMENT_FILE = "segment.json"  # in LAB_WORKER_DIR: which segment this worker last joined

TEMPLATE = '''\
# pooler-lab: the locustfile of one segment of a distributed run ({segment}), handed by its
# Locust master to its workers. Generated; it carries the database password: do not keep it.
from lab.distributed import wrapper as _lab_wrapper

_LAB = _lab_wrapper.unpack({payload!r})
_lab_wrapper.apply_worker_environment(_LAB)
exec(compile(_LAB["source"], _LAB["source_name"], "exec"))

from lab.distributed import locust_side as _lab_locust_side  # noqa: E402

_lab_locust_side.install(_LAB["settings"])
'''


def render(scenario_path: Path, env: Mapping[str, str], run_id: str, segment: str,
           last: bool) -> str:
    """The wrapper's text for one segment (``env``: what `lab run` gives its Locust child)."""
    settings = {k: env[k] for k in CARRIED if k in env}
    settings.update(LAB_RUN_ID=run_id, LAB_SEGMENT=segment, LAB_LAST_SEGMENT="1" if last else "")
    certs: dict[str, str] = {}
    for uri in _uris(settings):
        path = dict(parse_qsl(urlsplit(uri).query)).get("sslrootcert")
        if path and Path(path).is_file():
            certs[path] = Path(path).read_text()
    payload = {"settings": settings, "certs": certs,
               "source": Path(scenario_path).read_text(),
               "source_name": f"<{Path(scenario_path).name} of {run_id}>"}
    return TEMPLATE.format(segment=segment, payload=pack(payload))


def pack(data: Mapping) -> str:
    return base64.b64encode(json.dumps(data).encode()).decode()


def unpack(text: str) -> dict:
    return json.loads(base64.b64decode(text))


def write_private(text: str, segment: str) -> Path:
    """The master's copy: a 0600 file in a 0700 directory of its own (removed with it)."""
    folder = Path(tempfile.mkdtemp(prefix="pooler-lab-master-"))
    path = folder / f"lab_{re.sub(r'[^A-Za-z0-9_]', '_', segment)}.py"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return path


def remove_private(path: Path) -> None:
    import shutil

    shutil.rmtree(path.parent, ignore_errors=True)


def apply_worker_environment(data: dict, environ: dict | None = None) -> Path | None:
    """On a `lab worker`'s Locust process: the segment's settings become its environment, with
    LAB_RUN_DIR in the worker's own directory and the CA certificates written there (the URIs
    rewritten to name them). Returns that run directory; None (and no change) elsewhere."""
    environ = os.environ if environ is None else environ
    base = environ.get(WORKER_DIR_ENV)
    if not base:
        return None
    settings = data["settings"]
    run_dir = Path(base) / _safe(settings.get("LAB_RUN_ID", "run")) / _safe(
        settings.get("LAB_SEGMENT", "segment"))
    run_dir.mkdir(parents=True, exist_ok=True)
    moved: dict[str, str] = {}
    for i, (path, pem) in enumerate(sorted(data.get("certs", {}).items())):
        local = run_dir / f"ca-{i}.crt"
        local.write_text(pem)
        moved[path] = str(local)
    for key in CARRIED:
        if key in settings:
            environ[key] = settings[key]
    environ["LAB_TARGET_URI"] = _rewrite(settings.get("LAB_TARGET_URI", ""), moved)
    if settings.get("LAB_TARGET_URIS"):
        uris = json.loads(settings["LAB_TARGET_URIS"])
        environ["LAB_TARGET_URIS"] = json.dumps({k: _rewrite(v, moved) for k, v in uris.items()})
    environ["LAB_RUN_DIR"] = str(run_dir)
    environ.pop("LAB_CLOCK_OFFSET", None)  # this machine's own clock
    note = {"run_id": settings.get("LAB_RUN_ID"), "segment": settings.get("LAB_SEGMENT"),
            "last": bool(settings.get("LAB_LAST_SEGMENT")), "pid": os.getpid()}
    (Path(base) / SEGMENT_FILE).write_text(json.dumps(note) + "\n")
    return run_dir


def _uris(settings: Mapping[str, str]) -> list[str]:
    uris = [settings.get("LAB_TARGET_URI") or ""]
    if settings.get("LAB_TARGET_URIS"):
        uris += list(json.loads(settings["LAB_TARGET_URIS"]).values())
    return [u for u in uris if u]


def _rewrite(uri: str, moved: Mapping[str, str]) -> str:
    if not uri or not moved:
        return uri
    parts = urlsplit(uri)
    query = [(k, moved.get(v, v) if k == "sslrootcert" else v) for k, v in parse_qsl(parts.query)]
    return urlunsplit(parts._replace(query=urlencode(query, safe="/")))


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", str(name))[:120] or "x"
