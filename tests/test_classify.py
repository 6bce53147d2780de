"""Error classification with real psycopg / psycopg_pool exception objects and the exact texts
Postgres, PgBouncer and Supavisor send (see shared reference notes)."""

from __future__ import annotations

import socket

import psycopg
import psycopg.errors as pe
import psycopg_pool
import pytest

from lab.classify import CLASSES, LEGACY_CLASSES, LOAD_CLASSES, MASK, classify, first_line, redact

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
    # the lab's session pooler beyond pool_size (session_overflow = "refuse"): EMAXCONNSESSION
    (psycopg.OperationalError(CONNECT + "FATAL:  client connections exceeded "
                              "(max_user_client_connections)"), "max_client_conn", None),
    (psycopg.OperationalError(CONNECT + "FATAL:  client connections exceeded "
                              "(max_db_client_connections)"), "max_client_conn", None),
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
    # could not connect at all: connection_refused
    (psycopg.OperationalError('connection failed: connection to server at "127.0.0.1", port 1 '
                              "failed: Connection refused\n\tIs the server running on that "
                              "host and accepting TCP/IP connections?"), "connection_refused",
     None),
    (psycopg.OperationalError(CONNECT + "timeout expired"), "connection_refused", None),
    (psycopg.OperationalError(CONNECT + "No route to host"), "connection_refused", None),
    (psycopg.OperationalError('could not translate host name "nope" to address: Name or '
                              "service not known"), "connection_refused", None),
    (psycopg.OperationalError("failed to resolve host 'nope.invalid': [Errno -2] Name or "
                              "service not known"), "connection_refused", None),
    (pe.ProtocolViolation("pgbouncer cannot connect to server"), "connection_refused", "08P01"),
    # PgBouncer dropping the client itself (KILL_CLIENT, client_idle_timeout) mid-session
    (pe.ProtocolViolation("admin forced disconnect"), "connection_lost", "08P01"),
    (pe.ProtocolViolation("client_idle_timeout"), "connection_lost", "08P01"),
    (psycopg.OperationalError(CONNECT + "FATAL:  client_login_timeout (server down)"),
     "connection_refused", None),
    (pe.CannotConnectNow("the database system is shutting down"), "connection_refused",
     "57P03"),
    (pe.CannotConnectNow("anything else"), "connection_refused", "57P03"),
    (pe.ConnectionTimeout("connection timeout expired"), "connection_refused", None),
    (ConnectionRefusedError(111, "Connection refused"), "connection_refused", None),
    (socket.gaierror(-2, "Name or service not known"), "connection_refused", None),
    (TimeoutError(), "connection_refused", None),
    # the rule for a dropped connection during connect: still connection_refused
    (psycopg.OperationalError(CONNECT + "server closed the connection unexpectedly\n\tThis "
                              "probably means the server terminated abnormally"),
     "connection_refused", None),
    (psycopg.OperationalError(CONNECT + "Connection reset by peer"), "connection_refused",
     None),
    # an established connection dropped: connection_lost
    (psycopg.OperationalError("consuming input failed: server closed the connection "
                              "unexpectedly"), "connection_lost", None),
    (psycopg.OperationalError("server closed the connection unexpectedly\n\tThis probably "
                              "means the server terminated abnormally"), "connection_lost",
     None),
    (psycopg.OperationalError("could not receive data from server: Connection timed out"),
     "connection_lost", None),
    (psycopg.OperationalError("could not send data to server: Broken pipe"), "connection_lost",
     None),
    (psycopg.OperationalError("the connection is closed"), "connection_lost", None),
    (psycopg.OperationalError("the connection is lost"), "connection_lost", None),
    (pe.AdminShutdown("terminating connection due to administrator command"),
     "connection_lost", "57P01"),
    (pe.AdminShutdown("anything"), "connection_lost", "57P01"),
    (pe.CrashShutdown("terminating connection because of crash of another server process"),
     "connection_lost", "57P02"),
    (pe.ProtocolViolation("server conn crashed?"), "connection_lost", "08P01"),
    (psycopg.OperationalError("SSL SYSCALL error: EOF detected"), "connection_lost", None),
    (ConnectionResetError(104, "Connection reset by peer"), "connection_lost", None),
    (BrokenPipeError(32, "Broken pipe"), "connection_lost", None),
    (pe.DivisionByZero("division by zero"), "other", "22012"),
    (ValueError("something else"), "other", None),
])
def test_exceptions(exc, expected, sqlstate):
    cls, state, message = classify(exc)
    assert cls == expected
    assert state == sqlstate
    assert message and "\n" not in message and len(message) <= 200


def test_every_class_is_documented():
    assert CLASSES == ("too_many_clients", "max_client_conn", "pool_timeout",
                       "prepared_statement", "authentication", "tls", "connection_refused",
                       "connection_lost", "unfinished", "not_started", "other")
    assert set(LOAD_CLASSES) <= set(CLASSES) and "network" not in CLASSES
    assert LEGACY_CLASSES == ("network",)


def test_classify_never_answers_network_or_a_load_class():
    texts = ["connection refused", "connection reset", "timeout expired", "broken pipe",
             "server closed the connection unexpectedly", "SSL SYSCALL error", "x", ""]
    states = [None, "08000", "08001", "08003", "08004", "08006", "08007", "08P01", "57P01",
              "57P02", "57P03", "XX000"]
    seen = {classify(state, text)[0] for state in states for text in texts}
    assert seen <= set(CLASSES) - set(LOAD_CLASSES), seen
    assert {"connection_refused", "connection_lost"} <= seen


def test_a_wrapper_is_classified_as_its_cause():
    """lab.users raises a PoolTimeout that names its cause; the class is the cause's."""

    class Wrapper(psycopg_pool.PoolTimeout):
        classify_as_cause = True

    cause = psycopg.OperationalError(CONNECT + "FATAL:  sorry, too many clients already")
    try:
        raise Wrapper("pool checkout timed out after 10 s; the last connection attempt "
                      "failed: sorry, too many clients already") from cause
    except Wrapper as exc:
        assert classify(exc) == ("too_many_clients", "53300",
                                 "pool checkout timed out after 10 s; the last connection "
                                 "attempt failed: sorry, too many clients already")
    refused = Wrapper("pool checkout timed out after 2 s; the last connection attempt failed")
    refused.__cause__ = ConnectionRefusedError(111, "Connection refused")
    assert classify(refused)[0] == "connection_refused"
    plain = Wrapper("couldn't get a connection after 2.00 sec")  # no cause: a plain timeout
    assert classify(plain)[0] == "pool_timeout"


def test_sqlstate_message_pairs():
    assert classify("53300", "sorry, too many clients already") == (
        "too_many_clients", "53300", "sorry, too many clients already")
    assert classify(("08P01", "no more connections allowed (max_client_conn)"))[0] == \
        "max_client_conn"
    assert classify("08006", "anything")[0] == "connection_lost"
    assert classify("08001", "anything")[0] == "connection_refused"
    assert classify("08P01", "anything")[0] == "other"  # PgBouncer's catch-all code
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


def test_pgbouncer_refusing_logins_after_a_failed_server_login():
    refused = ("server login has been failing, cached error: connect failed "
               "(server_login_retry)")
    assert classify("08P01", refused)[0] == "connection_refused"
    tenant = ("server login has been failing, cached error: Tenant or user not found "
              "(server_login_retry)")
    assert classify("08P01", tenant)[0] == "authentication"
