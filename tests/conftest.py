"""Shared fixtures: the `lab` CLI as a user runs it, and real labs on the real engine.

Stack tests give each lab its own state root (POOLER_LAB_HOME), name and loopback addresses,
so they never touch a developer's own labs, and always take their labs down (with volumes).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAB = [sys.executable, "-m", "lab"]
_addresses = itertools.count(0)


def lab_cli(*args: str, home: Path, check: bool = True, timeout: float = 240,
            env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, POOLER_LAB_HOME=str(home), NO_COLOR="1", **(env or {}))
    proc = subprocess.run([*LAB, *args], capture_output=True, text=True, timeout=timeout,
                          env=full_env, stdin=subprocess.DEVNULL, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"lab {' '.join(args)} exited {proc.returncode}:\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def load_start(reports_dir: Path, endpoint: str, proc: subprocess.Popen | None = None,
               timeout: float = 60) -> float:
    """The t0 of the running segment's load on ``endpoint`` (its first Locust process's
    schedule file), waiting for it; fails when the load never starts."""
    import time

    deadline = time.time() + timeout
    while time.time() < deadline and (proc is None or proc.poll() is None):
        time.sleep(0.2)
        for path in reports_dir.glob(f"*/schedule/{endpoint}-0.json"):
            try:
                return float(json.loads(path.read_text())["t0"])
            except (OSError, ValueError, KeyError):
                continue
    raise AssertionError("the load never started")


def docker_ready() -> bool:
    try:
        from lab import engine, image

        engine.client()
        return image.exists(image.tag())
    except Exception:
        return False


@pytest.fixture(scope="session")
def stack_available():
    if not docker_ready():
        if os.environ.get("CI"):
            pytest.fail("CI must provide the Docker engine and the lab image (.ci/run)")
        pytest.skip("no Docker engine or lab image: run `make image` first")


@dataclass
class Lab:
    name: str
    home: Path

    def cli(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return lab_cli(*args, "--name", self.name, home=self.home, **kwargs)

    def connect(self) -> dict:
        return json.loads(self.cli("connect", "--json", "--show-password").stdout)

    def status(self) -> dict:
        return json.loads(self.cli("status", "--json").stdout)

    @property
    def password(self) -> str:
        return json.loads((self.home / self.name / "secrets.json").read_text())[
            "postgres_password"]


def next_addresses() -> tuple[str, str]:
    """A loopback pair no developer lab uses (127.0.0.x), distinct per test process."""
    k = next(_addresses)
    third = 10 + os.getpid() % 200
    return f"127.0.{third}.{2 + 2 * k}", f"127.0.{third}.{3 + 2 * k}"


@pytest.fixture(scope="module")
def lab_factory(stack_available, tmp_path_factory):
    """Bring up labs with given settings; every one is taken down (volumes too) at the end."""
    started: list[Lab] = []
    home = tmp_path_factory.mktemp("labhome")

    def make(*settings: str) -> Lab:
        lab = Lab(name=f"t{os.getpid()}-{len(started)}", home=home)
        db, pooler = next_addresses()
        started.append(lab)
        lab.cli("up", "--db-address", db, "--pooler-address", pooler, *settings)
        return lab

    yield make
    for lab in started:
        lab.cli("down", "--volumes", check=False)
