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


@functools.lru_cache(maxsize=1)
def client():
    """A ping-checked Docker SDK client, or DockerUnavailable naming the fix."""
    import docker  # the SDK pulls in requests; keep it off the import path of `lab --help`
    import docker.errors

    try:
        engine = docker.from_env(timeout=30)
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
