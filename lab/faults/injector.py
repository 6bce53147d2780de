"""One segment's faults on a schedule, on a daemon thread.

``start(t0)`` (t0: the segment's load start, unix time) injects each fault at t0 + AT and
recovers it at t0 + AT + DURATION; ``stop()`` (the segment's end, or Ctrl-C) cancels what has
not started, undoes every fault still in effect (a kill or stop without DURATION is started
again, a pause unpaused, a disconnect reconnected, a pool-pause or kill-clients resumed) so the
lab is whole for the next segment, and joins the thread.

Every inject and recover is one JSON line of ``faults.jsonl`` (created on first write, flushed
each line)::

    {"v": 1, "segment", "fault", "target", "action", "phase": "inject" | "recover",
     "planned_t", "t", "done_t", "ok", "answer", "error", "description"}

A file that cannot be written (disk full) costs the file, never the thread: the events stay in
``events``.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lab import clock
from lab.faults import actions
from lab.faults.spec import FaultSpec, describe

JOIN_TIMEOUT_S = 30.0  # a Docker call in flight may take its whole timeout


class Injector:
    def __init__(self, faults: list[FaultSpec], ctx: Any, events_path: Path, segment: str,
                 log: Callable[[str], None] = print, *,
                 inject_fn: Callable[..., dict[str, Any]] = actions.inject,
                 recover_fn: Callable[..., dict[str, Any] | None] = actions.recover):
        self.faults = list(faults)
        self.ctx = ctx
        self.events_path = Path(events_path)
        self.segment = segment
        self.log = log
        self._inject = inject_fn
        self._recover = recover_fn
        self.events: list[dict[str, Any]] = []
        self.write_error: str | None = None
        self._fh = None
        self._stop = threading.Event()
        self._op_lock = threading.Lock()  # one inject/recover at a time; held by stop()
        self._state_lock = threading.Lock()  # events, active faults
        self._thread: threading.Thread | None = None
        self._t0: float | None = None
        self._in_effect: list[FaultSpec] = []  # injected, not yet recovered (in order)
        self._effective: set[str] = set()  # texts whose inject answered ok

    # -- public ---------------------------------------------------------------------------
    def start(self, t0: float) -> Injector:
        if self._thread is not None:
            raise RuntimeError("Injector.start called twice")
        self._t0 = t0
        self._thread = threading.Thread(target=self._main, name=f"faults-{self.segment}",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = JOIN_TIMEOUT_S) -> None:
        """Cancel pending injects, undo every fault still in effect, join the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        acquired = self._op_lock.acquire(timeout=timeout)
        try:
            with self._state_lock:
                outstanding = list(reversed(self._in_effect))
            for fault in outstanding:
                self._do(fault, "recover", clock.now())
        finally:
            if acquired:
                self._op_lock.release()
            self._close_file()

    def active(self) -> list[str]:
        """describe() of the faults in effect now (injected, not yet recovered)."""
        with self._state_lock:
            return [describe(f) for f in self._in_effect if f.text in self._effective]

    def schedule(self) -> list[tuple[float, str, FaultSpec]]:
        """(offset from t0, phase, fault), in the order the thread performs them."""
        plan = []
        for fault in self.faults:
            plan.append((fault.at_s, "inject", fault))
            if fault.undoable and fault.duration_s is not None:
                plan.append((fault.at_s + fault.duration_s, "recover", fault))
        # A recover before an inject at the same instant: one fault ends as the next begins.
        return sorted(plan, key=lambda p: (p[0], p[1] != "recover", p[2].text))

    # -- the thread -----------------------------------------------------------------------
    def _main(self) -> None:
        assert self._t0 is not None
        for offset, phase, fault in self.schedule():
            planned = self._t0 + offset
            if self._stop.wait(max(0.0, planned - clock.now())):
                return
            with self._op_lock:
                if self._stop.is_set():
                    return
                try:
                    self._do(fault, phase, planned)
                except Exception as exc:  # pragma: no cover - never let the thread die
                    self._say(f"fault {fault.text}: {phase} crashed ({exc!r})")

    def _do(self, fault: FaultSpec, phase: str, planned: float) -> None:
        if phase == "recover":
            with self._state_lock:
                if fault not in self._in_effect:
                    return  # already undone (its DURATION ended before stop())
        result = (self._inject if phase == "inject" else self._recover)(fault, self.ctx)
        with self._state_lock:
            if phase == "inject":
                if fault.undoable:
                    # Undone even when the engine said no: a half-done stop still stopped it.
                    self._in_effect.append(fault)
                    if result.get("ok"):
                        self._effective.add(fault.text)
            else:
                if fault in self._in_effect:
                    self._in_effect.remove(fault)
                self._effective.discard(fault.text)
        if result is None:
            return
        event = {
            "v": 1, "segment": self.segment, "fault": fault.text, "target": fault.target,
            "action": fault.action, "phase": phase, "planned_t": round(planned, 3),
            "t": result.get("t"), "done_t": result.get("done_t"), "ok": bool(result.get("ok")),
            "answer": result.get("answer", ""), "error": result.get("error"),
            "description": describe(fault),
        }
        self._record(event)
        status = "ok" if event["ok"] else f"failed: {event['error']}"
        late = (event["t"] or planned) - planned
        self._say(f"fault {fault.text}: {phase} {status}"
                  + (f" ({late:.1f} s late)" if late >= 0.5 else ""))

    def _say(self, text: str) -> None:
        with contextlib.suppress(Exception):  # a broken log sink must not stop the faults
            self.log(text)

    def _record(self, event: dict[str, Any]) -> None:
        with self._state_lock:
            self.events.append(event)
            try:
                if self._fh is None:
                    self.events_path.parent.mkdir(parents=True, exist_ok=True)
                    self._fh = self.events_path.open("a", encoding="utf-8")
                self._fh.write(json.dumps(event, sort_keys=True) + "\n")
                self._fh.flush()
            except OSError as exc:
                self.write_error = f"{self.events_path}: {exc}"
                self._close_file_locked()

    def _close_file(self) -> None:
        with self._state_lock:
            self._close_file_locked()

    def _close_file_locked(self) -> None:
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.close()
            self._fh = None
