"""Frames fan out to the page's streams: the last few minutes kept (a page opened mid-run gets
them at once), each frame serialised once whatever the number of pages."""

from __future__ import annotations

import json
import threading
from collections import deque
from typing import Any

WINDOW_S = 300.0


class Hub:
    def __init__(self, window_s: float = WINDOW_S):
        self.window_s = window_s
        self.secrets: tuple[str, ...] = ()  # the lab's passwords, masked in every frame
        self._frames: deque[tuple[int, float, str]] = deque()
        self._cond = threading.Condition()
        self.seq = 0
        self.closed = False
        self.latest: dict[str, Any] | None = None

    def publish(self, frame: dict[str, Any]) -> None:
        from lab.run.manifest import redact

        text = redact(json.dumps(frame, separators=(",", ":")), self.secrets)
        t = float(frame.get("t") or 0.0)
        with self._cond:
            self.seq += 1
            self.latest = frame
            self._frames.append((self.seq, t, text))
            while self._frames and self._frames[0][1] < t - self.window_s:
                self._frames.popleft()
            self._cond.notify_all()

    def since(self, seq: int, timeout: float = 1.0) -> list[tuple[int, str]]:
        """Frames after ``seq`` (waiting up to ``timeout`` for one); [] on timeout or close."""
        with self._cond:
            if self.seq <= seq and not self.closed:
                self._cond.wait(timeout)
            return [(s, text) for s, _, text in self._frames if s > seq]

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()
