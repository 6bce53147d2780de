"""Where a lab keeps what must survive between commands: its settings and its secrets.

Layout, one directory per lab under the state root (``$POOLER_LAB_HOME``, else
``$XDG_STATE_HOME/pooler-lab``, else ``~/.local/state/pooler-lab``)::

    <root>/<name>/settings.json   effective settings of the last `lab up` (no secrets)
    <root>/<name>/secrets.json    generated passwords, mode 0600
    <root>/<name>/config/         files rendered for the containers (0700 directory)

Secrets are created once per lab and kept until the lab's directory is removed, so the
password is stable across `lab up` / `lab down`.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lab import config as cfgmod
from lab.errors import ConfigError, StackError


def state_root() -> Path:
    explicit = os.environ.get("POOLER_LAB_HOME")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "state"
    return base / "pooler-lab"


@dataclass(frozen=True)
class Secrets:
    """Passwords of one lab. ``repr`` never shows them."""

    postgres_password: str  # the user's password: role postgres, and postgres.<tenant>
    pgbouncer_password: str  # the dedicated pooler's auth_user (role pgbouncer)
    admin_password: str  # PgBouncer admin consoles (user lab_admin); not a Postgres role
    salt: str  # hex; salts the SCRAM verifiers written into PgBouncer auth files

    def __repr__(self) -> str:
        return "Secrets(***)"

    @classmethod
    def generate(cls) -> Secrets:
        return cls(
            postgres_password=secrets.token_urlsafe(24),
            pgbouncer_password=secrets.token_urlsafe(24),
            admin_password=secrets.token_urlsafe(24),
            salt=secrets.token_hex(16),
        )

    def values(self) -> tuple[str, ...]:
        return (self.postgres_password, self.pgbouncer_password, self.admin_password)


class LabState:
    """The state directory of one lab."""

    def __init__(self, name: str, root: Path | None = None):
        self.name = name
        self.root = root or state_root()
        self.dir = self.root / name

    @property
    def settings_path(self) -> Path:
        return self.dir / "settings.json"

    @property
    def secrets_path(self) -> Path:
        return self.dir / "secrets.json"

    @property
    def config_dir(self) -> Path:
        return self.dir / "config"

    def exists(self) -> bool:
        return self.settings_path.exists()

    # -- settings -------------------------------------------------------------------------
    def load_settings(self) -> cfgmod.LabConfig:
        if not self.settings_path.exists():
            raise StackError(
                f"lab {self.name!r} has never been brought up",
                fix=f"lab up{name_flag(self.name)}",
            )
        try:
            data = json.loads(self.settings_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise StackError(f"cannot read {self.settings_path} ({exc})",
                             fix=f"lab up{name_flag(self.name)} rewrites it") from None
        return cfgmod.from_dict(data)

    def save_settings(self, cfg: cfgmod.LabConfig) -> None:
        self._ensure_dir()
        atomic_write(self.settings_path, json.dumps(cfg.to_dict(), indent=2) + "\n", 0o644)

    # -- secrets --------------------------------------------------------------------------
    def secrets(self, create: bool = False) -> Secrets:
        """Read the lab's secrets; with ``create`` make them on first use (mode 0600)."""
        path = self.secrets_path
        if path.exists():
            mode = path.stat().st_mode & 0o777
            if mode & 0o077:
                # Tighten rather than refuse: the file is ours, and leaving it open is worse.
                os.chmod(path, 0o600)
            try:
                return Secrets(**json.loads(path.read_text()))
            except (OSError, TypeError, json.JSONDecodeError) as exc:
                raise ConfigError(
                    f"{path} is damaged ({type(exc).__name__})",
                    fix=f"remove it and run lab up{name_flag(self.name)} (a new password is made;"
                    " add --volumes to lab down first so the database takes it)",
                ) from None
        if not create:
            raise StackError(f"lab {self.name!r} has no password yet",
                             fix=f"lab up{name_flag(self.name)}")
        self._ensure_dir()
        made = Secrets.generate()
        atomic_write(path, json.dumps(made.__dict__, indent=2) + "\n", 0o600)
        return made

    def write_config_files(self, files: dict[str, str]) -> None:
        """Write rendered files under config/, private to the user (they hold secrets)."""
        self._ensure_dir()
        base = self.config_dir
        base.mkdir(mode=0o700, exist_ok=True)
        os.chmod(base, 0o700)
        for rel, text in files.items():
            target = base / rel
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            atomic_write(target, text, 0o600)

    def _ensure_dir(self) -> None:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)


def known_labs(root: Path | None = None) -> list[str]:
    base = root or state_root()
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if (p / "settings.json").exists())


def name_flag(name: str) -> str:
    return "" if name == "default" else f" --name {name}"


def atomic_write(path: Path, text: str, mode: int) -> None:
    """Write a whole file with ``mode`` (temporary file, then rename): never half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
