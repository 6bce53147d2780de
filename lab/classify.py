"""What went wrong with a request, as one of the error classes of docs/formats.md.

``classify(exc)`` takes a psycopg / psycopg_pool exception (or any exception a client can see);
``classify(sqlstate, message)`` takes the same information as plain values, so experiments that
read a log or another client's output can reuse the rules. The result is
``(error_class, sqlstate, message)``: the message is the first line of the text, whitespace
collapsed, passwords removed, at most 200 characters. The SQLSTATE is the one the exception
carries; a failed connection attempt carries none (libpq keeps it), so for the two FATAL texts
only Postgres sends (53300 too many clients, 28P01 bad password) it is filled in from the text.

Connection failures are two classes: ``connection_refused`` (no connection was made: refused,
timed out, unreachable, a pooler that cannot reach its server, a server starting or shutting
down) and ``connection_lost`` (an established connection dropped). Anything that goes wrong
*while connecting* is connection_refused, even a dropped handshake (see _CONNECT_PHASE). An
exception with ``classify_as_cause = True`` is classified as its ``__cause__`` (lab.users' pool
checkout that timed out because the pool could not connect). ``unfinished`` and
``not_started`` are recorded by the load users themselves; classify never returns them.

Pure: no psycopg import (exceptions are recognised by their SQLSTATE, class names and text), so
it runs in the orchestrator and in Locust processes alike.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote

CLASSES = ("too_many_clients", "max_client_conn", "pool_timeout", "prepared_statement",
           "authentication", "tls", "connection_refused", "connection_lost", "unfinished",
           "not_started", "other")
# classify() never returns these two: the load users record them for requests they cut off at
# the stop (unfinished) and for scheduled arrivals that never started (not_started).
LOAD_CLASSES = ("unfinished", "not_started")
# Run files written before requests/1.1 have one class `network` for both connection classes;
# it may still appear in older run directories (lab.analysis maps it), never in new ones.
LEGACY_CLASSES = ("network",)
MAX_MESSAGE = 200
MASK = "[YOUR-PASSWORD]"

# SQLSTATE -> class, for codes that mean one thing whatever the text says.
_SQLSTATES = {
    "53300": "too_many_clients",  # too_many_connections
    "26000": "prepared_statement",  # invalid_sql_statement_name: prepared statement does not exist
    "42P05": "prepared_statement",  # duplicate_prepared_statement
    "28P01": "authentication",  # invalid_password
    "28000": "authentication",  # invalid_authorization_specification
    "57P01": "connection_lost",  # admin_shutdown: the server (or pooler) went away
    "57P02": "connection_lost",  # crash_shutdown
    "57P03": "connection_refused",  # cannot_connect_now: starting up / shutting down
    "08001": "connection_refused",  # sqlclient_unable_to_establish_sqlconnection
    "08004": "connection_refused",  # sqlserver_rejected_establishment_of_sqlconnection
}

# Texts only Postgres sends, with the SQLSTATE it sends them with: libpq does not expose the
# SQLSTATE of a failed connection attempt, so psycopg's OperationalError has none; these fill it.
_KNOWN_SQLSTATES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (state, re.compile(pattern, re.IGNORECASE)) for state, pattern in (
        ("53300", r"FATAL:\s+(sorry, too many clients already|remaining connection slots are "
                  r"reserved)"),
        ("28P01", r"FATAL:\s+password authentication failed"),
    )
)

# Text -> class, checked in order (first match wins). The texts are what Postgres, PgBouncer,
# Supavisor and libpq print; PgBouncer sends most of its own errors as 08P01, so the text has to
# decide before the SQLSTATE class 08 does.
_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (cls, re.compile(pattern, re.IGNORECASE)) for cls, pattern in (
        ("too_many_clients", r"too many clients already"),
        ("too_many_clients", r"remaining connection slots are reserved"),
        ("max_client_conn", r"no more connections allowed \(max_client_conn\)"),
        # PgBouncer 1.24's per-user / per-database client caps. The lab's session pooler caps
        # postgres.<tenant> at pool_size (session_overflow = "refuse"): the lab's text for
        # Supavisor 2.8+'s (EMAXCONNSESSION), the session-mode limit, hence the same class.
        ("max_client_conn", r"client connections exceeded \(max_(user|db)_client_connections\)"),
        ("max_client_conn", r"\(EMAXCONN(SESSION)?\)"),
        ("max_client_conn", r"max client(s| connections) reached"),
        ("pool_timeout", r"query_wait_timeout"),
        ("pool_timeout", r"\(ECHECKOUTTIMEOUT\)"),
        ("pool_timeout", r"unable to check out connection from the pool"),
        ("pool_timeout", r"couldn't get a connection after"),  # psycopg_pool PoolTimeout
        ("prepared_statement", r"prepared statement \S+ (does not exist|already exists)"),
        ("authentication", r"tenant or user not found"),
        ("authentication", r"password authentication failed"),
        ("authentication", r"no password (was )?supplied"),
        ("authentication", r"SASL authentication failed"),
        # TLS: a server that refuses a plaintext client (PgBouncer's client_tls_sslmode=require,
        # Postgres's hostssl-only pg_hba.conf: ssl_enforce), or a certificate the client's
        # sslmode=verify-full does not accept. Before the connection classes: libpq wraps them
        # in "connection to server ... failed:".
        ("tls", r"FATAL:\s+SSL required"),
        ("tls", r"no pg_hba\.conf entry for host .*no encryption"),
        ("tls", r"server certificate for .* does not match host name"),
        ("tls", r"certificate verify failed"),
        ("tls", r"root certificate file .* does not exist"),
        ("tls", r"server does not support SSL, but SSL was required"),
        # An established connection dropped. Checked before the refused texts: "could not
        # receive data from server: Connection timed out" is a lost connection.
        ("connection_lost", r"server closed the connection unexpectedly"),
        ("connection_lost", r"consuming input failed"),
        ("connection_lost", r"could not (send|receive) data"),
        ("connection_lost", r"connection reset"),
        ("connection_lost", r"broken pipe"),
        ("connection_lost", r"the connection is (closed|lost)"),
        ("connection_lost", r"terminating connection due to (administrator command|"
                            r"unexpected postmaster exit|crash of another server process)"),
        ("connection_lost", r"server conn crashed"),
        ("connection_lost", r"SSL SYSCALL error"),
        ("connection_lost", r"SSL connection has been closed unexpectedly"),
        # PgBouncer dropping a client itself (08P01): KILL_CLIENT ("admin forced disconnect"),
        # KILL db ("database removed"), and an idle client past client_idle_timeout.
        # Supavisor's {:shutdown, :client_termination} is the same.
        ("connection_lost", r"admin forced disconnect"),
        ("connection_lost", r"database removed"),
        ("connection_lost", r"client_idle_timeout"),
        # Could not connect at all.
        ("connection_refused", r"connection refused"),
        ("connection_refused", r"timeout expired"),
        ("connection_refused", r"connection timed out"),
        ("connection_refused", r"no route to host"),
        ("connection_refused", r"network is unreachable"),
        ("connection_refused", r"could not translate host name"),
        ("connection_refused", r"failed to resolve host"),
        ("connection_refused", r"pgbouncer cannot connect to server"),
        # PgBouncer refusing logins for server_login_retry after its server login failed
        # (Postgres restarting); a tenant that does not exist is authentication (above).
        ("connection_refused", r"server login has been failing"),
        ("connection_refused", r"client_login_timeout"),
        ("connection_refused", r"the database system is (starting up|shutting down|"
                               r"in recovery mode|not yet accepting connections)"),
    )
)

# libpq's text for a failed connection attempt: "connection to server at "h", port p failed:
# <why>" (psycopg prefixes "connection failed: "). The rule: whatever went wrong *while
# connecting* is connection_refused, even when the text reads like a dropped connection
# ("server closed the connection unexpectedly" during the startup handshake: a pooler that
# accepts TCP but dies or is killed before the login completes). Nothing was established, so
# nothing was lost; the request never got a usable connection. (The analysis can still tell
# the phase apart: such a row has a connect_ms and no query_ms.)
_CONNECT_PHASE = re.compile(r"^(connection failed: )?connection to server (at|on) .*? failed:",
                            re.IGNORECASE)

# Exception class names (anywhere in the MRO) -> class, for errors that carry no useful text.
_TYPES = {
    "PoolTimeout": "pool_timeout",  # psycopg_pool: no connection within the checkout timeout
    "TooManyRequests": "pool_timeout",  # psycopg_pool: more clients waiting than max_waiting
    "ConnectionTimeout": "connection_refused",  # psycopg: connect_timeout expired
    "ConnectionRefusedError": "connection_refused",
    "gaierror": "connection_refused",  # host name not resolved
    "TimeoutError": "connection_refused",  # a socket timeout: a connect that never completed
    "timeout": "connection_refused",  # socket.timeout (an alias of TimeoutError since 3.10)
    "ConnectionResetError": "connection_lost",
    "ConnectionAbortedError": "connection_lost",
    "BrokenPipeError": "connection_lost",
}

_URI_PASSWORD = re.compile(r"(postgres(?:ql)?://[^:/@\s]*:)([^@\s]*)(@)", re.IGNORECASE)
_KV_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def classify(error: BaseException | tuple[str | None, str] | str | None,
             message: str | None = None, *,
             secrets: Iterable[str] = ()) -> tuple[str, str | None, str]:
    """Return ``(error_class, sqlstate, message)`` for an exception or a (sqlstate, message).

    Call it as ``classify(exc)``, ``classify(sqlstate, message)`` or
    ``classify((sqlstate, message))``. ``secrets`` are extra values (passwords) to remove from
    the message; passwords inside URIs and ``password=...`` settings are always removed.
    """
    type_class = None
    if isinstance(error, BaseException) and getattr(error, "classify_as_cause", False) \
            and isinstance(error.__cause__, BaseException):
        # A wrapper that names the real failure (lab.users' pool checkout that timed out
        # because connecting failed): the class and SQLSTATE are the cause's, the message the
        # wrapper's own.
        cls, sqlstate, _ = classify(error.__cause__)
        return cls, sqlstate, first_line(_text_of(error), secrets=secrets)
    if isinstance(error, BaseException):
        sqlstate = _sqlstate_of(error)
        text = _text_of(error)
        type_class = _type_class(error)
    elif isinstance(error, tuple):
        if len(error) != 2:
            raise TypeError("classify() takes an exception or a (sqlstate, message) pair")
        sqlstate, text = error[0], error[1] or ""
    else:
        sqlstate, text = error, message or ""
    sqlstate = (sqlstate or "").strip().upper() or _known_sqlstate(text)
    return _decide(sqlstate, text, type_class), sqlstate, first_line(text, secrets=secrets)


def _decide(sqlstate: str | None, text: str, type_class: str | None) -> str:
    # The text first: PgBouncer reports max_client_conn, query_wait_timeout and friends as 08P01,
    # and libpq puts a server's FATAL line inside a connection-failure OperationalError that has
    # no SQLSTATE at all.
    for cls, pattern in _PATTERNS:
        if pattern.search(text):
            if cls == "connection_lost" and _CONNECT_PHASE.search(text.lstrip()):
                return "connection_refused"  # it happened while connecting (see above)
            return cls
    if sqlstate:
        if sqlstate in _SQLSTATES:
            return _SQLSTATES[sqlstate]
        # connection_exception: 08P01 (protocol_violation) is what PgBouncer sends most of its
        # own errors as, so it says nothing by itself; the rest mean the connection failed.
        if sqlstate.startswith("08") and sqlstate != "08P01":
            return "connection_lost"
    if type_class:
        return type_class
    return "other"


def _known_sqlstate(text: str) -> str | None:
    for state, pattern in _KNOWN_SQLSTATES:
        if pattern.search(text):
            return state
    return None


def _sqlstate_of(exc: BaseException) -> str | None:
    state = getattr(exc, "sqlstate", None)
    if state:
        return str(state)
    diag = getattr(exc, "diag", None)
    state = getattr(diag, "sqlstate", None) if diag is not None else None
    return str(state) if state else None


def _text_of(exc: BaseException) -> str:
    text = str(exc)
    if not text.strip():
        return type(exc).__name__
    return text


def _type_class(exc: BaseException) -> str | None:
    for klass in type(exc).__mro__:
        if klass.__name__ in _TYPES:
            return _TYPES[klass.__name__]
    return None


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Remove passwords: the given values (plain and URL-quoted) and any in URIs or key=value."""
    for value in secrets:
        if value:
            text = text.replace(value, MASK)
            quoted = quote(value, safe="")
            if quoted != value:
                text = text.replace(quoted, MASK)
    text = _URI_PASSWORD.sub(lambda m: m.group(1) + MASK + m.group(3), text)
    return _KV_PASSWORD.sub(lambda m: m.group(1) + MASK, text)


def first_line(text: str, *, secrets: Iterable[str] = (), limit: int = MAX_MESSAGE) -> str:
    """The first non-empty line, whitespace collapsed, passwords removed, at most ``limit``."""
    text = redact(text or "", secrets)
    for line in text.splitlines():
        line = " ".join(line.split())
        if line:
            return line if len(line) <= limit else line[: limit - 3] + "..."
    return ""
