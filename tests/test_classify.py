"""Error classification with real psycopg / psycopg_pool exception objects and the exact texts
Postgres, PgBouncer and Supavisor send (see shared reference notes)."""

from __future__ import annotations

import psycopg
import psycopg.errors as pe
import psycopg_pool
import pytest

from lab.classify import CLASSES, MASK, classify, first_line, redact

CONNECT = 'connection failed: connection to server at "172.18.0.2", port 5432 failed: '


@pytest.mark.parametrize(("exc", "expected", "sqlstate"), [
    (pe.TooManyConnections("sorry, too many clients already"), "too_many_clients", "53300"),
    (psycopg.OperationalError(CONNECT + "FATAL:  sorry, too many clients already"),
     "too_many_clients", "53300"),
    (psycopg.OperationalError(CONNECT + "FATAL:  remaining connection slots are reserved for "
                              "roles with the SUPERUSER attribute"), "too_many_clients", "53300"),
    (psycopg.OperationalError(CONNECT + 'FATAL:  password authentication failed for user "x"'),
     "authentication", "28P01"),
    (psycopg.OperationalError(CONNECT + "FATAL:  no more connections allowed "
                              "(max_client_conn)"), "max_client_conn", None),
    (pe.ProtocolViolation("no more connections allowed (max_client_conn)"),
     "max_client_conn", "08P01"),
    (psycopg.OperationalError("(EMAXCONNSESSION) max clients reached in session mode - max "
                              "clients are limited to pool_size: 15"), "max_client_conn", None),
    (psycopg.OperationalError("(EMAXCONN) max client connections reached, limit: 200"),
     "max_client_conn", None),
    (pe.ProtocolViolation("query_wait_timeout"), "pool_timeout", "08P01"),
    (psycopg.OperationalError("(ECHECKOUTTIMEOUT) unable to check out connection from the pool "
                              "after 60000ms in Transaction mode"), "pool_timeout", None),
    (psycopg_pool.PoolTimeout("couldn't get a connection after 10.00 sec"), "pool_timeout",
     None),
    (psycopg_pool.TooManyRequests("the pool 'p' has already 5 requests waiting"),
     "pool_timeout", None),
    (pe.InvalidSqlStatementName('prepared statement "_pg3_0" does not exist'),
     "prepared_statement", "26000"),
    (pe.DuplicatePreparedStatement('prepared statement "_pg3_0" already exists'),
     "prepared_statement", "42P05"),
    (pe.InvalidPassword('password authentication failed for user "postgres"'),
     "authentication", "28P01"),
    (psycopg.OperationalError(CONNECT + "FATAL:  Tenant or user not found"),
     "authentication", None),
    (psycopg.OperationalError('connection failed: connection to server at "127.0.0.1", port 1 '
                              "failed: Connection refused\n\tIs the server running on that "
                              "host and accepting TCP/IP connections?"), "network", None),
    (psycopg.OperationalError("consuming input failed: server closed the connection "
                              "unexpectedly"), "network", None),
    (pe.AdminShutdown("terminating connection due to administrator command"), "network",
     "57P01"),
    (pe.ConnectionTimeout("connection timeout expired"), "network", None),
    (ConnectionResetError(104, "Connection reset by peer"), "network", None),
    (TimeoutError(), "network", None),
    (pe.DivisionByZero("division by zero"), "other", "22012"),
    (ValueError("something else"), "other", None),
])
def test_exceptions(exc, expected, sqlstate):
    cls, state, message = classify(exc)
    assert cls == expected
    assert state == sqlstate
    assert message and "\n" not in message and len(message) <= 200


def test_every_class_is_documented():
    assert set(CLASSES) == {"too_many_clients", "max_client_conn", "pool_timeout",
                            "prepared_statement", "authentication", "network", "other"}


def test_sqlstate_message_pairs():
    assert classify("53300", "sorry, too many clients already") == (
        "too_many_clients", "53300", "sorry, too many clients already")
    assert classify(("08P01", "no more connections allowed (max_client_conn)"))[0] == \
        "max_client_conn"
    assert classify("08006", "anything")[0] == "network"
    assert classify("26000", "")[0] == "prepared_statement"
    assert classify(None, "Tenant or user not found") == (
        "authentication", None, "Tenant or user not found")
    assert classify("xx000", "boom") == ("other", "XX000", "boom")


def test_text_beats_a_generic_sqlstate():
    # PgBouncer reports its own limits as protocol violations (08P01): the text decides.
    assert classify("08P01", "query_wait_timeout")[0] == "pool_timeout"


def test_message_first_line_and_length():
    cls, _, message = classify(psycopg.OperationalError("\n  first   line  \nsecond line"))
    assert message == "first line"
    long = classify(None, "x" * 500)[2]
    assert len(long) == 200 and long.endswith("...")
    assert classify(psycopg.OperationalError(""))[2] == "OperationalError"


def test_passwords_are_removed():
    exc = psycopg.OperationalError(
        "could not connect to postgresql://postgres:s3cr%2Fet@10.0.0.1:5432/postgres "
        "password=hunter2 sorry, too many clients already")
    cls, _, message = classify(exc, secrets=["s3cr/et"])
    assert cls == "too_many_clients"
    assert "s3cr" not in message and "hunter2" not in message
    assert message.count(MASK) == 2
    assert redact("pw is s3cr/et or s3cr%2Fet", ["s3cr/et"]) == f"pw is {MASK} or {MASK}"
    assert first_line("a postgres://u:p@h/db b") == f"a postgres://u:{MASK}@h/db b"


def test_bad_pair():
    with pytest.raises(TypeError):
        classify(("a", "b", "c"))
