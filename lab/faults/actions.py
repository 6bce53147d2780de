"""What a fault does to a running lab, and how it is undone.

Container faults go through the Docker SDK (a client of our own, with a bounded timeout on every
call); admin faults through the PgBouncer admin console of the endpoint's pooler, reached at its
monitor address (past any distance relay). ``inject`` and ``recover`` never raise for engine or
database errors: they return what the engine answered, so a run survives a fault that could not
be injected (the Docker engine down, a console unreachable)::

    {"ok": bool, "answer": str, "error": str | None, "t": start, "done_t": end}   (unix times)

``recover`` is idempotent: a running / unpaused / connected / resumed target answers ok with a
text saying so; it returns None for the faults that leave nothing to undo.

The db host: ``dedicated`` runs in db's network namespace (``network_mode: service:db``). When
the db container stops and starts again, that namespace is a new one and the dedicated pooler
is left in the old one (loopback only: it reaches no Postgres and no client reaches it), so
every fault that takes the db container down (kill, stop, restart, fast-restart) restarts the
dedicated container once db is back, as a restarted db host would.

``fast-restart``: Postgres is the db container's main process (the entrypoint ``exec``s it
under docker-init), so ``pg_ctl restart`` inside the container would end the container with the
postmaster. An image whose entrypoint knows ``restart-db`` (Postgres kept as its child) restarts
it in place; otherwise the fast restart is ``docker restart``: the container's stop signal is
SIGINT, Postgres's fast shutdown (clients get 57P01 "terminating connection due to
administrator command", a checkpoint is written), then the entrypoint starts Postgres again.
"""

from __future__ import annotations

import contextlib
import re
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from lab import clock
from lab.faults.spec import FaultSpec

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
DOCKER_TIMEOUT_S = 30  # every Docker API call (a stop waits STOP_TIMEOUT_S inside it)
STOP_TIMEOUT_S = 5  # docker stop / restart: SIGINT, then SIGKILL after this long
ADMIN_TIMEOUT_S = 3  # connecting to an admin console
PAUSE_WAIT_S = 2  # how long PAUSE may wait for busy server connections before we move on
DB_READY_WAIT_S = 30  # after a db restart: wait this long for Postgres before the dedicated one


@dataclass(frozen=True)
class AdminConsole:
    """Where a PgBouncer admin console answers (monitor address, TLS as the sampler uses)."""

    host: str
    port: int
    user: str
    password: str
    database: str = "postgres"  # the database clients use: KILL / RESUME name it
    tls: dict[str, object] = field(default_factory=dict)  # hostaddr, sslmode, sslrootcert
    # The compose service whose bridge address ``tls["hostaddr"]`` is: looked up again when
    # the console cannot be reached (a disconnect or restart can give it a new address).
    service: str | None = None


class FaultContext:
    """One lab as the faults see it: its compose project, network and admin consoles."""

    def __init__(self, project: str, consoles: dict[str, AdminConsole], *,
                 network: str | None = None, docker_timeout: float = DOCKER_TIMEOUT_S,
                 stop_timeout: int = STOP_TIMEOUT_S, admin_timeout: float = ADMIN_TIMEOUT_S,
                 pause_wait: float = PAUSE_WAIT_S):
        self.project = project
        self.consoles = consoles
        self.docker_timeout = docker_timeout
        self.stop_timeout = stop_timeout
        self.admin_timeout = admin_timeout
        self.pause_wait = pause_wait
        self._network = network
        self._client = None
        self._lock = threading.Lock()
        # Admin connections whose PAUSE has not been answered yet (busy servers): closed at
        # RESUME. Keyed by target.
        self.pending: dict[str, Any] = {}

    # -- Docker ---------------------------------------------------------------------------
    def docker(self):
        with self._lock:
            if self._client is None:
                from lab import engine  # the SDK (requests): only when a fault needs it

                # One connection pool for the engine (lab.engine.new_client): the SDK's own
                # keeps one per URL, so every fault left a socket or three to docker.sock
                # open. Two connections at most: the injector acts one fault at a time.
                self._client = engine.new_client(timeout=self.docker_timeout, max_pool_size=2)
            return self._client

    def container(self, service: str):
        found = self.docker().containers.list(all=True, filters={"label": [
            f"{PROJECT_LABEL}={self.project}", f"{SERVICE_LABEL}={service}"]})
        if not found:
            raise LookupError(f"no container of service {service} in {self.project}")
        return found[0]

    def network_name(self) -> str:
        """The compose network (``<project>_default``): db's, else the project's by label."""
        if self._network:
            return self._network
        with contextlib.suppress(LookupError):
            networks = self.container("db").attrs.get("NetworkSettings", {}).get("Networks")
            for name in networks or {}:
                if name.endswith("_default"):
                    self._network = name
                    return name
        found = [n.name for n in self.docker().networks.list(
            filters={"label": f"{PROJECT_LABEL}={self.project}"}) if n.name.endswith("_default")]
        if not found:
            raise LookupError(f"no _default network of {self.project}")
        self._network = found[0]
        return found[0]

    def network(self):
        return self.docker().networks.get(self.network_name())

    def current_address(self, service: str) -> str:
        """A service's address on the compose network now ("" when it has none)."""
        return _address(self.container(service), self.network_name())

    def close(self) -> None:
        for target in list(self.pending):
            _close(self.pending.pop(target, None))
        with self._lock:
            if self._client is not None:
                with contextlib.suppress(Exception):
                    self._client.close()
            self._client = None


def context_for_lab(cfg, state, eps) -> FaultContext:
    """The context of a running lab: ``cfg`` a LabConfig, ``state`` its LabState, ``eps`` the
    EndpointInfo of ``lab.connect.endpoints(cfg, containers)``."""
    from lab.config import ENDPOINTS
    from lab.render import ADMIN_USER

    password = state.secrets().admin_password
    consoles = {}
    for name in ("session", "transaction", "dedicated"):
        host, port, params = eps[name].address(monitor=True)
        consoles[name] = AdminConsole(
            host=host, port=port, user=ADMIN_USER, password=password,
            database=eps[name].database, tls=params,
            service=ENDPOINTS[name].host if "hostaddr" in params else None)
    ctx = FaultContext(cfg.project, consoles)
    with contextlib.suppress(Exception):  # found again at the first disconnect otherwise
        ctx.network_name()
    return ctx


# -- results ------------------------------------------------------------------------------


def _short(exc: BaseException, secrets: tuple[str, ...] = ()) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    explanation = getattr(exc, "explanation", None)  # docker.errors.APIError: the engine's text
    if explanation:
        text = str(explanation).strip().splitlines()[0]
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[YOUR-PASSWORD]")
    return f"{type(exc).__name__}: {text}"[:300]


def _run(fn: Callable[[], str], secrets: tuple[str, ...] = ()) -> dict[str, Any]:
    t = clock.now()
    try:
        answer = fn()
    except Exception as exc:  # engine, network, database: recorded, never raised
        return {"ok": False, "answer": "", "error": _short(exc, secrets), "t": round(t, 3),
                "done_t": round(clock.now(), 3)}
    return {"ok": True, "answer": answer, "error": None, "t": round(t, 3),
            "done_t": round(clock.now(), 3)}


def inject(fault: FaultSpec, ctx: FaultContext) -> dict[str, Any]:
    """Do the fault now."""
    if fault.kind == "container":
        return _run(lambda: _CONTAINER_INJECT[fault.action](ctx, fault.target))
    console = ctx.consoles.get(fault.target)
    secrets = (console.password,) if console else ()
    return _run(lambda: _ADMIN_INJECT[fault.action](ctx, fault.target), secrets)


def recover(fault: FaultSpec, ctx: FaultContext) -> dict[str, Any] | None:
    """Undo the fault (idempotent); None when it leaves nothing to undo."""
    if not fault.undoable:
        return None
    if fault.kind == "container":
        return _run(lambda: _CONTAINER_RECOVER[fault.action](ctx, fault.target))
    console = ctx.consoles.get(fault.target)
    secrets = (console.password,) if console else ()
    return _run(lambda: _ADMIN_RECOVER[fault.action](ctx, fault.target), secrets)


# -- container faults ---------------------------------------------------------------------


def _state(container) -> str:
    container.reload()
    return container.attrs.get("State", {}).get("Status", "unknown")


def _address(container, network: str) -> str:
    networks = container.attrs.get("NetworkSettings", {}).get("Networks") or {}
    return (networks.get(network) or {}).get("IPAddress") or ""


def _kill(ctx: FaultContext, service: str) -> str:
    c = ctx.container(service)
    c.kill()
    return f"SIGKILL sent; {service} is {_state(c)}"


def _stop(ctx: FaultContext, service: str) -> str:
    c = ctx.container(service)
    c.stop(timeout=ctx.stop_timeout)
    return f"stopped (SIGINT, SIGKILL after {ctx.stop_timeout} s); {service} is {_state(c)}"


def _restart(ctx: FaultContext, service: str) -> str:
    c = ctx.container(service)
    c.restart(timeout=ctx.stop_timeout)
    answer = f"restarted; {service} is {_state(c)}"
    if service == "db":
        answer += "; " + _restart_dedicated(ctx)
    return answer


def _fast_restart(ctx: FaultContext, service: str) -> str:
    c = ctx.container(service)
    # An image whose entrypoint keeps Postgres as its child restarts it in place
    # (`lab-entrypoint restart-db`: pg_ctl stop -m fast, started again); older images answer
    # with their usage line and exit 2.
    code, output = c.exec_run(["lab-entrypoint", "restart-db"])
    text = (output or b"").decode(errors="replace").strip()
    if code == 0:
        return "Postgres fast restart in place (pg_ctl stop -m fast, started again)"
    if "usage" not in text:
        raise RuntimeError(f"lab-entrypoint restart-db exited {code}: {text[:200]}")
    # Postgres is the container's main process here: a pg_ctl restart inside would end the
    # container. docker restart sends the stop signal, SIGINT: Postgres's fast shutdown.
    c.restart(timeout=ctx.stop_timeout)
    return (f"Postgres fast shutdown (SIGINT) and start (docker restart); {service} is "
            f"{_state(c)}; " + _restart_dedicated(ctx))


def _pause(ctx: FaultContext, service: str) -> str:
    c = ctx.container(service)
    c.pause()
    return f"paused; {service} is {_state(c)}"


def _disconnect(ctx: FaultContext, service: str) -> str:
    c = ctx.container(service)
    net = ctx.network()
    was = _address(c, net.name)
    net.disconnect(c, force=True)
    extra = " (the dedicated pooler with it)" if service == "db" else ""
    return f"disconnected from {net.name}{extra}; address was {was or 'none'}"


def _wait_db_ready(ctx: FaultContext, timeout: float = DB_READY_WAIT_S) -> bool:
    """Until Postgres answers on its socket inside db (the dedicated one logs in there)."""
    deadline = time.monotonic() + timeout
    c = ctx.container("db")
    while time.monotonic() < deadline:
        if _state(c) == "running":
            code, _ = c.exec_run(["pg_isready", "-q", "-h", "/var/run/postgresql"])
            if code == 0:
                return True
        time.sleep(0.2)
    return False


def _restart_dedicated(ctx: FaultContext) -> str:
    """The dedicated pooler lives in db's network namespace: after db started again it is
    restarted into the new one (a db host that restarts restarts its pooler too)."""
    ready = _wait_db_ready(ctx)
    d = ctx.container("dedicated")
    d.restart(timeout=ctx.stop_timeout)
    note = "" if ready else " (Postgres not ready yet)"
    return f"dedicated restarted into db's new network namespace{note}; it is {_state(d)}"


def _start(ctx: FaultContext, service: str) -> str:
    c = ctx.container(service)
    state = _state(c)
    if state == "running":
        answer = f"{service} already running"
        if service == "db":
            d = ctx.container("dedicated")
            if _state(d) != "running":
                d.start()
                answer += f"; dedicated started, it is {_state(d)}"
        return answer
    if state == "paused":
        c.unpause()
        return f"{service} was paused: unpaused, it is {_state(c)}"
    c.start()
    answer = f"started; {service} is {_state(c)}"
    if service == "db":
        answer += "; " + _restart_dedicated(ctx)
    return answer


def _unpause(ctx: FaultContext, service: str) -> str:
    c = ctx.container(service)
    state = _state(c)
    if state != "paused":
        return f"{service} not paused (it is {state})"
    c.unpause()
    return f"unpaused; {service} is {_state(c)}"


def _reconnect(ctx: FaultContext, service: str) -> str:
    c = ctx.container(service)
    net = ctx.network()
    net.reload()
    if c.id in (net.attrs.get("Containers") or {}):
        c.reload()
        return f"{service} already on {net.name} (address {_address(c, net.name)})"
    # The service name as alias: the other containers resolve it (db, pooler) again.
    net.connect(c, aliases=[service])
    c.reload()
    return f"reconnected to {net.name} as {service}; address {_address(c, net.name)}"


_CONTAINER_INJECT: dict[str, Callable[[FaultContext, str], str]] = {
    "kill": _kill, "stop": _stop, "restart": _restart, "pause": _pause,
    "disconnect": _disconnect, "fast-restart": _fast_restart,
}
_CONTAINER_RECOVER: dict[str, Callable[[FaultContext, str], str]] = {
    "kill": _start, "stop": _start, "pause": _unpause, "disconnect": _reconnect,
}


# -- admin faults -------------------------------------------------------------------------


def _console(ctx: FaultContext, target: str):
    """The admin console of ``target``; its bridge address looked up again if it moved."""
    from lab import pg  # psycopg: only in the orchestrator process

    c = ctx.consoles[target]
    try:
        return pg.admin_connect(c.host, c.port, c.user, c.password,
                                timeout=ctx.admin_timeout, **c.tls)
    except pg.OperationalError:
        fresh = ""
        if c.service:
            with contextlib.suppress(Exception):
                fresh = ctx.current_address(c.service)
        if not fresh or fresh == c.tls.get("hostaddr"):
            raise
        moved = replace(c, tls={**c.tls, "hostaddr": fresh})
        conn = pg.admin_connect(moved.host, moved.port, moved.user, moved.password,
                                timeout=ctx.admin_timeout, **moved.tls)
        ctx.consoles[target] = moved
        return conn


def _close(conn) -> None:
    if conn is not None:
        with contextlib.suppress(Exception):
            conn.close()


def _admin(ctx: FaultContext, target: str, command: str) -> str:
    conn = _console(ctx, target)
    try:
        cur = conn.execute(command)
        return cur.statusmessage or command
    finally:
        _close(conn)


def _admin_reconnect(ctx: FaultContext, target: str) -> str:
    return _admin(ctx, target, "RECONNECT")


def _admin_reload(ctx: FaultContext, target: str) -> str:
    return _admin(ctx, target, "RELOAD")


def _admin_kill(ctx: FaultContext, target: str) -> str:
    db = _dbname(ctx, target)
    return _admin(ctx, target, f"KILL {db}") + f" {db} (clients and servers dropped)"


def _admin_pause(ctx: FaultContext, target: str) -> str:
    """PAUSE answers once every server connection is released (transactions end): wait up to
    ``pause_wait``, then leave the command pending (new queries wait already) and move on."""
    import psycopg

    _close(ctx.pending.pop(target, None))
    conn = _console(ctx, target)
    pgc = conn.pgconn
    pgc.send_query(b"PAUSE")
    while pgc.flush() != 0:
        select.select([], [pgc.socket], [], 0.1)
    deadline = time.monotonic() + ctx.pause_wait
    while True:
        pgc.consume_input()
        if not pgc.is_busy():
            res = pgc.get_result()
            while pgc.get_result() is not None:
                pass
            _close(conn)
            if res is not None and res.status == psycopg.pq.ExecStatus.FATAL_ERROR:
                raise psycopg.errors.error_from_result(res)
            return "PAUSE (every server connection released)"
        left = deadline - time.monotonic()
        if left <= 0:
            ctx.pending[target] = conn
            return (f"PAUSE issued, still waiting after {ctx.pause_wait:g} s for busy server "
                    "connections (new queries wait already)")
        select.select([pgc.socket], [], [], min(left, 0.2))


def _admin_resume(ctx: FaultContext, target: str, database: str | None = None) -> str:
    import psycopg

    pending = ctx.pending.pop(target, None) if database is None else None
    command = "RESUME" if database is None else f"RESUME {database}"
    try:
        return _admin(ctx, target, command)
    except psycopg.Error as exc:
        text = str(exc)
        if "not paused" in text:
            return f"not paused ({text.strip().splitlines()[0]})"
        raise
    finally:
        _close(pending)


def _admin_resume_db(ctx: FaultContext, target: str) -> str:
    return _admin_resume(ctx, target, _dbname(ctx, target))


def _dbname(ctx: FaultContext, target: str) -> str:
    name = ctx.consoles[target].database
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(f"database name {name!r} cannot be given to the admin console")
    return name


_ADMIN_INJECT: dict[str, Callable[[FaultContext, str], str]] = {
    "reconnect": _admin_reconnect, "reload": _admin_reload, "pool-pause": _admin_pause,
    "kill-clients": _admin_kill,
}
_ADMIN_RECOVER: dict[str, Callable[[FaultContext, str], str]] = {
    "pool-pause": _admin_resume, "kill-clients": _admin_resume_db,
}
