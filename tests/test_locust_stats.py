"""lab.locust_stats, Locust's statistics fed in bulk: the cases (tests/locustfiles/stats_cases.py)
run in a pytest process of their own, because importing Locust patches the process with gevent,
which must come before anything imports ssl (this process has, long before)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT

CASES = ROOT / "tests" / "locustfiles" / "stats_cases.py"


def test_bulk_feed_cases_in_a_process_of_their_own():
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "--noconftest",
                           "-p", "no:cacheprovider", "--rootdir", str(ROOT), str(CASES)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "4 passed" in proc.stdout, proc.stdout[-2000:]
