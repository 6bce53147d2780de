"""Scenario discovery: what `lab scenarios` lists and what `lab run -P key=value` accepts.

A scenario is a plain locustfile. The built-in ones live in ``scenarios/`` (``serverless-burst``
is ``scenarios/serverless_burst.py``); any other locustfile can be given by path. Its first
docstring line is its description, and two optional literals describe it:

    PARAMS = {"spike_rate": {"default": 300.0, "help": "invocations/s during a spike"}, ...}
    DEFAULT_USERS = 150
    FAULTS = ["10s:pooler:restart"]   # lab run's --fault when none is given (lab.faults)

They are read with ``ast`` and never imported: importing a locustfile imports Locust, whose
gevent patching must stay out of the orchestrator process. ``-P`` values are coerced to the
type of their default (int, float, bool, str; a None default takes a number, ``none`` or
text). A locustfile without ``PARAMS`` takes any ``-P`` and gets the values as strings.

Locust processes use ``coerce`` too (``lab.users`` reads ``LAB_PARAMS`` with it), so both sides
agree on every value.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab import resources
from lab.errors import ConfigError

FALLBACK_USERS = 1
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_NONE = ("", "none", "null")


@dataclass(frozen=True)
class Param:
    name: str
    default: Any
    help: str = ""
    choices: tuple[Any, ...] | None = None

    def coerce(self, value: Any) -> Any:
        result = _coerce(self.name, self.default, value)
        if self.choices is not None and result not in self.choices:
            raise ConfigError(f"-P {self.name}={value!r} is not one of "
                              f"{', '.join(map(str, self.choices))}",
                              fix=f"-P {self.name}={self.choices[0]}")
        return result

    def to_json(self) -> dict[str, Any]:
        data = {"default": self.default, "help": self.help,
                "type": type(self.default).__name__ if self.default is not None else "any"}
        if self.choices is not None:
            data["choices"] = list(self.choices)
        return data


@dataclass(frozen=True)
class Scenario:
    name: str
    path: Path
    description: str
    params: dict[str, Param] = field(default_factory=dict)
    default_users: int = FALLBACK_USERS
    builtin: bool = False
    declares_params: bool = True  # False: a locustfile without PARAMS (values pass as strings)
    faults: tuple[str, ...] = ()  # FAULTS: the run's faults unless --fault is given

    def coerce(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Every parameter (defaults included), ``raw`` values coerced to the default's type."""
        return coerce(self.params if self.declares_params else None, raw, source=self.name)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "file": str(self.path), "description": self.description,
                "default_users": self.default_users, "builtin": self.builtin,
                "faults": list(self.faults),
                "params": {k: p.to_json() for k, p in self.params.items()}}


def coerce(params: Mapping[str, Param] | None, raw: Mapping[str, Any],
           source: str = "the scenario") -> dict[str, Any]:
    """Defaults overlaid with ``raw``; unknown keys are a ConfigError naming the valid ones.
    ``params`` None means "declares nothing": ``raw`` passes through unchanged."""
    if params is None:
        return dict(raw)
    unknown = [key for key in raw if key not in params]
    if unknown:
        valid = ", ".join(params) or "none"
        raise ConfigError(f"{source} has no parameter {unknown[0]!r} (valid: {valid})",
                          fix="see `lab scenarios` for each scenario's -P keys")
    result = {key: p.default for key, p in params.items()}
    for key, value in raw.items():
        result[key] = params[key].coerce(value)
    return result


def params_from_literal(literal: Any, source: str) -> dict[str, Param]:
    """``PARAMS`` as written in a locustfile -> Param objects (checked)."""
    if not isinstance(literal, dict):
        raise ConfigError(f"{source}: PARAMS must be a dict literal",
                          fix='PARAMS = {"name": {"default": 1, "help": "..."}}')
    params = {}
    for key, spec in literal.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise ConfigError(f"{source}: parameter name {key!r} is not an identifier",
                              fix="use names like spike_rate")
        if not isinstance(spec, dict) or "default" not in spec:
            raise ConfigError(f"{source}: PARAMS[{key!r}] needs a 'default'",
                              fix=f'PARAMS[{key!r}] = {{"default": ..., "help": "..."}}')
        default = spec["default"]
        if default is not None and not isinstance(default, bool | int | float | str):
            raise ConfigError(f"{source}: PARAMS[{key!r}] default {default!r} is not "
                              "int, float, str, bool or None",
                              fix="use a plain literal default")
        choices = spec.get("choices")
        params[key] = Param(key, default, str(spec.get("help", "")),
                            tuple(choices) if choices is not None else None)
    return params


def _coerce(name: str, default: Any, value: Any) -> Any:
    if not isinstance(value, str):
        if default is None or value is None:
            return value
        if isinstance(default, bool) and isinstance(value, bool):
            return value
        if isinstance(default, int) and not isinstance(default, bool) \
                and isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(default, float) and isinstance(value, int | float) \
                and not isinstance(value, bool):
            return float(value)
        if isinstance(default, str):
            return str(value)
        value = str(value)
    text = value.strip()
    if isinstance(default, bool):
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ConfigError(f"-P {name}={value!r} is not true or false", fix=f"-P {name}=true")
    if isinstance(default, int):
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"-P {name}={value!r} is not a whole number",
                              fix=f"-P {name}={default}") from None
    if isinstance(default, float):
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        if math.isnan(number):
            raise ConfigError(f"-P {name}={value!r} is not a number",
                              fix=f"-P {name}={default:g}") from None
        return number
    if isinstance(default, str):
        return value
    # default None: a number, none, or text
    if text.lower() in _NONE:
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return value


# -- discovery --------------------------------------------------------------------------------


def builtin_name(path: Path) -> str:
    return path.stem.replace("_", "-")


def available() -> list[Scenario]:
    """The built-in scenarios, by name."""
    folder = resources.scenarios_dir()
    return [load(path, builtin=True) for path in sorted(folder.glob("*.py"))
            if not path.name.startswith("_")]


def resolve(name_or_path: str | Path) -> Scenario:
    """A built-in scenario by name (``serverless-burst``), or any locustfile by path."""
    text = str(name_or_path)
    # Absolute: Locust runs in the run directory, where a relative path means nothing.
    path = Path(text).expanduser().absolute()
    if text.endswith(".py") or "/" in text or path.is_file():
        if not path.is_file():
            raise ConfigError(f"locustfile {text} does not exist",
                              fix="give a path to a .py locustfile or a name from "
                                  "`lab scenarios`")
        builtin = path.resolve().parent == resources.scenarios_dir().resolve()
        return load(path, builtin=builtin)
    candidate = resources.scenarios_dir() / (text.replace("-", "_") + ".py")
    if not candidate.is_file() or candidate.name.startswith("_"):
        names = ", ".join(s.name for s in available())
        raise ConfigError(f"unknown scenario {text!r} (built in: {names})",
                          fix="run `lab scenarios`, or give the path of a locustfile")
    return load(candidate, builtin=True)


def load(path: Path, builtin: bool = False) -> Scenario:
    """Read a locustfile's docstring, PARAMS and DEFAULT_USERS without importing it."""
    try:
        source = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", fix="check the path") from None
    try:
        tree = ast.parse(source, filename=str(path))
    except SyntaxError as exc:
        raise ConfigError(f"{path} line {exc.lineno}: {exc.msg}",
                          fix=f"correct the Python syntax of {path}") from None
    doc = ast.get_docstring(tree) or ""
    description = doc.strip().splitlines()[0].strip() if doc.strip() else "(no description)"
    literals = _module_literals(tree, path, ("PARAMS", "DEFAULT_USERS", "FAULTS"))
    declares = "PARAMS" in literals
    params = params_from_literal(literals["PARAMS"], str(path)) if declares else {}
    users = literals.get("DEFAULT_USERS", FALLBACK_USERS)
    if not isinstance(users, int) or isinstance(users, bool) or users < 1:
        raise ConfigError(f"{path}: DEFAULT_USERS must be a whole number >= 1, not {users!r}",
                          fix="DEFAULT_USERS = 10")
    faults = literals.get("FAULTS", [])
    if not isinstance(faults, list | tuple) or not all(isinstance(f, str) for f in faults):
        raise ConfigError(f"{path}: FAULTS must be a list of AT:TARGET:ACTION[:DURATION] texts",
                          fix='FAULTS = ["10s:pooler:restart"]')
    if faults:
        from lab.faults import parse_faults

        parse_faults(faults)  # a bad default is the scenario's error, said before any run
    return Scenario(name=builtin_name(path), path=path, description=description,
                    params=params, default_users=users, builtin=builtin,
                    declares_params=declares, faults=tuple(faults))


def _module_literals(tree: ast.Module, path: Path, names: tuple[str, ...]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        for target in targets:
            if isinstance(target, ast.Name) and target.id in names:
                try:
                    found[target.id] = ast.literal_eval(value)
                except ValueError:
                    raise ConfigError(
                        f"{path} line {node.lineno}: {target.id} must be a literal "
                        "(no names or calls)", fix=f"write {target.id} as a plain literal"
                    ) from None
    return found
