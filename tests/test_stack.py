"""The real compose stack: the four endpoints, their pools, limits and errors, as a user sees
them. One small lab (max_connections 20, pool size 3, max pooler clients 8) serves the module."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import threading
import time

import psycopg
import pytest

from tests.conftest import lab_cli

pytestmark = [pytest.mark.stack, pytest.mark.timeout(300)]

MAX_CONNECTIONS, POOL_SIZE, MAX_CLIENTS = 20, 3, 8
ENDPOINTS = ("direct", "session", "transaction", "dedicated")


@pytest.fixture(scope="module")
def lab(lab_factory):
    return lab_factory("--max-connections", str(MAX_CONNECTIONS), "--pool-size", str(POOL_SIZE),
                       "--max-client-conn", str(MAX_CLIENTS), "--query-wait-timeout", "5")


@pytest.fixture(scope="module")
def eps(lab):
    return lab.connect()


def conn(ep, **kwargs):
    kwargs.setdefault("autocommit", True)
    return psycopg.connect(ep["uri"], connect_timeout=5, **kwargs)


def test_connect_json_has_the_four_endpoints(eps, lab):
    assert set(eps) == set(ENDPOINTS)
    for name, ep in eps.items():
        for key in ("uri", "bench_uri", "host", "port", "user", "pool_mode"):
            assert key in ep, (name, key)
        assert lab.password in ep["uri"]
    assert eps["session"]["user"] == eps["transaction"]["user"] == "postgres.lab"
    assert eps["direct"]["user"] == eps["dedicated"]["user"] == "postgres"
    assert (eps["direct"]["port"], eps["dedicated"]["port"]) == (5432, 6543)
    assert (eps["session"]["port"], eps["transaction"]["port"]) == (5432, 6543)
    assert eps["direct"]["host"] == eps["dedicated"]["host"] != eps["session"]["host"]
    masked = json.loads(lab.cli("connect", "--json").stdout)
    assert all(lab.password not in ep["uri"] for ep in masked.values())
    assert lab.password not in lab.cli("connect").stdout + lab.cli("connect").stderr


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_every_endpoint_takes_the_password_with_scram_and_refuses_a_wrong_one(eps, endpoint):
    # require_auth makes libpq refuse any method but SCRAM from the server it talks to.
    with conn(eps[endpoint], require_auth="scram-sha-256") as c:
        assert c.execute("select current_user").fetchone()[0] == "postgres"
        # And the pooler's own login to Postgres was SCRAM too.
        assert c.execute("select system_user").fetchone()[0].startswith("scram-sha-256:")
    ep = dict(eps[endpoint])
    user_part = ep["uri"].split("//", 1)[1].split("@", 1)[0]
    wrong = ep["uri"].replace(user_part, f"{ep['user']}:not-the-password")
    with pytest.raises(psycopg.OperationalError) as caught:
        psycopg.connect(wrong, connect_timeout=5)
    assert "authentication failed" in str(caught.value)


def test_session_mode_keeps_one_backend_across_transactions(eps):
    with conn(eps["session"]) as c:
        pids = {c.execute("select pg_backend_pid()").fetchone()[0] for _ in range(5)}
    assert len(pids) == 1


def test_transaction_mode_hands_out_different_backends_to_concurrent_clients(eps):
    clients = [conn(eps["transaction"], autocommit=False) for _ in range(POOL_SIZE)]
    try:
        pids = {c.execute("select pg_backend_pid()").fetchone()[0] for c in clients}
        assert len(pids) == POOL_SIZE  # each open transaction holds its own backend
    finally:
        for c in clients:
            c.close()


def test_backends_come_from_where_each_pooler_lives(eps, lab):
    status = lab.status()
    pooler_ip = next(c["address"] for c in status["containers"] if c["service"] == "pooler")
    with conn(eps["dedicated"]) as c:
        assert c.execute("select host(inet_client_addr())").fetchone()[0] == "127.0.0.1"
    with conn(eps["transaction"]) as c:
        assert c.execute("select host(inet_client_addr())").fetchone()[0] == pooler_ip
    with conn(eps["direct"]) as c:
        assert c.execute("select host(inet_client_addr())").fetchone()[0] not in (
            "127.0.0.1", pooler_ip)


def test_tier_limits_are_in_force(eps):
    with conn(eps["direct"]) as c:
        assert int(c.execute("show max_connections").fetchone()[0]) == MAX_CONNECTIONS
    # More clients in open transactions than the pool: the pooler holds POOL_SIZE backends and
    # queues the rest (cl_waiting), visible on Postgres as at most POOL_SIZE backends.
    clients = [conn(eps["transaction"], autocommit=False) for _ in range(POOL_SIZE)]
    for c in clients:
        c.execute("select 1")
    waiter_error: list[Exception] = []

    def wait_for_a_backend():
        try:
            with conn(eps["transaction"]) as extra:
                extra.execute("select 1")
        except Exception as exc:  # query_wait_timeout (5 s) ends the wait
            waiter_error.append(exc)

    waiter = threading.Thread(target=wait_for_a_backend)
    waiter.start()
    try:
        with conn(eps["direct"]) as c:
            pooled = c.execute(
                "select count(*) from pg_stat_activity where usename = 'postgres' and "
                "backend_type = 'client backend' and client_addr = %s::inet",
                (c.execute("select inet_client_addr()").fetchone()[0],),
            ).fetchone()[0]
        assert pooled == 1  # only this direct connection; the pooler's come from elsewhere
    finally:
        for c in clients:
            c.close()
        waiter.join(timeout=15)
    assert not waiter_error  # it got a backend once the transactions ended


def test_session_mode_refuses_the_client_beyond_pool_size_at_login(eps):
    """session_overflow = refuse (the default): as Supavisor 2.8+'s EMAXCONNSESSION, client
    POOL_SIZE + 1 of the session pooler is refused at login, before its password is checked;
    transaction mode takes it."""
    held = [conn(eps["session"]) for _ in range(POOL_SIZE)]
    try:
        with pytest.raises(psycopg.OperationalError) as caught:
            conn(eps["session"])
        assert "FATAL:  client connections exceeded (max_user_client_connections)" in str(
            caught.value)
        user_part = eps["session"]["uri"].split("//", 1)[1].split("@", 1)[0]
        wrong = eps["session"]["uri"].replace(user_part, f"{eps['session']['user']}:wrong")
        with pytest.raises(psycopg.OperationalError) as caught:
            psycopg.connect(wrong, connect_timeout=5)
        assert "max_user_client_connections" in str(caught.value)
        with conn(eps["transaction"]) as c:
            assert c.execute("select 1").fetchone() == (1,)
    finally:
        for c in held:
            c.close()
    time.sleep(0.2)  # the pooler counts the closed clients out
    with conn(eps["session"]) as c:
        assert c.execute("select 1").fetchone() == (1,)


def test_more_clients_than_max_client_conn_get_pgbouncers_error(eps):
    # PgBouncer counts a closed client out when its loop gets to it: on a loaded machine an
    # earlier test's client may still hold a slot for a moment, so a short fill is tried again
    for _attempt in range(3):
        held = []
        try:
            with pytest.raises(psycopg.OperationalError) as caught:
                for _ in range(MAX_CLIENTS + 1):
                    held.append(conn(eps["transaction"]))
            assert "no more connections allowed (max_client_conn)" in str(caught.value)
            if len(held) == MAX_CLIENTS:
                break
        finally:
            for c in held:
                c.close()
        time.sleep(1)
    assert len(held) == MAX_CLIENTS


def test_status_json_counts_clients_and_backends_per_endpoint(lab, eps):
    with conn(eps["session"]) as c:
        c.execute("select 1")
        status = lab.status()
    assert status["running"] is True
    session = status["endpoints"]["session"]
    assert session["clients"] >= 1 and session["backends"] >= 1
    for name in ENDPOINTS:
        assert {"clients", "backends"} <= set(status["endpoints"][name])
    assert status["postgres"]["max_connections"] == MAX_CONNECTIONS


# "Count by application and user", from Supabase's docs (Monitoring queries).
SEED_QUERY = ("select count(usename), count(application_name), application_name, usename "
              "from pg_stat_ssl join pg_stat_activity on pg_stat_ssl.pid = pg_stat_activity.pid "
              "group by usename, application_name")


def test_status_shows_who_is_connected_and_the_poolers_backends_are_named(lab, eps):
    unnamed = {ep: conn(eps[ep]) for ep in ENDPOINTS}  # psycopg sends no application_name
    named = conn(eps["session"], application_name="my-app")
    # Transaction mode and the dedicated pooler: a client with a transaction open holds its
    # backend, so pg_backend_pid() is the backend serving it while we look.
    holding = {ep: conn(eps[ep], autocommit=False) for ep in ("transaction", "dedicated")}
    try:
        pids = {ep: c.execute("select pg_backend_pid()").fetchone()[0]
                for ep, c in unnamed.items()}
        named_pid = named.execute("select pg_backend_pid()").fetchone()[0]
        held = {ep: c.execute("select pg_backend_pid()").fetchone()[0]
                for ep, c in holding.items()}
        with conn(eps["direct"]) as observer:
            def app_of(pid):
                return observer.execute("select application_name from pg_stat_activity "
                                        "where pid = %s", (pid,)).fetchone()[0]

            assert app_of(pids["direct"]) == ""
            assert app_of(pids["session"]) == app_of(held["transaction"]) == "Supavisor"
            assert app_of(held["dedicated"]) == "PgBouncer"
            assert app_of(named_pid) == "my-app"  # session mode keeps the client's own name
            seed = {(r[3], r[2]): r[0] for r in observer.execute(SEED_QUERY)}
        assert seed[("postgres", "Supavisor")] >= 2  # session and transaction backends
        assert seed[("postgres", "PgBouncer")] >= 1  # the dedicated pooler's
        assert seed[("postgres", "my-app")] == 1
        assert seed[("postgres", "")] >= 1  # direct clients that set no name

        status = lab.status()
        text = lab.cli("status").stdout
    finally:
        for c in (*unnamed.values(), named, *holding.values()):
            c.close()
    who = status["who"]
    roles = {(r["role"], r["application_name"], r["origin"]): r["backends"]
             for r in who["postgres_by_role"]}
    assert roles[("postgres", "Supavisor", "shared")] >= 2
    assert roles[("postgres", "PgBouncer", "dedicated")] >= 1
    assert roles[("postgres", "my-app", "shared")] == 1
    assert roles[("postgres", "", "direct")] >= 1
    dedicated = who["dedicated_pooler"]
    assert dedicated["ok"] and dedicated["clients"] >= 2 and dedicated["server_connections"] >= 1
    assert {c["user"] for c in dedicated["by_client"]} == {"postgres"}
    session, transaction = who["shared_pooler"]["session"], who["shared_pooler"]["transaction"]
    assert session["clients"] >= 2 and session["server_connections"] >= 2
    assert any(c["application_name"] == "my-app" and c["total"] == 1
               for c in session["by_client"])
    assert transaction["clients"] >= 2 and transaction["server_connections"] >= 1
    for view in (session, transaction):
        assert {c["user"] for c in view["by_client"]} == {"postgres.lab"}
        assert {s["user"] for s in view["by_server"]  # the forced user (not the lookup's)
                if s["database"] != "lab_tenants"} == {"postgres"}
    for title in ("Postgres backends by role", "Dedicated pooler clients",
                  "Shared pooler clients"):
        assert title in text
    assert "Supavisor" in text and "my-app" in text


def test_a_wrong_tenant_fails_at_login_with_a_clear_message(eps):
    ep = eps["transaction"]
    wrong = ep["uri"].replace("postgres.lab:", "postgres.nosuchtenant:")
    with pytest.raises(psycopg.OperationalError) as caught:
        psycopg.connect(wrong, connect_timeout=5)
    assert "Tenant or user not found" in str(caught.value)


def test_password_file_is_private_and_never_printed(lab):
    secrets = lab.home / lab.name / "secrets.json"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    for args in (("status",), ("status", "--json"), ("logs",), ("connect",)):
        proc = lab.cli(*args)
        assert lab.password not in proc.stdout + proc.stderr, args


def test_up_twice_is_a_no_op(lab):
    before = {c["name"]: c for c in lab.status()["containers"]}
    proc = lab.cli("up", "--max-connections", str(MAX_CONNECTIONS), "--pool-size",
                   str(POOL_SIZE), "--max-client-conn", str(MAX_CLIENTS),
                   "--query-wait-timeout", "5")
    assert "no change" in proc.stdout
    after = {c["name"]: c for c in lab.status()["containers"]}
    assert before.keys() == after.keys()


def test_a_port_already_taken_is_refused_in_one_line(lab):
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        proc = lab_cli("up", "--name", "blocked", "--layout", "ports", "--direct-port",
                       str(port), home=lab.home, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0] and "fix:" in lines[0]
    assert "Traceback" not in proc.stderr


def test_an_unreachable_docker_engine_is_a_clear_error(lab, tmp_path):
    proc = lab_cli("up", "--name", "noengine", home=lab.home, check=False,
                   env={"DOCKER_HOST": f"unix://{tmp_path}/docker.sock"})
    assert proc.returncode == 3
    line = proc.stderr.strip()
    assert "cannot reach the Docker engine" in line and "fix:" in line and "\n" not in line


def test_down_leaves_nothing_behind(lab_factory):
    from lab import engine

    extra = lab_factory()
    project = f"pooler-lab-{extra.name}"
    assert engine.project_resources(project)["containers"]
    ep = extra.connect()["direct"]
    with conn(ep) as c:
        c.execute("create table kept (x int)")
    password = extra.password
    extra.cli("down")
    left = engine.project_resources(project)
    assert left["containers"] == [] and left["networks"] == []
    assert left["volumes"] == [f"{project}_pgdata"]  # data kept unless --volumes
    extra.cli("up", "--db-address", ep["host"], "--pooler-address",
              extra.connect()["session"]["host"])
    assert extra.password == password  # stable across down/up
    with conn(extra.connect()["direct"]) as c:
        assert c.execute("select count(*) from kept").fetchone() == (0,)
    extra.cli("down")
    extra.cli("down", "--volumes")
    assert engine.project_resources(project) == {"containers": [], "networks": [],
                                                  "volumes": []}


def test_the_pooler_infrastructure_role_cannot_log_in_through_the_shared_pooler(eps, lab):
    infra = json.loads((lab.home / lab.name / "secrets.json").read_text())["pgbouncer_password"]
    ep = eps["transaction"]
    uri = f"postgresql://pgbouncer:{infra}@{ep['host']}:{ep['port']}/postgres"
    with pytest.raises(psycopg.OperationalError) as caught:
        psycopg.connect(uri, connect_timeout=5)
    assert "login rejected" in str(caught.value)


def test_lab_psql_opens_an_endpoint_with_or_without_a_host_psql(lab):
    proc = lab.cli("psql", "transaction", "-Atc", "select current_user")
    assert proc.stdout.strip() == "postgres"
    # Without psql on the PATH the lab uses the one in the db container.
    docker_dir = os.path.dirname(shutil.which("docker"))
    proc = lab.cli("psql", "session", "-Atc", "select 41 + 1",
                   env={"PATH": f"{docker_dir}:/nonexistent"})
    assert proc.stdout.strip() == "42"
    assert lab.password not in proc.stdout + proc.stderr


def test_doctor_passes_on_a_running_lab_and_names_fixes_otherwise(lab, tmp_path):
    proc = lab.cli("doctor")
    assert proc.stdout.count("ok  ") >= 4 and "FAIL" not in proc.stdout
    broken = lab.cli("doctor", check=False,
                     env={"DOCKER_HOST": f"unix://{tmp_path}/nothing.sock"})
    assert broken.returncode != 0 and "Traceback" not in broken.stderr
    assert "FAIL Docker engine" in broken.stdout and "fix: start the Docker engine" in \
        broken.stdout


def test_extensions_and_roles_are_set_up_as_supabase_does(eps):
    with conn(eps["direct"]) as c:
        assert c.execute("show shared_preload_libraries").fetchone()[0] == "pg_stat_statements"
        assert c.execute("select count(*) from pg_extension where extname = "
                         "'pg_stat_statements'").fetchone()[0] == 1
        secdef, config = c.execute(
            "select prosecdef, proconfig from pg_proc where proname = 'get_auth' and "
            "pronamespace = 'pgbouncer'::regnamespace").fetchone()
        assert secdef is True and config == ['search_path=""']
        assert c.execute("select has_function_privilege('pgbouncer', "
                         "'pgbouncer.get_auth(text)', 'execute'), has_function_privilege("
                         "'public', 'pgbouncer.get_auth(text)', 'execute')").fetchone() == (
            True, False)


def test_a_start_that_does_not_become_healthy_is_taken_down(lab):
    from lab import engine

    proc = lab_cli("up", "--name", "slow", "--db-address", "127.0.250.2", "--pooler-address",
                   "127.0.250.3", home=lab.home, check=False,
                   env={"POOLER_LAB_UP_TIMEOUT": "1"})
    try:
        assert proc.returncode == 4, proc.stderr
        line = proc.stderr.strip().splitlines()[-1]
        assert line.startswith("error: ") and "Traceback" not in proc.stderr
        assert "did not become healthy" in line and "last-failure.log" in line
        assert "POOLER_LAB_UP_TIMEOUT" in line
        assert (lab.home / "slow" / "last-failure.log").exists()
        left = engine.project_resources("pooler-lab-slow")
        assert left["containers"] == [] and left["networks"] == []
    finally:
        lab_cli("down", "--name", "slow", "--volumes", home=lab.home, check=False)


def test_shared_pool_sharing_caps_both_modes_together(lab_factory):
    shared = lab_factory("--pool-sharing", "shared", "--pool-size", "2",
                         "--query-wait-timeout", "3")
    eps = shared.connect()
    holders = [conn(eps["session"]), conn(eps["session"])]
    try:
        for c in holders:
            c.execute("select 1")  # each session client now holds one of the 2 shared backends
        with pytest.raises(psycopg.Error) as caught, conn(eps["transaction"]) as c:
            c.execute("select 1")
        assert "query_wait_timeout" in str(caught.value)
    finally:
        for c in holders:
            c.close()
    time.sleep(1.5)  # the outer poolers hand idle server connections back within a second
    with conn(eps["transaction"]) as c:
        assert c.execute("select 1").fetchone() == (1,)
