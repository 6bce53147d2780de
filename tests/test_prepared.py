"""Prepared statements as drivers meet them: the symptom through each port (42P05 first, then
26000, under the drivers' own statement names), the shared transaction pooler's switch
(`shared_max_prepared_statements`, Supavisor's `named_prepared_statements`) off and on, and what
`lab connect` says about it.

One small lab serves the stack tests (pool size 3); the last ones turn the switch on and off
again with `lab up`."""

from __future__ import annotations

import json

import psycopg
import pytest

from lab import pg
from lab.config import load_config
from lab.connect import endpoints

SETTINGS = ("--max-connections", "20", "--pool-size", "3", "--max-client-conn", "10")
CLASH = "already-exists, then does-not-exist"


# -- without Docker ----------------------------------------------------------------------------


def test_lab_connect_says_whether_the_transaction_poolers_take_prepared_statements():
    stock = endpoints(load_config())
    assert "prepared statements off (max_prepared_statements = 0, as Supabase documents)" \
        in stock["dedicated"].use_when
    assert ("prepared statements off (shared_max_prepared_statements = 0, as Supavisor's "
            "named_prepared_statements flag by default)") in stock["transaction"].use_when
    assert "prepared" not in stock["direct"].use_when + stock["session"].use_when
    on = endpoints(load_config(overrides={"shared_max_prepared_statements": 200,
                                          "max_prepared_statements": 100}))
    assert ("protocol-level prepared statements on (shared_max_prepared_statements = 200), "
            "SQL PREPARE never") in on["transaction"].use_when
    assert "prepared statements on (max_prepared_statements = 100)" in on["dedicated"].use_when


# -- on the real stack -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lab(lab_factory):
    return lab_factory(*SETTINGS)


def admin(lab, ep: dict):
    secrets = json.loads((lab.home / lab.name / "secrets.json").read_text())
    return pg.admin_connect(ep["host"], ep["port"], "lab_admin", secrets["admin_password"])


def pooler_setting(lab, ep: dict, key: str) -> str:
    with admin(lab, ep) as console:
        return next(str(r["value"]) for r in pg.rows(console, "SHOW CONFIG") if r["key"] == key)


def drained(lab, ep: dict) -> None:
    """The pooler holds no server connection: the next client opens a fresh backend."""
    if ep["pooler"] != "none":
        with admin(lab, ep) as console:
            assert pg.drain_pooler(console, 10) == 0


def connect(ep: dict, **kwargs) -> psycopg.Connection:
    return psycopg.connect(ep["uri"], connect_timeout=5, **kwargs)


def two_app_instances(lab, ep: dict) -> tuple[str, str]:
    """What a user sees: two psycopg clients (two instances of an app) that prepare their
    statements, while a third holds a backend in a transaction for the second step. Returns
    what B's first query and then A's second query raised ('' when it worked)."""
    drained(lab, ep)
    seen = []
    with connect(ep, autocommit=True, prepare_threshold=0) as a, \
            connect(ep, autocommit=True, prepare_threshold=0) as b, connect(ep) as c:
        assert a.execute("select %s::int + 1", (1,)).fetchone()[0] == 2  # _pg3_0, backend 1
        for conn, query, value in ((b, "select %s::text", "b"), (a, "select %s::int + 1", 2)):
            if conn is a:
                c.execute("select 1")  # C holds backend 1, where A prepared _pg3_0
            try:
                conn.execute(query, (value,)).fetchone()
                seen.append("")
            except psycopg.Error as exc:
                seen.append(f"{exc.sqlstate}: {exc.diag.message_primary}")
        c.rollback()
    drained(lab, ep)
    return seen[0], seen[1]


def sql_prepare_later(lab, ep: dict) -> str:
    """SQL PREPARE in one transaction, EXECUTE in the next while C holds the first backend."""
    drained(lab, ep)
    with connect(ep, autocommit=True) as a, connect(ep) as c:
        a.execute("PREPARE lab_sql AS SELECT 1")
        c.execute("select 1")
        try:
            a.execute("EXECUTE lab_sql")
            return ""
        except psycopg.Error as exc:
            return f"{exc.sqlstate}: {exc.diag.message_primary}"
        finally:
            c.rollback()
            drained(lab, ep)


def run_experiments(lab) -> dict[str, dict[str, dict]]:
    proc = lab.cli("experiment", "run", "protocol-prepared", "sql-prepare", "--json",
                   timeout=120)
    data = json.loads(proc.stdout)
    assert data["passed"] is True, proc.stdout
    return {e["name"]: {ln["lane"]: ln for ln in e["lanes"]} for e in data["experiments"]}


@pytest.mark.parametrize("endpoint, expected", [
    ("direct", ("", "")), ("session", ("", "")),
    ("transaction", ('42P05: prepared statement "_pg3_0" already exists',
                     '26000: prepared statement "_pg3_0" does not exist')),
    ("dedicated", ('42P05: prepared statement "_pg3_0" already exists',
                   '26000: prepared statement "_pg3_0" does not exist')),
])
@pytest.mark.stack
@pytest.mark.timeout(300)
def test_a_driver_meets_already_exists_first_then_does_not_exist(lab, endpoint, expected):
    assert two_app_instances(lab, lab.connect()[endpoint]) == expected


@pytest.mark.stack
@pytest.mark.timeout(300)
def test_the_experiment_shows_each_drivers_own_names_and_fixes(lab):
    lanes = run_experiments(lab)["protocol-prepared"]
    for key in ("transaction", "dedicated", "transaction-asyncpg", "transaction-prisma"):
        assert lanes[key]["observed"] == CLASH, lanes[key]
    for key, name in (("transaction", "_pg3_0"), ("transaction-asyncpg", "__asyncpg_stmt_1__"),
                      ("transaction-prisma", "s0")):
        detail = lanes[key]["detail"]
        assert f'prepared statement "{name}" already exists (42P05)' in detail, detail
        assert f'prepared statement "{name}" does not exist (26000)' in detail, detail
    for key in ("direct", "session", "transaction-no-prepare", "transaction-unnamed",
                "transaction-mps-200", "dedicated-mps-100"):
        assert lanes[key]["observed"] == "works", lanes[key]
    # Every switch the experiment flipped is back.
    eps = lab.connect()
    assert pooler_setting(lab, eps["transaction"], "max_prepared_statements") == "0"
    assert pooler_setting(lab, eps["dedicated"], "max_prepared_statements") == "0"


@pytest.mark.stack
@pytest.mark.timeout(600)
def test_the_shared_switch_turns_protocol_prepared_statements_on_but_never_sql_prepare(lab):
    lab.cli("up", *SETTINGS, "--shared-max-prepared-statements", "200")
    try:
        eps = lab.connect()
        assert pooler_setting(lab, eps["transaction"], "max_prepared_statements") == "200"
        assert pooler_setting(lab, eps["session"], "max_prepared_statements") == "0"
        assert pooler_setting(lab, eps["dedicated"], "max_prepared_statements") == "0"
        assert "prepared statements on (shared_max_prepared_statements = 200)" in \
            eps["transaction"]["use_when"]
        assert two_app_instances(lab, eps["transaction"]) == ("", "")
        assert two_app_instances(lab, eps["dedicated"])[0].startswith("42P05")
        assert sql_prepare_later(lab, eps["transaction"]) == (
            '26000: prepared statement "lab_sql" does not exist')
        # The experiments' expectations follow the lab's settings.
        lanes = run_experiments(lab)
        assert lanes["protocol-prepared"]["transaction"]["observed"] == "works"
        assert lanes["protocol-prepared"]["transaction-asyncpg"]["observed"] == "works"
        assert lanes["protocol-prepared"]["dedicated"]["observed"] == CLASH
        assert lanes["sql-prepare"]["transaction"]["observed"] == "does-not-exist"
    finally:
        lab.cli("up", *SETTINGS)  # off again, as Supavisor's flag is by default
    eps = lab.connect()
    assert pooler_setting(lab, eps["transaction"], "max_prepared_statements") == "0"
    assert "prepared statements off" in eps["transaction"]["use_when"]
    assert two_app_instances(lab, eps["transaction"])[0].startswith("42P05")
