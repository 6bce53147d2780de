"""The live view's web server: Flask on Werkzeug's threaded server (both come with Locust), one
thread per page. The page (web/) gets the last few minutes at once, then each new frame, by
server-sent events on /events; /frame.json is the newest frame for scripts.

Security: bound to 127.0.0.1 unless told; bound anywhere else, every request needs the token
printed once at start (``?token=`` or ``Authorization: Bearer``). On loopback the Host header
must name the loopback too (a web page elsewhere cannot read the stream by DNS rebinding).
Frames never hold a password or a connection string (lab.watch.frame builds them from counts)."""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import threading
from dataclasses import dataclass
from importlib import resources as importlib_resources
from pathlib import Path

from lab.watch import assets
from lab.watch.hub import Hub

KEEPALIVE_S = 10.0
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "[::1]", "::1"}


def is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def web_file(name: str) -> bytes:
    return importlib_resources.files("lab.watch").joinpath("web", name).read_bytes()


def make_app(hub: Hub, token: str | None, loopback_only: bool, title: str,
             window_s: float = 180.0):
    from flask import Flask, Response, abort, request

    app = Flask("pooler-lab-watch", static_folder=None)

    @app.before_request
    def guard():
        if loopback_only:
            host = request.host or ""
            host = host.split("]")[0] + "]" if host.startswith("[") else host.rsplit(":", 1)[0]
            if host not in LOOPBACK_NAMES:
                abort(403)
        if token is not None:
            given = request.args.get("token") or request.headers.get(
                "Authorization", "").removeprefix("Bearer ").strip()
            if not hmac.compare_digest(given.encode(), token.encode()):
                abort(403)

    types = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
             ".css": "text/css; charset=utf-8"}

    def send(data: bytes, name: str) -> Response:
        resp = Response(data, mimetype=types[Path(name).suffix].split(";")[0])
        resp.headers["Content-Type"] = types[Path(name).suffix]
        resp.headers["Cache-Control"] = "no-store"
        return resp

    @app.get("/")
    def index():
        # the assets carry the token too (relative links drop the page's query string)
        query = f"?token={token}" if token else ""
        page = (web_file("index.html").decode().replace("{{title}}", title)
                .replace("{{q}}", query).replace("{{window}}", str(int(window_s))))
        return send(page.encode(), "index.html")

    @app.get("/static/<name>")
    def static(name: str):
        if name not in ("watch.js", "watch.css"):
            abort(404)
        return send(web_file(name), name)

    @app.get("/vendor/<name>")
    def vendor(name: str):
        path = assets.vendor_file(name)
        if path is None or not path.is_file():
            abort(404)
        return send(path.read_bytes(), name)

    @app.get("/frame.json")
    def latest():
        import json

        return Response(json.dumps(hub.latest), mimetype="application/json")

    @app.get("/events")
    def events():
        def stream():
            yield "retry: 1000\n\n"
            seq = 0
            quiet = 0.0
            while not hub.closed:
                got = hub.since(seq, timeout=1.0)
                if got:
                    quiet = 0.0
                    seq = got[-1][0]
                    yield "".join(f"id: {s}\ndata: {text}\n\n" for s, text in got)
                else:
                    quiet += 1.0
                    if quiet >= KEEPALIVE_S:
                        quiet = 0.0
                        yield ": keep-alive\n\n"

        resp = Response(stream(), mimetype="text/event-stream")
        resp.headers["Cache-Control"] = "no-store"
        resp.headers["X-Accel-Buffering"] = "no"
        return resp

    return app


@dataclass
class Server:
    url: str  # what to open (with the token when there is one)
    bind: str
    port: int
    token: str | None
    _server: object
    _thread: threading.Thread

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve(hub: Hub, bind: str = "127.0.0.1", port: int = 0, token: str | None = None,
          title: str = "pooler-lab", window_s: float = 180.0) -> Server:
    """Serve the page on ``bind:port`` (0: a free port) on a thread; a token is made when
    ``bind`` is not the loopback and none is given."""
    import logging
    import socket

    from werkzeug.serving import make_server

    # Werkzeug prints its own text and exits when it cannot bind: try the address first, so
    # a port in use or a foreign address is an OSError the caller turns into one line.
    with socket.socket(socket.AF_INET6 if ":" in bind else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((bind, port))
    loopback = is_loopback(bind)
    if not loopback and token is None:
        token = secrets.token_urlsafe(18)
    app = make_app(hub, token, loopback, title, window_s)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no request lines in the terminal
    server = make_server(bind, port, app, threaded=True)
    server.daemon_threads = True
    actual = server.socket.getsockname()[1]
    shown = "127.0.0.1" if bind in ("127.0.0.1", "localhost") else bind
    if ":" in shown:
        shown = f"[{shown}]"
    url = f"http://{shown}:{actual}/" + (f"?token={token}" if token else "")
    thread = threading.Thread(target=server.serve_forever, daemon=True, name="watch-http")
    thread.start()
    return Server(url=url, bind=bind, port=actual, token=token, _server=server, _thread=thread)
