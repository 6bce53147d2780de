"""lab.users refuses a process where psycopg was imported before Locust (no Docker needed)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)


def test_psycopg_first_fails_loudly():
    proc = run("import psycopg\nimport lab.users")
    assert proc.returncode != 0
    assert "ImportError" in proc.stderr and "one at a time" in proc.stderr


def test_lab_users_first_gets_a_cooperative_wait():
    proc = run("import lab.users, psycopg.waiting\nprint(psycopg.waiting.wait.__name__)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() not in ("", "wait_c")
