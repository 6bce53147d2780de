"""The Docker engine, through the Docker SDK: reachability, containers, addresses, health.

``lab.stack`` is the only module that runs ``docker compose``; everything that reads or pokes
containers (status, pausing a pooler in a test, image builds) goes through this module.
"""

from __future__ import annotations

import functools
import os
import sys
from dataclasses import dataclass

from lab.errors import DockerUnavailable

START_ENGINE_FIX = (
    "start the Docker engine (sudo systemctl start docker, or: sudo dockerd &), "
    "then check with lab doctor"
)


def new_client(timeout: float = 30, max_pool_size: int = 2):
    """A Docker SDK client (``docker.from_env``) that keeps one connection pool per engine.

    The SDK's unix-socket transport keys its connection pools by the request's whole URL, path
    and query included (``UnixHTTPAdapter.get_connection(request.url)``), and keeps up to 25
    such pools (``num_pools`` is ignored for unix sockets), each holding its idle keep-alive
    connection to docker.sock. So every distinct call (``/containers/<id>/json`` per container,
    ``/exec/<id>/json`` per exec, a new filter) left one more socket open, up to 25 per client:
    the staircase of a long run's descriptors at each container fault. Here the pool is keyed
    by the engine alone (scheme and host: ``http+docker://localhost``), as requests does for
    TCP, so a client holds at most ``max_pool_size`` idle connections, reused across calls.
    """
    import docker  # the SDK pulls in requests; keep it off the import path of `lab --help`

    engine = docker.from_env(timeout=timeout, max_pool_size=max_pool_size)
    _one_pool_per_engine(engine.api)
    return engine


def _one_pool_per_engine(api) -> None:
    """Key the unix-socket adapter's pools by scheme and host only (see ``new_client``)."""
    from urllib.parse import urlsplit

    from docker.transport import UnixHTTPAdapter

    for adapter in set(api.adapters.values()):
        if not isinstance(adapter, UnixHTTPAdapter):
            continue  # tcp/tls: requests' own pool manager keys by host already
        by_url = adapter.get_connection

        def get_connection(url, proxies=None, _by_url=by_url):
            parts = urlsplit(url)
            return _by_url(f"{parts.scheme}://{parts.netloc}", proxies)

        adapter.get_connection = get_connection
        adapter.pools.clear()  # closes the pool of the version check made before the patch


@functools.lru_cache(maxsize=1)
def client():
    """A ping-checked Docker SDK client, or DockerUnavailable naming the fix."""
    import docker.errors

    try:
        engine = new_client(timeout=30)
        engine.ping()
    except docker.errors.DockerException as exc:
        reason = _short_reason(exc)
        host = os.environ.get("DOCKER_HOST", "the local socket")
        raise DockerUnavailable(
            f"cannot reach the Docker engine at {host} ({reason})", fix=START_ENGINE_FIX
        ) from None
    return engine


def reset() -> None:
    """Forget the cached client (after the engine was restarted, in tests)."""
    client.cache_clear()


def _short_reason(exc: Exception) -> str:
    text = str(exc)
    for marker in ("Connection refused", "No such file or directory", "Permission denied",
                   "timed out"):
        if marker in text:
            return marker.lower()
    return text.splitlines()[0][:120] if text else type(exc).__name__


@dataclass(frozen=True)
class ContainerInfo:
    service: str
    name: str
    state: str  # running, paused, exited, ...
    health: str  # healthy, unhealthy, starting, or "" without a healthcheck
    address: str  # the container's address on the lab's bridge network ("" if none)
    id: str


def project_containers(project: str) -> list[ContainerInfo]:
    """The containers of one compose project, found by compose's own labels."""
    engine = client()
    found = engine.containers.list(
        all=True, filters={"label": f"com.docker.compose.project={project}"}
    )
    result = []
    for c in found:
        attrs = c.attrs
        state = attrs.get("State", {})
        networks = attrs.get("NetworkSettings", {}).get("Networks") or {}
        address = next((n.get("IPAddress") for n in networks.values() if n.get("IPAddress")), "")
        result.append(ContainerInfo(
            service=c.labels.get("com.docker.compose.service", c.name),
            name=c.name,
            state=state.get("Status", "unknown"),
            health=(state.get("Health") or {}).get("Status", ""),
            address=address,
            id=c.id,
        ))
    return sorted(result, key=lambda info: info.service)


def container(project: str, service: str):
    """The SDK container object of one service (to stop, pause, read stats)."""
    engine = client()
    found = engine.containers.list(all=True, filters={"label": [
        f"com.docker.compose.project={project}", f"com.docker.compose.service={service}"]})
    if not found:
        from lab.errors import StackError

        raise StackError(f"service {service!r} of {project} is not running", fix="lab up")
    return found[0]


def project_resources(project: str) -> dict[str, list[str]]:
    """Names of the containers, networks and volumes a project left on the engine."""
    engine = client()
    label = {"label": f"com.docker.compose.project={project}"}
    return {
        "containers": [c.name for c in engine.containers.list(all=True, filters=label)],
        "networks": [n.name for n in engine.networks.list(filters=label)],
        "volumes": [v.name for v in engine.volumes.list(filters=label)],
    }


def bridge_reachable() -> bool:
    """Linux hosts route to container addresses directly; Docker Desktop's VM does not."""
    return sys.platform.startswith("linux")


def memory_used(stats: dict) -> int:
    """A container's memory in bytes as `docker stats` shows it: usage without the inactive
    page cache (cgroup v2 ``inactive_file``, v1 ``total_inactive_file``)."""
    mem = stats.get("memory_stats") or {}
    detail = mem.get("stats") or {}
    cache = detail.get("inactive_file", detail.get("total_inactive_file", 0))
    return max(0, int(mem.get("usage", 0)) - int(cache))


def project_memory(project: str) -> dict[str, int]:
    """Memory in use per service of a compose project (one stats read each, no streaming)."""
    engine = client()
    found = engine.containers.list(filters={"label": f"com.docker.compose.project={project}"})
    result = {}
    for c in found:
        try:
            stats = c.stats(stream=False, one_shot=True)
        except Exception:  # a container that just stopped: skip it
            continue
        result[c.labels.get("com.docker.compose.service", c.name)] = memory_used(stats)
    return result
