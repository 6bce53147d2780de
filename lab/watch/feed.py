"""How a run publishes its live view: one frame per half second appended to
``RUN_DIR/watch.jsonl`` (kept: `lab watch RUN_DIR` replays it), and a pointer
``<state root>/<lab>/active-run.json`` while the run lasts, so a `lab watch` of that lab reads
the run's frames instead of sampling the stack a second time."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from lab import clock
from lab.run.manifest import redact
from lab.state import atomic_write, state_root

FEED_FILE = "watch.jsonl"
POINTER = "active-run.json"
INTERVAL_S = 0.5


def pointer_path(lab: str) -> Path:
    return state_root() / lab / POINTER


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def active_run(lab: str) -> Path | None:
    """The run directory of the run publishing frames for ``lab`` now, if any (a pointer left
    by a killed run is ignored)."""
    try:
        data = json.loads(pointer_path(lab).read_text())
        run_dir, pid = Path(data["run_dir"]), int(data["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return run_dir if _alive(pid) and (run_dir / FEED_FILE).exists() else None


class Publisher:
    """A run's side: a thread that every half second asks ``build`` for a frame and appends
    it to the feed. Started after the sampler, stopped before the run directory is finished."""

    def __init__(self, run_dir: Path, lab: str | None, build: Callable[[float], dict[str, Any]],
                 interval: float = INTERVAL_S, secrets: tuple[str, ...] = ()):
        self.path = run_dir / FEED_FILE
        self.run_dir = run_dir
        self.lab = lab
        self.build = build
        self.interval = interval
        self.secrets = secrets  # masked wherever a sampler's error message might quote one
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fh = None
        self.error: str | None = None  # why frames stopped being written (a full disk)

    def start(self) -> Publisher:
        self._fh = open(self.path, "a", buffering=1)
        if self.lab is not None:
            path = pointer_path(self.lab)
            with contextlib.suppress(OSError):
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(path, json.dumps({"run_dir": str(self.run_dir.absolute()),
                                               "pid": os.getpid(), "t": clock.now()}) + "\n",
                             0o644)
        self._thread = threading.Thread(target=self._loop, daemon=True, name="watch-feed")
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.publish_now()

    def publish_now(self) -> None:
        try:
            frame = self.build(clock.now())
        except Exception as exc:  # a frame that cannot be built is skipped, never fatal
            self.error = self.error or f"{type(exc).__name__}: {exc}"
            return
        if self._fh is None:
            return
        try:
            text = json.dumps(frame, separators=(",", ":"))
            self._fh.write(redact(text, self.secrets) + "\n")
        except (OSError, ValueError) as exc:
            self.error = self.error or str(exc)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.publish_now()  # the final state (segment done), for the replay's last frame
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.close()
            self._fh = None
        if self.lab is not None:
            with contextlib.suppress(OSError, ValueError, KeyError):
                path = pointer_path(self.lab)
                if json.loads(path.read_text()).get("pid") == os.getpid():
                    path.unlink()


class Tail:
    """New whole frames of a growing feed file, from where the last read stopped."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self.partial = b""

    def read(self) -> Iterator[dict[str, Any]]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except OSError:
            return
        self.offset += len(data)
        data = self.partial + data
        lines = data.split(b"\n")
        self.partial = lines.pop()
        for line in lines:
            with contextlib.suppress(ValueError):
                yield json.loads(line)


def read_all(path: Path) -> list[dict[str, Any]]:
    """Every whole frame of a finished feed (a torn last line is skipped)."""
    return list(Tail(path).read())
