"""The drivers' packages, pinned in their files, installed on demand and never by `make demo`.

* pip: into the interpreter the lab runs in (``python -m pip install name==version``); the same
  pins are the project's optional extra ``clients`` (``pip install -e '.[clients]'``, which
  ``make clients`` runs), checked equal by a test.
* npm: into one folder outside the repository's tracked files: ``$POOLER_LAB_CLIENTS_DIR``, else
  ``.clients/`` in a checkout (ignored by git), else ``<state root>/clients``.
* system: programs that must be on PATH (pgbench and psql come with postgresql-client).

A driver whose packages cannot be installed is reported as "not installed" with the reason; it
is never counted as a failure of an endpoint.
"""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path

from lab import resources
from lab.clients.model import Driver

DIR_ENV = "POOLER_LAB_CLIENTS_DIR"


def node_dir() -> Path:
    return resources.install_dir(DIR_ENV, "clients")


def split_pin(driver: Driver, pkg: str) -> tuple[str, str]:
    """``asyncpg==0.32.0`` -> (asyncpg, 0.32.0); ``@scope/x@1.2`` -> (@scope/x, 1.2)."""
    if driver.ecosystem == "pip":
        name, _, version = pkg.partition("==")
        return re.sub(r"\[.*\]$", "", name), version
    if driver.ecosystem == "npm":
        name, _, version = pkg.rpartition("@")
        return name, version
    return pkg, ""


def _pip_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def installed_version(driver: Driver, pkg: str) -> str | None:
    name, _ = split_pin(driver, pkg)
    if driver.ecosystem == "pip":
        return _pip_version(name)
    if driver.ecosystem == "npm":
        manifest = node_dir() / "node_modules" / name / "package.json"
        try:
            return str(json.loads(manifest.read_text())["version"])
        except (OSError, ValueError, KeyError):
            return None
    path = shutil.which(name)
    if path is None:
        return None
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
        line = (out.stdout.strip().splitlines() or ["?"])[0]
        number = re.search(r"\d+(\.\d+)+", line)  # "pgbench (PostgreSQL) 15.18" -> 15.18
        return number.group(0) if number else line
    except (OSError, subprocess.SubprocessError):
        return "?"


def missing(driver: Driver) -> list[str]:
    """The driver's packages that are absent or at another version than pinned."""
    result = []
    for pkg in driver.packages:
        have = installed_version(driver, pkg)
        want = split_pin(driver, pkg)[1]
        if have is None or (want and have != want):
            result.append(pkg)
    return result


def versions(driver: Driver) -> dict[str, str]:
    found = {split_pin(driver, pkg)[0]: installed_version(driver, pkg) or "missing"
             for pkg in driver.packages}
    for name in driver.also_record:
        found[name] = _pip_version(name) or "missing"
    return found


def ensure(drivers: Sequence[Driver], install: bool = True,
           log: Callable[[str], None] = lambda _t: None) -> dict[str, str]:
    """Install what the drivers miss (one pip and one npm call); returns, per driver that still
    cannot run, the reason."""
    reasons: dict[str, str] = {}
    wanted: dict[str, list[str]] = {"pip": [], "npm": []}
    for driver in drivers:
        if driver.untestable:
            continue
        absent = missing(driver)
        if not absent:
            continue
        if driver.ecosystem == "system" or not install:
            what = ", ".join(absent)
            reasons[driver.name] = (f"{what} not on PATH" if driver.ecosystem == "system"
                                    else f"{what} not installed (make clients installs it)")
            continue
        wanted[driver.ecosystem] += [p for p in absent if p not in wanted[driver.ecosystem]]
    failures: dict[str, str] = {}
    if wanted["pip"]:
        log(f"installing {' '.join(wanted['pip'])} with pip (once)")
        failure = resources.run_installer([sys.executable, "-m", "pip", "install", "--quiet",
                        "--disable-pip-version-check", *wanted["pip"]])
        if failure:
            failures["pip"] = f"pip install failed: {failure}"
    if wanted["npm"]:
        folder = node_dir()
        folder.mkdir(parents=True, exist_ok=True)
        log(f"installing {' '.join(wanted['npm'])} with npm into {folder} (once)")
        failure = resources.run_installer(
            ["npm", "install", "--prefix", str(folder), "--no-audit", "--no-fund",
             "--save-exact", "--loglevel=error", *wanted["npm"]])
        if failure:
            failures["npm"] = f"npm install failed: {failure}"
    importlib.invalidate_caches()
    for driver in drivers:
        if driver.name in reasons or driver.untestable:
            continue
        still = missing(driver)
        if still:
            reasons[driver.name] = failures.get(driver.ecosystem) or \
                f"{', '.join(still)} still missing after installing"
    return reasons


def listing() -> list[dict[str, object]]:
    """What `lab clients --list` shows: each driver, its pins and whether they are there."""
    from lab.clients.discovery import catalogue

    rows = []
    for path, d in catalogue():
        absent = missing(d)
        rows.append({"name": d.name, "title": d.title, "ecosystem": d.ecosystem,
                     "packages": list(d.packages), "file": str(path),
                     "installed": "n/a" if d.untestable else
                     ("yes" if not absent else "missing " + ", ".join(absent)),
                     "variants": [v.key for v in d.variants], "untestable": d.untestable})
    return rows


def install_all(chosen: Sequence[str] = (), log: Callable[[str], None] = lambda _t: None) -> None:
    """Install every chosen driver's packages; a LabError naming the ones that failed."""
    from lab.clients.discovery import select
    from lab.errors import LabError

    reasons = ensure([d for _, d in select(chosen)], True, log)
    if reasons:
        raise LabError("could not install: " + "; ".join(f"{k} ({v})" for k, v in
                                                         reasons.items()),
                       fix="check the network to PyPI and the npm registry, then make clients")
