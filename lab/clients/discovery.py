"""Finding driver files: the built-in ``clients/`` folder, the folders of
``POOLER_LAB_CLIENTS``, and any file given by path (see the package docstring)."""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from pathlib import Path

from lab import resources
from lab.clients.model import ECOSYSTEMS, Driver
from lab.errors import ConfigError
from lab.resources import name_of_file as file_name_of
from lab.resources import python_files as _files

ENV_VAR = "POOLER_LAB_CLIENTS"
_KEY = re.compile(r"^[a-z0-9][a-z0-9-]*$")


def _user_files() -> list[Path]:
    files = []
    for path in resources.env_paths(ENV_VAR, "driver files"):
        files += _files(path) if path.is_dir() else [path]
    return files


def _paths() -> list[Path]:
    builtin = resources.clients_dir().resolve()
    return [p.resolve() for p in [*_files(builtin), *_user_files()]]


def catalogue(paths: Sequence[Path] | None = None) -> list[tuple[Path, Driver]]:
    """Built-in driver files in name order, then those of ``POOLER_LAB_CLIENTS``."""
    found: list[tuple[Path, Driver]] = []
    seen: dict[str, Path] = {}
    for path in _paths() if paths is None else paths:
        driver = load(path)
        if driver.name in seen:
            if seen[driver.name] != path:
                raise ConfigError(f"two drivers named {driver.name!r}: {seen[driver.name]} and "
                                  f"{path}", fix="rename one of the files (and its name=)")
            continue
        seen[driver.name] = path
        found.append((path, driver))
    return found


def select(chosen: Sequence[str]) -> list[tuple[Path, Driver]]:
    """The drivers named (by name, or a driver file's path), or all of them. Only the files
    named are loaded: a broken driver file stops only a matrix that includes it."""
    paths = _paths()
    if not chosen:
        return catalogue(paths)
    by_name: dict[str, list[Path]] = {}
    for path in paths:
        by_name.setdefault(file_name_of(path), []).append(path)
    picked: list[Path] = []
    for item in chosen:
        if item in by_name:
            picked += by_name[item]
        elif item.endswith(".py") or "/" in item:
            path = Path(item).expanduser().absolute()
            if not path.is_file():
                raise ConfigError(f"driver file {item} does not exist",
                                  fix="give a .py driver file or a name from `lab clients --list`")
            picked.append(path.resolve())
        else:
            raise ConfigError(f"no driver named {item!r}",
                              fix=f"use one of: {', '.join(by_name)}")
    return catalogue(list(dict.fromkeys(picked)))


def load(path: Path) -> Driver:
    """The ``DRIVER`` of one file (imported once per process), checked."""
    return _load(path.resolve())


@functools.cache
def _load(path: Path) -> Driver:
    fix = "correct the driver file"
    module_name = f"_lab_clients.{path.stem}"
    module = resources.load_file(path, module_name,
                                 f"{fix}; import a driver's own packages inside its run "
                                 "functions, so the file loads without them")
    driver = getattr(module, "DRIVER", None)
    if not isinstance(driver, Driver):
        raise ConfigError(f"{path} defines no DRIVER = Driver(...)",
                          fix="see lab/clients/__init__.py for the file format")
    _check(driver, path)
    return driver


def _check(driver: Driver, path: Path) -> None:
    expected = file_name_of(path)
    if driver.name != expected:
        raise ConfigError(f"{path} defines driver {driver.name!r}; its file name says "
                          f"{expected!r}", fix=f"name={expected!r}, or rename the file")
    if driver.ecosystem not in ECOSYSTEMS:
        raise ConfigError(f"{path}: ecosystem {driver.ecosystem!r} is not one of "
                          f"{', '.join(ECOSYSTEMS)}", fix="correct the driver file")
    keys = [v.key for v in driver.variants]
    if not driver.variants and not driver.untestable:
        raise ConfigError(f"{path}: driver {driver.name!r} has no variants",
                          fix="give at least Variant('default', ...)")
    for key in keys:
        if not _KEY.match(key) or keys.count(key) > 1:
            raise ConfigError(f"{path}: variant key {key!r} is not unique lowercase letters, "
                              "digits and hyphens", fix="give each variant its own key")
    for pkg in driver.packages:
        pinned = "==" in pkg if driver.ecosystem == "pip" else \
            "@" in pkg.lstrip("@") if driver.ecosystem == "npm" else True
        if not pinned:
            raise ConfigError(f"{path}: package {pkg!r} is not pinned",
                              fix="pin it: name==version (pip) or name@version (npm)")
