"""Files shipped beside the package: compose/ (image and topology), scenarios/,
experiments/, clients/ (driver files) and sweeps/ (`lab sweep` presets).

In a checkout (editable install) they are the repository's top-level folders; a wheel carries
copies under lab/_data/.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _find(name: str) -> Path:
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"pooler-lab's {name}/ folder is missing from {_PACKAGE.parent}")


def compose_dir() -> Path:
    return _find("compose")


def scenarios_dir() -> Path:
    return _find("scenarios")


def experiments_dir() -> Path:
    return _find("experiments")


def clients_dir() -> Path:
    return _find("clients")


def sweeps_dir() -> Path:
    return _find("sweeps")


def repo_root() -> Path | None:
    """The checkout the package runs from, if any (for the git commit in manifests)."""
    root = _PACKAGE.parent
    return root if (root / ".git").exists() else None


def env_paths(var: str, what: str) -> list[Path]:
    """The folders and files an environment variable names (``os.pathsep``-separated), each
    checked to exist: user experiments (POOLER_LAB_EXPERIMENTS), user drivers
    (POOLER_LAB_CLIENTS). ``what`` names the files in the error: "experiment files"."""
    from lab.errors import ConfigError

    paths = []
    for part in os.environ.get(var, "").split(os.pathsep):
        if not part.strip():
            continue
        path = Path(part.strip()).expanduser().absolute()
        if not path.exists():
            raise ConfigError(f"{var} names {part.strip()}, which does not exist",
                              fix=f"give {var} folders of {what} (or files), "
                                  f"separated by {os.pathsep!r}")
        paths.append(path)
    return paths


def load_file(path: Path, module_name: str, fix: str):
    """Import one user-extensible Python file (an experiment, a driver) as ``module_name``;
    a file that does not import is a ConfigError naming its line or its exception."""
    import importlib.util
    import sys

    from lab.errors import ConfigError

    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot load {path} as Python", fix="give a .py file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses in the file look their module up
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(module_name, None)
        raise ConfigError(f"{path} line {exc.lineno}: {exc.msg}", fix=fix) from None
    except Exception as exc:
        sys.modules.pop(module_name, None)
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ConfigError(f"{path}: {type(exc).__name__}: {text}", fix=fix) from None
    return module


def python_files(folder: Path) -> list[Path]:
    """The user-extensible files of a folder, in name order: ``*.py`` not starting with ``_``."""
    return [p for p in sorted(folder.glob("*.py")) if not p.name.startswith("_")]


def name_of_file(path: Path) -> str:
    """The name a user-extensible file must define: ``03_sql_prepare.py`` -> ``sql-prepare``
    (a leading number only orders the files)."""
    return re.sub(r"^\d+_", "", path.stem).replace("_", "-")


INSTALL_TIMEOUT_S = 300


def install_dir(env_var: str, folder: str) -> Path:
    """Where packages installed on demand go, outside the repository's tracked files:
    ``$<env_var>``, else ``.<folder>/`` in a checkout (ignored by git), else
    ``<state root>/<folder>``."""
    from lab.state import state_root

    explicit = os.environ.get(env_var)
    if explicit:
        return Path(explicit).expanduser().absolute()
    root = repo_root()
    return root / f".{folder}" if root is not None else state_root() / folder


def run_installer(argv: Sequence[str], timeout: float = INSTALL_TIMEOUT_S) -> str | None:
    """Run a package installer (pip, npm); None when it worked, else its last error line."""
    import subprocess

    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return f"{argv[0]} is not installed"
    except subprocess.TimeoutExpired:
        return f"{' '.join(argv[:3])} took longer than {timeout:.0f} s"
    if proc.returncode == 0:
        return None
    lines = (proc.stderr + proc.stdout).strip().splitlines()
    errors = [ln for ln in lines if "ERR" in ln or "error" in ln.lower()]
    return ((errors or lines or [f"exit code {proc.returncode}"])[-1]).strip()[:300]
