"""Where the live view's frames come from.

* ``LabSource``: a lab. While a run of that lab publishes frames (``lab.watch.feed``), they are
  read from its feed file: the run's own sampler is the only poller. Otherwise (nothing runs,
  an experiment, a benchmark of someone else's, attendees' psql sessions) `lab watch` samples
  the lab itself with the same sampler, every half second.
* ``ReplaySource``: a finished run directory, its frames played back at their own pace.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Any

from lab import clock
from lab.errors import LabError
from lab.watch import feed, frame
from lab.watch.hub import Hub

INTERVAL_S = 0.5
# A run whose feed has not grown for this long (stopped, hung) no longer speaks for the lab.
FEED_STALE_S = 3.0


class _Looping:
    """A source's thread: ``_loop`` runs until ``stop``."""

    _stop: threading.Event
    _thread: threading.Thread | None = None

    def start(self):
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name=f"watch-{type(self).__name__}")
        self._thread.start()
        return self

    def _loop(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


class LabSource(_Looping):
    def __init__(self, name: str, hub: Hub, interval: float = INTERVAL_S):
        from lab import stack

        stack.require_running(name)  # a one-line error naming `lab up` when it is not
        self.name = name
        self.hub = hub
        self.interval = interval
        self.sampler = None
        self._settings_seen: float | None = None
        self._configure()
        self.following: Path | None = None  # the run directory whose feed is read
        self._tail: feed.Tail | None = None
        self._last_frame_at = 0.0
        self._last_t = 0.0
        self._stop = threading.Event()

    def _configure(self) -> None:
        """The lab's settings, targets and passwords, read again whenever its settings file
        changes (a sweep or `lab up --tier` brings it up with other limits)."""
        from lab import engine, stack
        from lab import sampler as samplermod
        from lab.connect import endpoints

        cfg, state = stack.load(self.name)
        self._settings_path = state.settings_path
        self._settings_seen = _mtime(self._settings_path)
        containers = engine.project_containers(cfg.project)
        self.hub.secrets = tuple(state.secrets().values())
        self.settings = frame.settings_of(cfg)
        self.limits = frame.limits_of(self.settings)
        targets = samplermod.lab_targets(cfg, endpoints(cfg, containers))
        passwords = samplermod.lab_passwords(state.secrets(), targets)
        shared = samplermod.shared_addresses(containers)
        self._make_sampler = lambda: samplermod.Sampler(targets, passwords, shared=shared,
                                                        interval=self.interval)
        self._stop_sampler()

    def _loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):  # a failed tick is retried at the next
                self.tick()
            self._stop.wait(self.interval)

    def tick(self) -> None:
        now = time.monotonic()
        run_dir = feed.active_run(self.name)
        if run_dir != self.following:
            # a run began (or ended): its frames from its start, the window's worth
            self.following = run_dir
            self._tail = None if run_dir is None else feed.Tail(run_dir / feed.FEED_FILE)
            self._last_frame_at = now
        if self._tail is not None:
            for f in self._tail.read():
                self._publish(f)
                self._last_frame_at = now
            if now - self._last_frame_at < FEED_STALE_S:
                self._stop_sampler()  # the run samples: no second poller
                return
        self._sample()

    def _publish(self, f: dict[str, Any]) -> None:
        t = float(f.get("t") or 0.0)
        if t > self._last_t:  # the page's time runs forward only
            self._last_t = t
            self.hub.publish(f)

    def _sample(self) -> None:
        if _mtime(self._settings_path) != self._settings_seen:
            self._configure()
        if self.sampler is None:
            self.sampler = self._make_sampler().start()
            return  # its first records arrive within a tick
        now = clock.now()
        conns = frame.connections(dict(self.sampler.latest), now, self.limits)
        self._publish(frame.make(self.name, now, conns, None, self.settings, "lab"))

    def _stop_sampler(self) -> None:
        if self.sampler is not None:
            self.sampler.stop()
            self.sampler = None

    def stop(self) -> None:
        super().stop()
        self._stop_sampler()


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


class ReplaySource(_Looping):
    """A finished run's frames again, spaced as they were recorded (``speed`` times faster)."""

    def __init__(self, run_dir: Path, hub: Hub, speed: float = 1.0):
        path = run_dir / feed.FEED_FILE
        if not run_dir.is_dir():
            raise LabError(f"{run_dir} is not a run directory",
                           fix="give the path a run printed (reports/<run-id>), or no path for "
                               "the live lab")
        if not path.is_file():
            raise LabError(f"{run_dir} has no live view recorded ({feed.FEED_FILE}: runs made "
                           "before lab watch existed have none)",
                           fix=f"lab report {run_dir} draws its figures")
        self.frames = feed.read_all(path)
        if not self.frames:
            raise LabError(f"{path} holds no frame", fix=f"lab report {run_dir}")
        self.hub = hub
        self.speed = max(speed, 0.01)
        self.done = threading.Event()
        self._stop = threading.Event()

    def _loop(self) -> None:
        start_wall = time.monotonic()
        t0 = float(self.frames[0].get("t") or 0.0)
        for f in self.frames:
            due = (float(f.get("t") or t0) - t0) / self.speed
            delay = start_wall + due - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return
            self.hub.publish({**f, "source": "replay"})
        self.done.set()
