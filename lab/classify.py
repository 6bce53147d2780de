"""What went wrong with a request, as one of the error classes of docs/formats.md.

``classify(exc)`` takes a psycopg / psycopg_pool exception (or any exception a client can see);
``classify(sqlstate, message)`` takes the same information as plain values, so experiments that
read a log or another client's output can reuse the rules. The result is
``(error_class, sqlstate, message)``: the message is the first line of the text, whitespace
collapsed, passwords removed, at most 200 characters. The SQLSTATE is the one the exception
carries; a failed connection attempt carries none (libpq keeps it), so for the two FATAL texts
only Postgres sends (53300 too many clients, 28P01 bad password) it is filled in from the text.

Pure: no psycopg import (exceptions are recognised by their SQLSTATE, class names and text), so
it runs in the orchestrator and in Locust processes alike.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote

CLASSES = ("too_many_clients", "max_client_conn", "pool_timeout", "prepared_statement",
           "authentication", "network", "other")
MAX_MESSAGE = 200
MASK = "[YOUR-PASSWORD]"

# SQLSTATE -> class, for codes that mean one thing whatever the text says.
_SQLSTATES = {
    "53300": "too_many_clients",  # too_many_connections
    "26000": "prepared_statement",  # invalid_sql_statement_name: prepared statement does not exist
    "42P05": "prepared_statement",  # duplicate_prepared_statement
    "28P01": "authentication",  # invalid_password
    "28000": "authentication",  # invalid_authorization_specification
    "57P01": "network",  # admin_shutdown: the server (or pooler) went away
    "57P02": "network",  # crash_shutdown
    "57P03": "network",  # cannot_connect_now: starting up / shutting down
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
        ("network", r"connection refused"),
        ("network", r"connection reset"),
        ("network", r"connection timed out"),
        ("network", r"timeout expired"),
        ("network", r"server closed the connection unexpectedly"),
        ("network", r"the connection is (closed|lost)"),
        ("network", r"consuming input failed"),
        ("network", r"could not (send|receive) data"),
        ("network", r"no route to host"),
        ("network", r"broken pipe"),
        ("network", r"could not translate host name"),
        ("network", r"terminating connection due to administrator command"),
        ("network", r"server conn crashed"),
        ("network", r"pgbouncer cannot connect to server"),
        ("network", r"client_login_timeout"),
        ("network", r"SSL SYSCALL error"),
    )
)

# Exception class names (anywhere in the MRO) -> class, for errors that carry no useful text.
_TYPES = {
    "PoolTimeout": "pool_timeout",  # psycopg_pool: no connection within the checkout timeout
    "TooManyRequests": "pool_timeout",  # psycopg_pool: more clients waiting than max_waiting
    "ConnectionTimeout": "network",  # psycopg: connect_timeout expired
    "ConnectionRefusedError": "network",
    "ConnectionResetError": "network",
    "ConnectionAbortedError": "network",
    "BrokenPipeError": "network",
    "TimeoutError": "network",
    "socket.timeout": "network",
    "gaierror": "network",
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
            return cls
    if sqlstate:
        if sqlstate in _SQLSTATES:
            return _SQLSTATES[sqlstate]
        if sqlstate.startswith("08"):  # connection_exception
            return "network"
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
