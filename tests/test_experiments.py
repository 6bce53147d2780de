"""`lab experiment` against the real stack: every experiment reaches its expected outcome, a
wrong expectation fails the command (exit 7, one line), and every runtime change to the poolers
is undone: after a pass, a failure, Ctrl-C, and even a killed run (by the next run).

One small lab serves the module: max_connections 20, pool size 3, max pooler clients 10."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import psycopg
import pytest

from lab import experiments, pg
from tests.conftest import LAB, ROOT

pytestmark = [pytest.mark.stack, pytest.mark.timeout(180)]

MAX_CONNECTIONS, POOL_SIZE, MAX_CLIENTS = 20, 3, 10
POOLERS = ("session", "transaction", "dedicated")
# What every pooler's admin console must report whenever no experiment is running.
STOCK = {"default_pool_size": str(POOL_SIZE), "max_client_conn": str(MAX_CLIENTS),
         "query_wait_timeout": "120", "max_prepared_statements": "0"}


@pytest.fixture(scope="module")
def lab(lab_factory):
    return lab_factory("--max-connections", str(MAX_CONNECTIONS), "--pool-size",
                       str(POOL_SIZE), "--max-client-conn", str(MAX_CLIENTS))


@pytest.fixture(scope="module")
def eps(lab):
    return lab.connect()


def pooler_settings(lab, eps) -> dict[str, dict[str, str]]:
    secrets = json.loads((lab.home / lab.name / "secrets.json").read_text())
    result = {}
    for name in POOLERS:
        with pg.admin_connect(eps[name]["host"], eps[name]["port"], "lab_admin",
                              secrets["admin_password"]) as admin:
            result[name] = {r["key"]: r["value"] for r in pg.rows(admin, "SHOW CONFIG")
                            if r["key"] in STOCK}
    return result


def assert_stock(lab, eps):
    assert pooler_settings(lab, eps) == {name: STOCK for name in POOLERS}
    assert not journal(lab).exists()


def journal(lab):
    return lab.home / lab.name / experiments.RESTORE_FILE


def test_every_experiment_reaches_its_expected_outcome(lab, eps):
    assert_stock(lab, eps)
    proc = lab.cli("experiment", "run", "--all", "--json", timeout=150)
    data = json.loads(proc.stdout)
    assert [e["name"] for e in data["experiments"]] == experiments.names()
    for e in data["experiments"]:
        assert e["error"] is None, (e["name"], e["error"])
        for lane in e["lanes"]:
            assert lane["observed"] == lane["expected"], (e["name"], lane)
            assert lane["passed"] is True
        assert e["passed"] is True
    assert data["passed"] is True
    by_name = {e["name"]: {ln["lane"]: ln for ln in e["lanes"]} for e in data["experiments"]}
    # The exact texts of the limits, as the servers sent them.
    assert by_name["max-connections"]["direct"]["observed"] == "sorry, too many clients already"
    assert by_name["max-client-conn"]["dedicated"]["observed"] == (
        "no more connections allowed (max_client_conn)")
    # The budget of this lab: 2 x 3 shared + 3 dedicated + 1 auth_query + 1 direct.
    assert by_name["backend-budget"]["total"]["observed"] == f"11 <= {MAX_CONNECTIONS}"
    assert "maxwait climbed" in by_name["idle-in-transaction"]["transaction"]["detail"]
    # PgBouncer refuses an untracked parameter in options at login, in session mode too.
    assert by_name["startup-options"]["session"]["observed"] == (
        "unsupported startup parameter in options: statement_timeout")
    assert by_name["startup-options"]["direct"]["detail"] == "statement_timeout = 4321ms"
    # PgBouncer's cached refusal outlives server_login_retry (1 s during the run); the right
    # tenant is not affected.
    tenant = by_name["tenant-not-found"]
    assert tenant["session-after-retry"]["observed"] == (
        "server login has been failing, cached error: Tenant or user not found "
        "(server_login_retry)")
    assert tenant["session-right-tenant"]["observed"] == "connected"
    assert tenant["direct-pooler-user"]["observed"] == (
        'password authentication failed for user "postgres.lab"')
    # A late cancel hits the same connection's next query, never another client's.
    cancel = by_name["delayed-cancel"]
    assert cancel["transaction"]["observed"] == "later-query-cancelled"
    assert "57014" in cancel["transaction"]["detail"]
    assert cancel["transaction-other-client"]["observed"] == "other-client-untouched"
    assert "A's former backend" in cancel["transaction-other-client"]["detail"]
    assert by_name["migrations"]["transaction"]["observed"] == (
        "table in public, next deploy blocked")
    assert "search_path afterwards: lab_migration" in (
        by_name["migrations"]["transaction"]["detail"])
    dropped = by_name["dropped-connection"]
    assert dropped["transaction"]["observed"] == (
        "connection_lost: terminating connection due to administrator command")
    assert dropped["transaction-pooler-kill"]["observed"] == (
        "connection_lost: admin forced disconnect")
    idle = by_name["idle-timeouts"]
    assert idle["transaction"]["observed"] == "connection_lost: client_idle_timeout"
    assert idle["session"]["observed"] == "works, same backend"
    assert idle["dedicated-server-idle"]["observed"] == "works, new backend"
    assert all(lane["observed"] == "dump ok, search_path kept"
               for lane in by_name["pg-dump"].values())
    # session_overflow = refuse (the default): client 3 of a pool of 2 is refused at login.
    assert by_name["session-exhaustion"]["session"]["observed"] == (
        "client connections exceeded (max_user_client_connections)")
    assert_stock(lab, eps)


def test_the_human_output_puts_the_endpoints_side_by_side(lab, eps):
    proc = lab.cli("experiment", "run", "set-leak", "backend-identity")
    out = proc.stdout
    for text in ("SET leaks between clients", "expected", "observed", "transaction",
                 "leaked", "isolated", "client B sees 4321ms", "fix:", "other-backend",
                 "2 of 2 experiments as expected"):
        assert text in out, text
    assert "FAIL" not in out
    assert_stock(lab, eps)


def test_a_wrong_expectation_exits_7_with_one_line(lab, eps):
    proc = lab.cli("experiment", "run", "set-leak", "--expect",
                   "set-leak.transaction=isolated", check=False)
    assert proc.returncode == 7, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert "set-leak (transaction 'leaked', expected 'isolated')" in errors[0]
    assert "fix:" in errors[0] and "Traceback" not in proc.stderr
    assert "FAIL" in proc.stdout  # the table shows which lane
    as_json = lab.cli("experiment", "run", "set-leak", "--json", "--expect",
                      "set-leak.transaction=isolated", check=False)
    assert as_json.returncode == 7
    data = json.loads(as_json.stdout)
    lanes = {ln["lane"]: ln for ln in data["experiments"][0]["lanes"]}
    assert data["passed"] is False and lanes["transaction"]["passed"] is False
    assert lanes["dedicated"]["passed"] is True
    assert_stock(lab, eps)


def _start(lab, *args: str) -> subprocess.Popen:
    env = dict(os.environ, POOLER_LAB_HOME=str(lab.home), NO_COLOR="1")
    return subprocess.Popen([*LAB, "experiment", "run", *args, "--name", lab.name],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=ROOT, stdin=subprocess.DEVNULL)


def _wait_until_changed(lab, eps, proc: subprocess.Popen) -> None:
    """Until the run has lowered the transaction pooler's pool size (its journal written)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        if journal(lab).exists() and \
                pooler_settings(lab, eps)["transaction"]["default_pool_size"] == "1":
            return
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"the run never changed the pool size: {proc.communicate()}")


def test_ctrl_c_restores_every_pooler_setting(lab, eps):
    proc = _start(lab, "idle-in-transaction")
    _wait_until_changed(lab, eps, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert_stock(lab, eps)


def test_a_killed_run_is_restored_by_the_next_run(lab, eps):
    proc = _start(lab, "idle-in-transaction")
    _wait_until_changed(lab, eps, proc)
    proc.kill()
    proc.communicate(timeout=30)
    assert journal(lab).exists()
    assert pooler_settings(lab, eps)["transaction"]["default_pool_size"] == "1"
    after = lab.cli("experiment", "run", "max-connections")
    assert "restoring pooler settings left behind" in after.stderr
    assert_stock(lab, eps)


def test_a_busy_lab_is_refused_in_one_line_and_left_as_it_was(lab, eps):
    # A session-mode client holds a backend: the experiments cannot empty that pool.
    with psycopg.connect(eps["session"]["uri"], connect_timeout=5, autocommit=True) as busy:
        busy.execute("select 1")
        proc = lab.cli("experiment", "run", "--all", check=False)
    assert proc.returncode == 4, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "session pooler still holds 1 server connection" in errors[0]
    assert "idle lab" in errors[0] and "Traceback" not in proc.stderr
    assert "running set-leak" not in proc.stderr  # it stopped at the first experiment
    assert_stock(lab, eps)


USER_EXPERIMENT = '''
"""A user's own experiment, from a folder named by POOLER_LAB_EXPERIMENTS."""

from lab.experiments import Context, Experiment, Lane, Observation, endpoint_lanes, per_lane


@per_lane
def run(ctx: Context, lane: Lane) -> Observation:
    value = ctx.connect(lane.endpoint).execute("select 40 + 2").fetchone()[0]
    return Observation(str(value), f"through {lane.endpoint}")


EXPERIMENT = Experiment(
    name="my-probe", title="A user's probe", question="Does the sum come back?",
    why="It is arithmetic.", fix="None needed.", lanes=endpoint_lanes("direct", "transaction"),
    expect={"direct": "42", "transaction": "42"}, run=run,
    settings={"transaction": {"default_pool_size": 1}},
)
'''


def test_a_users_experiment_file_runs_like_a_builtin_one(lab, eps, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    path = folder / "my_probe.py"
    path.write_text(USER_EXPERIMENT)
    # The test before ran max-connections, which fills Postgres: a pooler whose server login
    # was refused then waits server_login_retry (15 s) before it logs in again, and a query
    # through it in that window queues (query_wait_timeout). Wait until the transaction
    # pooler serves a query, as a user would before a workshop exercise.
    with psycopg.connect(eps["transaction"]["uri"], connect_timeout=20,
                         autocommit=True) as ready:
        ready.execute("select 1")
    proc = lab.cli("experiment", "run", "my-probe", "--json",
                   env={experiments.ENV_VAR: str(folder)})
    data = json.loads(proc.stdout)
    assert data["passed"] is True and data["experiments"][0]["name"] == "my-probe"
    # By path, as a locustfile: no environment needed, --expect names it.
    wrong = lab.cli("experiment", "run", str(path), "--expect", "my-probe.transaction=41",
                    check=False)
    assert wrong.returncode == 7 and "my-probe (transaction '42', expected '41')" in wrong.stderr
    assert_stock(lab, eps)


def test_session_exhaustion_queues_with_session_overflow_queue(lab_factory):
    """Supavisor before 2.8: client 3 logs in and its first query waits for a backend; the
    session pooler's client cap stays off (0) before, during and after."""
    queue = lab_factory("--pool-size", str(POOL_SIZE), "--session-overflow", "queue")
    proc = queue.cli("experiment", "run", "session-exhaustion", "--json")
    (exp,) = json.loads(proc.stdout)["experiments"]
    lanes = {ln["lane"]: ln for ln in exp["lanes"]}
    assert exp["passed"] is True, exp
    assert lanes["session"]["observed"] == "query_wait_timeout"
    assert "connected in" in lanes["session"]["detail"]
    eps = queue.connect()
    secrets = json.loads((queue.home / queue.name / "secrets.json").read_text())
    with pg.admin_connect(eps["session"]["host"], eps["session"]["port"], "lab_admin",
                          secrets["admin_password"]) as admin:
        cap = [r["value"] for r in pg.rows(admin, "SHOW CONFIG")
               if r["key"] == "max_user_client_connections"]
    assert cap == ["0"]
