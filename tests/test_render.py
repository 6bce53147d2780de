"""Rendering is pure: settings and secrets in, container files out."""

import base64
import configparser
import hashlib
import hmac

import pytest

from lab.config import load_config
from lab.render import render, scram_verifier
from lab.state import Secrets

SECRETS = Secrets("pw-postgres", "pw-bouncer", "pw-admin", "00" * 16)


def ini(text):
    parser = configparser.ConfigParser(interpolation=None, delimiters=("=",))
    parser.optionxform = str
    parser.read_string(text)
    return parser


def test_scram_verifier_matches_rfc7677_derivation():
    salt = b"0123456789abcdef"
    verifier = scram_verifier("pencil", salt, 4096)
    method, rest = verifier.split("$", 1)
    iterations_salt, keys = rest.split("$")
    iterations, salt_b64 = iterations_salt.split(":")
    stored, server = keys.split(":")
    assert method == "SCRAM-SHA-256" and iterations == "4096"
    assert base64.b64decode(salt_b64) == salt
    salted = hashlib.pbkdf2_hmac("sha256", b"pencil", salt, 4096)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    assert base64.b64decode(stored) == hashlib.sha256(client_key).digest()
    assert base64.b64decode(server) == hmac.new(salted, b"Server Key", "sha256").digest()


def test_tier_limits_reach_postgres_and_every_pooler():
    cfg = load_config("t", overrides={"tier": "small", "pool_size": 7})
    files = render(cfg, SECRETS, "img:1", "/state/config")
    assert "max_connections = 90\n" in files["db/postgresql.conf"]
    assert "shared_preload_libraries = 'pg_stat_statements'" in files["db/postgresql.conf"]
    for rel, mode, port in (("dedicated/pgbouncer-dedicated.ini", "transaction", "6543"),
                            ("pooler/pgbouncer-session.ini", "session", "5432"),
                            ("pooler/pgbouncer-transaction.ini", "transaction", "6543")):
        section = ini(files[rel])["pgbouncer"]
        assert section["pool_mode"] == mode and section["listen_port"] == port
        assert section["default_pool_size"] == "7"
        assert section["max_client_conn"] == "400"
        assert section["auth_type"] in ("scram-sha-256", "hba")
    hba = files["pooler/pgbouncer_hba.conf"]
    assert [line.split()[-1] for line in hba.splitlines() if line.startswith("host")] == [
        "reject", "reject", "scram-sha-256", "scram-sha-256"]


def test_dedicated_pooler_is_configured_as_supabase_does():
    files = render(load_config(), SECRETS, "img:1", "/c")
    section = ini(files["dedicated/pgbouncer-dedicated.ini"])
    assert section["databases"]["*"] == "host=127.0.0.1 port=5432 application_name=PgBouncer"
    bouncer = section["pgbouncer"]
    assert bouncer["auth_user"] == "pgbouncer"
    assert bouncer["auth_query"] == "SELECT * FROM pgbouncer.get_auth($1)"
    assert bouncer["max_prepared_statements"] == "0"
    assert bouncer["ignore_startup_parameters"] == "extra_float_digits"
    sql = files["db/init.sql"]
    assert "SECURITY DEFINER SET search_path = ''" in sql
    assert "GRANT EXECUTE ON FUNCTION pgbouncer.get_auth(text) TO pgbouncer" in sql


def test_shared_pooler_takes_postgres_dot_tenant_and_logs_in_as_postgres():
    cfg = load_config(overrides={"tenant": "acme"})
    files = render(cfg, SECRETS, "img:1", "/c")
    assert '"postgres.acme" "SCRAM-SHA-256$4096:' in files["pooler/userlist.txt"]
    target = ini(files["pooler/pgbouncer-transaction.ini"])["databases"]["*"]
    assert "host=db port=5432 user=postgres" in target
    # pg_stat_activity names the shared pooler's backends as Supavisor's are named
    assert target.endswith(" application_name=Supavisor")


def test_postgres_receives_only_scram_verifiers_never_a_password():
    files = render(load_config(), SECRETS, "img:1", "/c")
    for rel in ("db/init.sql", "db/postgresql.conf", "db/pg_hba.conf", "compose.env"):
        for secret in SECRETS.values():
            assert secret not in files[rel], rel
    hba = files["db/pg_hba.conf"]
    rules = [line.split() for line in hba.splitlines() if line and not line.startswith("#")]
    assert [r[-1] for r in rules if r[0] == "host"] == ["scram-sha-256", "scram-sha-256"]
    assert all(r[-1] != "trust" for r in rules if r[0] != "local")


def test_compose_env_carries_addresses_ports_and_a_config_hash():
    cfg = load_config(overrides={"direct_port": 15432})
    files = render(cfg, SECRETS, "img:1", "/state/x/config")
    env = dict(line.split("=", 1) for line in files["compose.env"].splitlines())
    assert env["LAB_DIRECT_PORT"] == "15432" and env["LAB_DB_ADDRESS"] == "127.0.0.2"
    assert env["LAB_CONFIG_DIR"] == "/state/x/config" and env["LAB_IMAGE"] == "img:1"
    other = render(load_config(overrides={"pool_size": 3}), SECRETS, "img:1", "/state/x/config")
    assert other["compose.env"] != files["compose.env"]  # a changed setting recreates


@pytest.mark.parametrize("sharing, inner", [("per-mode", False), ("shared", True)])
def test_pool_sharing_adds_an_inner_shared_pool(sharing, inner):
    files = render(load_config(overrides={"pool_sharing": sharing}), SECRETS, "img", "/c")
    assert ("pooler/pgbouncer-shared.ini" in files) is inner
    target = ini(files["pooler/pgbouncer-session.ini"])["databases"]["*"]
    assert ("port=6432" in target) is inner


def test_rendering_is_deterministic():
    cfg = load_config()
    assert render(cfg, SECRETS, "i", "/c") == render(cfg, SECRETS, "i", "/c")


@pytest.mark.parametrize("overflow, cap", [("refuse", "7"), ("queue", "0")])
def test_session_overflow_caps_session_clients_at_pool_size(overflow, cap):
    # refuse: the (pool_size+1)th session client is refused at login, as Supavisor 2.8+ does;
    # queue: it logs in and queues for a backend. Transaction mode never caps its clients.
    cfg = load_config(overrides={"pool_size": 7, "session_overflow": overflow})
    files = render(cfg, SECRETS, "img", "/c")
    session = ini(files["pooler/pgbouncer-session.ini"])["pgbouncer"]
    assert session["max_user_client_connections"] == cap
    for rel in ("pooler/pgbouncer-transaction.ini", "dedicated/pgbouncer-dedicated.ini"):
        assert "max_user_client_connections" not in ini(files[rel])["pgbouncer"], rel


@pytest.mark.parametrize("sharing", ["per-mode", "shared"])
def test_the_prepared_statement_switch_reaches_only_the_transaction_pooler(sharing):
    off = render(load_config(overrides={"pool_sharing": sharing}), SECRETS, "img", "/c")
    on = render(load_config(overrides={"pool_sharing": sharing,
                                       "shared_max_prepared_statements": 200}),
                SECRETS, "img", "/c")
    for files, value in ((off, "0"), (on, "200")):
        assert ini(files["pooler/pgbouncer-transaction.ini"])["pgbouncer"][
            "max_prepared_statements"] == value
        # Session mode needs no tracking; the dedicated pooler has its own setting.
        for rel in ("pooler/pgbouncer-session.ini", "dedicated/pgbouncer-dedicated.ini",
                    *(["pooler/pgbouncer-shared.ini"] if sharing == "shared" else [])):
            assert ini(files[rel])["pgbouncer"]["max_prepared_statements"] == "0", rel
    assert on["compose.env"] != off["compose.env"]  # lab up recreates the pooler
