"""lab.pg: connections of the orchestrator process."""

from __future__ import annotations

import gc
import os
import socket

import psycopg
import pytest

from lab import pg


def open_sockets() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except OSError:
            continue
    return count


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_a_timed_out_connect_leaves_no_socket_open():
    # A server that accepts (the kernel's backlog) and never answers: libpq's startup waits
    # until connect_timeout. psycopg keeps that attempt's socket in a reference cycle of the
    # exception it raises; only the cyclic garbage collector, off here, would close it.
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        gc.disable()
        try:
            before = open_sockets()
            for _ in range(2):
                with pytest.raises(psycopg.OperationalError, match="timeout"):
                    pg.open_connection(host="127.0.0.1", port=port, user="x", password="y",
                                       dbname="x", sslmode="disable", connect_timeout=1)
            assert open_sockets() == before
        finally:
            gc.enable()
