"""The lab's one image (PostgreSQL 17 + PgBouncer), built from compose/Dockerfile.

The tag carries a hash of the build context, so a changed Dockerfile or entrypoint makes
`lab up` ask for a rebuild instead of running a stale image. Where no registry is reachable,
``build_offline_base`` makes the Debian base with debootstrap from the host's configured mirror
(read at run time, never stored in the repository) and imports it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from lab import engine, resources
from lab.errors import DockerUnavailable, StackError

REPOSITORY = "pooler-lab/lab"
PUBLIC_BASE = "debian:trixie-slim"
OFFLINE_BASE = "pooler-lab/base:trixie"
SUITE = "trixie"

Log = Callable[[str], None]


def context_hash() -> str:
    digest = hashlib.sha256()
    context = resources.compose_dir()
    for name in ("Dockerfile", "lab-entrypoint", "lab-relay"):
        digest.update(name.encode() + b"\0" + (context / name).read_bytes())
    return digest.hexdigest()[:12]


def tag() -> str:
    return f"{REPOSITORY}:{context_hash()}"


def exists(name: str) -> bool:
    import docker.errors

    try:
        engine.client().images.get(name)
        return True
    except docker.errors.ImageNotFound:
        return False


def require() -> str:
    """The image `lab up` needs, or a StackError telling how to build it."""
    name = tag()
    if not exists(name):
        raise StackError(
            f"the lab image {name} is not built",
            fix="lab image build (or, with no registry reachable: lab image build --offline)",
        )
    return name


def info(name: str) -> dict[str, str]:
    image = engine.client().images.get(name)
    labels = image.labels or {}
    return {
        "tag": name,
        "id": image.id,
        "base": labels.get("org.pooler-lab.base", "unknown"),
        "created": image.attrs.get("Created", ""),
    }


def build(offline: bool = False, if_missing: bool = False, log: Log = print) -> str:
    """Build the lab image; return its tag."""
    name = tag()
    if if_missing and exists(name):
        log(f"{name} is already built")
        return name
    if offline:
        base = OFFLINE_BASE
        if not exists(base):
            build_offline_base(log)
    else:
        base = _registry_base(log)
    log(f"building {name} from {base}")
    import docker.errors

    try:
        _image, stream = engine.client().images.build(
            path=str(resources.compose_dir()),
            tag=name,
            buildargs={"BASE_IMAGE": base},
            labels={"org.pooler-lab.base": base},
            rm=True,
            forcerm=True,
        )
        for chunk in stream:
            line = (chunk.get("stream") or "").rstrip()
            if line.startswith("Step "):
                log("  " + line)
    except docker.errors.BuildError as exc:
        tail = "; ".join((c.get("stream") or c.get("error") or "").strip()
                         for c in list(exc.build_log)[-3:])
        raise StackError(f"image build failed: {exc.msg} ({tail})",
                         fix="check the engine can reach Debian's package mirror, then retry "
                             "lab image build") from None
    except docker.errors.APIError as exc:
        raise StackError(f"image build failed: {exc.explanation or exc}",
                         fix="retry lab image build") from None
    return name


def _registry_base(log: Log) -> str:
    import docker.errors

    for candidate in (PUBLIC_BASE, OFFLINE_BASE):
        if exists(candidate):
            return candidate
    log(f"pulling {PUBLIC_BASE}")
    try:
        engine.client().images.pull(PUBLIC_BASE)
    except docker.errors.APIError as exc:
        raise StackError(
            f"cannot pull {PUBLIC_BASE} ({(exc.explanation or str(exc))[:100]})",
            fix="with no registry reachable: lab image build --offline",
        ) from None
    return PUBLIC_BASE


def debian_mirror() -> str:
    """The Debian mirror the host's apt already uses (deb822 or one-line sources)."""
    candidates: list[Path] = sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    candidates += [Path("/etc/apt/sources.list"), *sorted(
        Path("/etc/apt/sources.list.d").glob("*.list"))]
    for path in candidates:
        try:
            text = path.read_text()
        except OSError:
            continue
        mirror = parse_mirror(text)
        if mirror:
            return mirror
    raise StackError(
        "no Debian mirror is configured in /etc/apt/sources.list(.d)",
        fix="set LAB_DEBIAN_MIRROR=http://your-mirror/debian and rerun lab image build --offline",
    )


def parse_mirror(text: str) -> str | None:
    """First non-security Debian archive URI in an apt sources file (either format)."""
    for stanza in re.split(r"\n\s*\n", text):
        uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
        if uris and "security" not in uris.group(1) and "Types: deb" in stanza:
            return uris.group(1)
    for line in text.splitlines():
        match = re.match(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line)
        if match and "security" not in match.group(1) and "security" not in match.group(2):
            return match.group(1)
    return None


def build_offline_base(log: Log = print) -> str:
    """debootstrap a minimal Debian trixie and `docker import` it as OFFLINE_BASE."""
    if shutil.which("debootstrap") is None:
        raise StackError("debootstrap is not installed",
                         fix="sudo apt-get install -y debootstrap")
    if os.geteuid() != 0:
        raise StackError("debootstrap needs root",
                         fix="sudo $(command -v lab) image build --offline")
    mirror = os.environ.get("LAB_DEBIAN_MIRROR") or debian_mirror()
    engine.client()  # fail early, before minutes of debootstrap, if the engine is down
    with tempfile.TemporaryDirectory(prefix="pooler-lab-base-", dir="/var/tmp") as tmp:
        rootfs = Path(tmp) / "rootfs"
        log(f"debootstrap {SUITE} (minbase) from the host's mirror")
        _run(["debootstrap", "--variant=minbase", SUITE, str(rootfs), mirror],
             "debootstrap failed")
        tarball = Path(tmp) / "rootfs.tar"
        _run(["tar", "-C", str(rootfs), "-cf", str(tarball), "."], "tar of the base failed")
        log(f"importing {OFFLINE_BASE}")
        repository, _, base_tag = OFFLINE_BASE.partition(":")
        try:
            engine.client().api.import_image_from_file(
                str(tarball), repository=repository, tag=base_tag)
        except Exception as exc:  # the SDK raises requests or docker errors here
            raise DockerUnavailable(f"docker import failed ({exc})",
                                    fix="check the engine with lab doctor") from None
    if not exists(OFFLINE_BASE):
        raise StackError(f"{OFFLINE_BASE} is missing after the import",
                         fix="rerun lab image build --offline")
    return OFFLINE_BASE


def _run(argv: list[str], what: str) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
        raise StackError(f"{what}: {tail[0][:160]}", fix="check the mirror and disk space, "
                                                         "then rerun lab image build --offline")
