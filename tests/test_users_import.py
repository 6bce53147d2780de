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


def test_sleep_until_never_wakes_early_and_lets_others_run():
    # Arrival times: sleep_until must not return before the due time (an early start would
    # bend the schedule) and must yield to the other greenlets while it waits.
    proc = run(
        "import time, gevent, lab.users as u\n"
        "ticks = []\n"
        "g = gevent.spawn(lambda: [ticks.append(1) or gevent.sleep(0) for _ in range(10**6)])\n"
        "early = 0\n"
        "for delay in (0, 0.0003, 0.001, 0.0012, 0.002, 0.005, 0.02):\n"
        "    due = time.perf_counter() + delay\n"
        "    u.sleep_until(due)\n"
        "    early += time.perf_counter() < due\n"
        "g.kill()\n"
        "print(early, len(ticks) > 0)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["0", "True"]
