"""Inside Locust (gevent): a distributed segment's files travel from its workers to its master.

A worker writes its sample chunks, its arrival schedule and its live counters into its own
directory (lab.users, LAB_RUN_DIR set by lab.distributed.wrapper), and sends each file to the
master as soon as it is whole, over Locust's own messages (``lab_file``): the chunks once a
second while the load runs, so a worker that dies mid-segment loses at most its last second.
When its test stops it sends ``lab_done`` with what it sent, then quits (its Locust process
serves one segment; `lab worker` starts the next one). A headless Locust master ends its run
time with ``quit`` (its workers stop only as they quit, and the master waits for nobody), so
the master's own test_stop first sends ``lab_stop`` to every worker still running and waits
for their ``lab_done``: the load stops at the run time, and the last files arrive before the
workers are told to quit.

The master writes each file into the run directory under a name of its own: a chunk
``part-<k>-<node>-<seq>.arrow`` (k the worker's index, node a hash of Locust's worker id),
so a file sent twice lands on itself and two workers, or one worker in two segments, never
share a name: every sample is there exactly once. It records who joined, what each sent, who
went missing and who finished in ``workers/<segment>.json`` (rewritten as it changes), which
the orchestrator copies into the manifest.

Imported only by the wrapper locustfile; never by the orchestrator.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import gevent
from locust import events
from locust.runners import MasterRunner, WorkerRunner

from lab import clock
from lab import users as labusers
from lab.distributed.master import destination, node_tag

log = logging.getLogger("lab.distributed")
FILE_MSG = "lab_file"
DONE_MSG = "lab_done"
STOP_MSG = "lab_stop"
DONE_WAIT_S = 20.0  # how long the master's stop waits for workers still sending their files
QUIT_AFTER_S = 1.0  # a worker quits this long after its last file (its Locust serves one test)
WORKERS_DIR = "workers"


def install(settings: dict[str, str]) -> None:
    """Called by the wrapper after the scenario's source ran (its listeners come first)."""
    state: dict[str, Any] = {}

    @events.init.add_listener
    def _init(environment, **_kwargs) -> None:
        runner = environment.runner
        if isinstance(runner, MasterRunner):
            state["side"] = Master(environment, settings)
        elif isinstance(runner, WorkerRunner):
            state["side"] = Worker(environment)


class Master:
    """Receives the workers' files and keeps ``workers/<segment>.json``."""

    def __init__(self, environment, settings: dict[str, str]):
        self.runner = environment.runner
        self.run_dir = labusers.PROCESS.run_dir
        self.segment = os.environ.get("LAB_SEGMENT") or settings.get("LAB_SEGMENT", "segment")
        self.expected = int(os.environ.get("LAB_WORKERS") or 1)
        self.workers: dict[str, dict[str, Any]] = {}
        self.runner.register_message(FILE_MSG, self.on_file)
        self.runner.register_message(DONE_MSG, self.on_done)
        events.worker_connect.add_listener(self.on_connect)
        events.test_stop.add_listener(self.on_test_stop)
        gevent.spawn(self.watch_missing)
        self.write()

    def entry(self, node_id: str) -> dict[str, Any]:
        if node_id not in self.workers:
            self.workers[node_id] = {
                "index": self.runner.get_worker_index(node_id),
                "host": node_id.rsplit("_", 1)[0], "node": node_tag(node_id),
                "joined_at": round(clock.now(), 3), "files": 0, "bytes": 0, "chunks": 0,
                "last_file_at": None, "missing_at": None, "done": None}
        return self.workers[node_id]

    def on_connect(self, client_id: str, **_kwargs) -> None:
        self.entry(client_id)
        self.write()

    def on_file(self, environment, msg, **_kwargs) -> None:
        data = msg.data or {}
        who = self.entry(msg.node_id)
        if self.run_dir is None:
            return
        path = destination(self.run_dir, str(data.get("path", "")), who["index"], msg.node_id)
        blob = data.get("data")
        if path is None or not isinstance(blob, bytes):
            log.warning("worker %s sent a file the master does not take: %r", who["index"],
                        data.get("path"))
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(blob)
        os.replace(tmp, path)
        who["files"] += 1
        who["bytes"] += len(blob)
        who["last_file_at"] = round(clock.now(), 3)
        if path.parent.name == "requests":
            who["chunks"] += 1
            self.write()

    def on_done(self, environment, msg, **_kwargs) -> None:
        who = self.entry(msg.node_id)
        who["done"] = {"rows": int((msg.data or {}).get("rows", 0)),
                       "chunks": int((msg.data or {}).get("chunks", 0)),
                       "at": round(clock.now(), 3)}
        self.write()

    def watch_missing(self) -> None:
        while True:
            gevent.sleep(1.0)
            changed = False
            for client in list(self.runner.clients.all):
                who = self.workers.get(client.id)
                if who and client.state == "missing" and who["missing_at"] is None \
                        and who["done"] is None:
                    who["missing_at"] = round(clock.now(), 3)
                    changed = True
            if changed:
                self.write()

    def on_test_stop(self, environment, **_kwargs) -> None:
        """The run time is over: stop every worker still running, wait for its last files."""
        for node_id, who in self.workers.items():
            if who["done"] is None and who["missing_at"] is None:
                self.runner.send_message(STOP_MSG, None, client_id=node_id)
        deadline = time.monotonic() + DONE_WAIT_S
        while time.monotonic() < deadline and any(
                w["done"] is None and w["missing_at"] is None for w in self.workers.values()):
            gevent.sleep(0.2)
        self.write()

    def write(self) -> None:
        if self.run_dir is None:
            return
        folder = self.run_dir / WORKERS_DIR
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.segment}.json"
        data = {"segment": self.segment, "expected": self.expected,
                "workers": sorted(self.workers.values(), key=lambda w: w["index"])}
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(tmp, path)


class Worker:
    """Sends every whole file of lab.users to the master; quits after its test."""

    def __init__(self, environment):
        self.runner = environment.runner
        self.process = labusers.PROCESS
        self.run_dir = self.process.run_dir
        self.sent = 0
        self.chunks = 0
        self.process.ship = self.ship
        self.runner.register_message(STOP_MSG, self.on_stop, concurrent=True)
        events.test_stop.add_listener(self.on_test_stop)

    def on_stop(self, environment, msg, **_kwargs) -> None:
        self.runner.stop()  # test_stopping, the users' stop, test_stop: files, lab_done

    def ship(self, path: Path) -> None:
        if self.run_dir is None:
            return
        try:
            blob = Path(path).read_bytes()
            rel = Path(path).relative_to(self.run_dir).as_posix()
        except (OSError, ValueError):
            log.exception("could not read %s to send it to the master", path)
            return
        self.runner.send_message(FILE_MSG, {"path": rel, "data": blob})
        self.sent += 1
        if rel.startswith("requests/"):
            self.chunks += 1

    def on_test_stop(self, environment, **_kwargs) -> None:
        # lab.users' own test_stop (registered first) has written and sent everything
        writer = self.process.writer
        self.runner.send_message(DONE_MSG, {"rows": writer.written if writer else 0,
                                            "chunks": self.chunks, "files": self.sent})
        gevent.spawn_later(QUIT_AFTER_S, self.runner.quit)
