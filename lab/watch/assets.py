"""The page's chart library, uPlot (small and fast: a few hundred thousand points a second on a
projector laptop), installed from the npm registry by the project's own set-up (`make setup`,
or `lab watch` on first use) and served by `lab watch` itself: the page asks no other host.

Folder, outside the repository's tracked files: ``$POOLER_LAB_WEB_DIR``, else ``.web/`` in a
checkout (ignored by git), else ``<state root>/web``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from lab import resources
from lab.errors import LabError

DIR_ENV = "POOLER_LAB_WEB_DIR"
PACKAGE, VERSION = "uplot", "1.6.32"
FILES = {"uPlot.iife.min.js": "dist/uPlot.iife.min.js", "uPlot.min.css": "dist/uPlot.min.css"}


def web_dir() -> Path:
    return resources.install_dir(DIR_ENV, "web")


def package_dir() -> Path:
    return web_dir() / "node_modules" / PACKAGE


def installed_version() -> str | None:
    try:
        return str(json.loads((package_dir() / "package.json").read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


def vendor_file(name: str) -> Path | None:
    """The path of one of the library's FILES served under /vendor/, or None."""
    rel = FILES.get(name)
    return None if rel is None else package_dir() / rel


def ensure(install: bool = True, log: Callable[[str], None] = lambda _t: None) -> None:
    """uPlot at the pinned version, installed with npm when absent; a one-line LabError when
    it cannot be."""
    if installed_version() == VERSION and all(vendor_file(n).is_file() for n in FILES):
        return
    if not install:
        raise LabError(f"the live view's chart library ({PACKAGE} {VERSION}) is not installed",
                       fix="make setup (it runs `lab watch --install-only`; needs npm)")
    folder = web_dir()
    folder.mkdir(parents=True, exist_ok=True)
    log(f"installing {PACKAGE}@{VERSION} with npm into {folder} (once)")
    failure = resources.run_installer(
        ["npm", "install", "--prefix", str(folder), "--no-audit", "--no-fund", "--save-exact",
         "--loglevel=error", f"{PACKAGE}@{VERSION}"])
    if failure or installed_version() != VERSION:
        raise LabError(f"could not install the live view's chart library ({PACKAGE} "
                       f"{VERSION}): {failure or 'not found after npm install'}",
                       fix="install Node.js and npm (apt install npm), check the network to "
                           "the npm registry, then lab watch --install-only")
