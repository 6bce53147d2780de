"""Finding experiments: the built-in files, the folders of ``POOLER_LAB_EXPERIMENTS``, and any
file given by path (see the package docstring for the file format)."""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from pathlib import Path

from lab import resources
from lab.config import ENDPOINTS
from lab.errors import ConfigError
from lab.experiments.model import POOLERS, Experiment
from lab.resources import name_of_file as file_name_of
from lab.resources import python_files as _files

ENV_VAR = "POOLER_LAB_EXPERIMENTS"
_LANE_KEY = re.compile(r"^[a-z0-9-]+$")


def user_paths() -> list[Path]:
    """The folders and files named by ``POOLER_LAB_EXPERIMENTS`` (``os.pathsep``-separated)."""
    return resources.env_paths(ENV_VAR, "experiment files")


def _entries() -> list[tuple[Path, Experiment]]:
    builtin_dir = resources.experiments_dir().resolve()
    files = [(p, True) for p in _files(builtin_dir)]
    for path in user_paths():
        if path.resolve() == builtin_dir:
            continue  # the built-in folder itself: already there
        files += [(p, False) for p in (_files(path) if path.is_dir() else [path])]
    entries: list[tuple[Path, Experiment]] = []
    seen: dict[str, Path] = {}
    for path, builtin in files:
        exp = load(path, builtin)
        if exp.name in seen and seen[exp.name] != path.resolve():
            raise ConfigError(f"two experiments named {exp.name!r}: {seen[exp.name]} and "
                              f"{path}", fix="rename one of the files (and its name=)")
        if exp.name not in seen:
            seen[exp.name] = path.resolve()
            entries.append((path.resolve(), exp))
    return entries


def catalogue() -> tuple[Experiment, ...]:
    """The built-in experiments in workshop order, then those of ``POOLER_LAB_EXPERIMENTS``."""
    return tuple(exp for _, exp in _entries())


def names() -> list[str]:
    return [e.name for e in catalogue()]


def get(name: str) -> Experiment:
    for exp in catalogue():
        if exp.name == name:
            return exp
    raise ConfigError(f"no experiment named {name!r}",
                      fix=f"lab experiment list shows them: {', '.join(names())}")


def resolve(name_or_path: str | Path) -> Experiment:
    """An experiment by name (``set-leak``), or any experiment file by path."""
    text = str(name_or_path)
    path = Path(text).expanduser().absolute()
    if not (text.endswith(".py") or "/" in text or path.is_file()):
        return get(text)
    if not path.is_file():
        raise ConfigError(f"experiment file {text} does not exist",
                          fix="give the path of a .py experiment file or a name from "
                              "`lab experiment list`")
    entries = _entries()
    for known, exp in entries:
        if known == path.resolve():
            return exp
    exp = load(path)
    for known, other in entries:
        if other.name == exp.name:
            raise ConfigError(f"{text} defines {exp.name!r}, which {known} defines already",
                              fix=f"rename {path.name} (and its name=)")
    return exp


def select(chosen: Sequence[str], run_all: bool) -> list[Experiment]:
    if run_all and chosen:
        raise ConfigError("give experiment names or --all, not both",
                          fix="lab experiment run --all")
    if run_all:
        return list(catalogue())
    if not chosen:
        raise ConfigError("no experiment given", fix="lab experiment run NAME (or --all)")
    return [resolve(n) for n in chosen]


def parse_expect(values: Sequence[str], chosen: Sequence[Experiment] = ()
                 ) -> dict[str, dict[str, str]]:
    """``["set-leak.transaction=isolated"]`` -> ``{"set-leak": {"transaction": "isolated"}}``.

    Names are checked against ``chosen`` and the catalogue, so a typo is an error and not a
    silent pass.
    """
    result: dict[str, dict[str, str]] = {}
    for item in values:
        target, sep, outcome = item.partition("=")
        name, dot, lane = target.strip().partition(".")
        if not sep or not dot or not name or not lane or not outcome.strip():
            raise ConfigError(f"--expect {item!r} is not EXPERIMENT.LANE=OUTCOME",
                              fix="e.g. --expect set-leak.transaction=isolated")
        exp = next((e for e in chosen if e.name == name), None) or get(name)
        keys = [ln.key for ln in exp.lanes]
        if lane not in keys:
            raise ConfigError(f"experiment {name!r} has no lane {lane!r}",
                              fix=f"use one of: {', '.join(keys)}")
        result.setdefault(name, {})[lane] = outcome.strip()
    return result


# -- loading one file ------------------------------------------------------------------------


def load(path: Path, builtin: bool = False) -> Experiment:
    """The ``EXPERIMENT`` of one file (imported once per process), checked."""
    return _load(path.resolve(), builtin)


@functools.cache
def _load(path: Path, builtin: bool) -> Experiment:
    fix = "correct the experiment file" if builtin else \
        f"correct the experiment file, or take it out of {ENV_VAR}"
    module_name = f"_lab_experiments.{'builtin' if builtin else 'user'}.{path.stem}"
    module = resources.load_file(path, module_name, fix)
    exp = getattr(module, "EXPERIMENT", None)
    if not isinstance(exp, Experiment):
        raise ConfigError(f"{path} defines no EXPERIMENT = Experiment(...)",
                          fix="see `lab/experiments/__init__.py` for the file format")
    _check(exp, path)
    return exp


def _check(exp: Experiment, path: Path) -> None:
    """What would otherwise fail half-way through a run, or never be selectable."""
    expected_name = file_name_of(path)
    if exp.name != expected_name:
        raise ConfigError(f"{path} defines experiment {exp.name!r}; its file name says "
                          f"{expected_name!r}",
                          fix=f"name={expected_name!r}, or rename the file after the name")
    keys = [lane.key for lane in exp.lanes]
    for lane in exp.lanes:
        if not _LANE_KEY.match(lane.key) or keys.count(lane.key) > 1:
            raise ConfigError(f"{path}: lane key {lane.key!r} is not unique lowercase "
                              "letters, digits and hyphens",
                              fix="give each lane its own key such as transaction-set-local")
        if lane.endpoint not in ENDPOINTS:
            raise ConfigError(f"{path}: lane {lane.key!r} has no endpoint {lane.endpoint!r}",
                              fix=f"use one of: {', '.join(ENDPOINTS)}")
    for endpoint in {**exp.settings, **(exp.real_settings or {})}:
        if endpoint not in POOLERS:
            raise ConfigError(f"{path}: runtime settings exist only on the poolers, not on "
                              f"{endpoint!r}", fix=f"use one of: {', '.join(POOLERS)}")
