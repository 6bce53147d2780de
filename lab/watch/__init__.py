"""The live view: `lab watch` (a local web page), `lab run --watch` and `lab status --watch`.

Data flow: a run publishes frames (``frame``) to its run directory (``feed``); a view reads
them, or samples an idle lab itself (``source``); frames fan out (``hub``) to the page's
server-sent events (``server``, page in ``web/``) or to the terminal. The chart library is
installed by the project's set-up (``assets``)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.watch.hub import Hub


@dataclass
class View:
    """A running live view: its page's URL and what feeds it. ``close()`` stops both."""

    url: str
    hub: Hub
    source: Any
    server: Any = None
    notes: list[str] = field(default_factory=list)  # what the CLI prints once

    @property
    def replay_done(self) -> bool:
        done = getattr(self.source, "done", None)
        return bool(done is not None and done.is_set())

    def close(self) -> None:
        self.hub.close()
        for part in (self.server, self.source):
            if part is not None:
                with contextlib.suppress(Exception):
                    part.stop()


def open_view(name: str = "default", run_dir: Path | None = None, *, bind: str = "127.0.0.1",
              port: int = 0, token: str | None = None, speed: float = 1.0,
              window_s: float = 300.0, install: bool = True,
              log: Callable[[str], None] = lambda _t: None) -> View:
    """Serve the live view of lab ``name`` (or the replay of ``run_dir``) on a thread."""
    from lab.watch import assets, server, source

    assets.ensure(install=install, log=log)
    hub = Hub(window_s=max(window_s, 60.0))
    if run_dir is not None:
        src = source.ReplaySource(Path(run_dir), hub, speed=speed)
        title = f"pooler-lab replay: {Path(run_dir).name}"
    else:
        src = source.LabSource(name, hub)
        title = f"pooler-lab: lab {name}"
    try:
        srv = server.serve(hub, bind=bind, port=port, token=token, title=title,
                           window_s=window_s)
    except OSError as exc:
        from lab.errors import LabError

        raise LabError(f"cannot serve the live view on {bind}:{port} ({exc.strerror or exc})",
                       fix="give another --port (0 picks a free one) or --bind address") from None
    src.start()
    view = View(url=srv.url, hub=hub, source=src, server=srv)
    if srv.token and token is None:
        view.notes.append("bound beyond the loopback: the page and its stream need the token "
                          "in this URL (shown once)" + (
                              "; from another machine, put this machine's address in place "
                              "of " + bind if bind in ("0.0.0.0", "::") else ""))
    return view


def terminal(name: str = "default", *, interval: float = 0.5) -> tuple[Hub, Any]:
    """A lab's frames without a page (`lab status --watch`): the hub and its started source."""
    from lab.watch import source

    hub = Hub(window_s=5.0)
    src = source.LabSource(name, hub, interval=interval).start()
    return hub, src
