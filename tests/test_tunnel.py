"""lab.distributed.tunnel: TLS + worker token in front of Locust's master port, no Docker.

A threaded TCP echo server on 127.0.0.1 stands in for Locust's master port; bytes go
client -> WorkerTunnel -> (TLS) -> MasterTunnel -> echo and back. Every wait is bounded.
"""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import stat
import threading
import time

import pytest

from lab.distributed.tunnel import (
    MasterTunnel,
    WorkerTunnel,
    is_loopback,
    join_code,
    new_token,
    parse_join_code,
)
from lab.errors import ConfigError

pytestmark = pytest.mark.timeout(60)


def wait_for(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def tunnel_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("lab-tunnel-")]


class EchoServer:
    """Echoes every byte back; counts connections and bytes received."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.connections = self.received = 0
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()
        self.listener.close()

    def _echo(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        with conn:
            try:
                while data := conn.recv(65536):
                    with self.lock:
                        self.received += len(data)
                    conn.sendall(data)
            except OSError:
                pass


@pytest.fixture
def echo():
    server = EchoServer()
    yield server
    server.stop.set()
    server.thread.join(2)


class Log(list):
    def __call__(self, line: str) -> None:
        self.append(line)


@pytest.fixture
def tunnels(tmp_path, echo):
    """make(token=..., fingerprint=...) -> (master, worker, master log, worker log)."""
    made = []

    def make(token: str | None = None, fingerprint: str | None = None):
        real = new_token()
        mlog, wlog = Log(), Log()
        master = MasterTunnel("127.0.0.1", 0, echo.port, tmp_path / "tunnel", real,
                              log=mlog).start()
        worker = WorkerTunnel("127.0.0.1", master.port, token or real,
                              fingerprint or master.fingerprint, log=wlog).start()
        made.extend([worker, master])
        return master, worker, mlog, wlog

    yield make
    for item in made:
        item.close()
    assert wait_for(lambda: not tunnel_threads(), 3), tunnel_threads()


def through(port: int, payload: bytes, timeout: float = 30) -> bytes:
    """Send payload to 127.0.0.1:port while reading the echo back; return what came back."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sender = threading.Thread(target=sock.sendall, args=(payload,), daemon=True)
        sender.start()
        back = bytearray()
        while len(back) < len(payload):
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            back += chunk
        sender.join(timeout)
        return bytes(back)


def refused(port: int, payload: bytes = b"hello\n") -> bytes:
    """What a client gets back before the connection ends (b"" when refused)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(payload)
            return sock.recv(4096)
        except ConnectionResetError:
            return b""


# --- bytes through the tunnel ------------------------------------------------------------------


def test_bytes_round_trip_large_and_concurrent(tunnels, echo):
    master, worker, mlog, wlog = tunnels()
    assert worker._listener.getsockname()[0] == "127.0.0.1"  # Locust's side: loopback only
    assert through(worker.port, b"ping\n") == b"ping\n"
    big = os.urandom(5 * 1024 * 1024)
    assert hashlib.sha256(through(worker.port, big)).digest() == hashlib.sha256(big).digest()

    results: dict[int, bool] = {}

    def one(i: int) -> None:
        payload = os.urandom(200_000 + i)
        results[i] = through(worker.port, payload) == payload

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results == {i: True for i in range(8)}
    assert echo.connections == 10
    assert master.connections_refused == 0
    assert worker.last_error is None and worker.last_transient is None
    assert not mlog and not wlog


def test_wrong_token_is_refused_and_not_logged(tunnels, echo):
    wrong = new_token()
    master, worker, mlog, wlog = tunnels(token=wrong)
    assert refused(worker.port) == b""
    assert wait_for(lambda: master.connections_refused == 1)
    assert echo.connections == 0 and echo.received == 0
    assert len(mlog) == 1 and "127.0.0.1:" in mlog[0] and "token" in mlog[0]
    assert wrong not in mlog[0] and master._expected.decode() not in mlog[0]
    assert worker.last_error == (f"the master at 127.0.0.1:{master.port} refused the token "
                                 "of the join code")
    assert all(wrong not in line for line in wlog)
    # Locust's worker retries: each retry is counted, the log line is not repeated.
    assert refused(worker.port) == b""
    assert wait_for(lambda: master.connections_refused == 2)
    assert len(mlog) == 1 and len(wlog) == 1


def test_wrong_fingerprint_is_refused_by_the_worker(tunnels, echo):
    master, worker, mlog, wlog = tunnels(fingerprint="ab" * 32)
    assert refused(worker.port) == b""
    assert worker.last_error == "the master's certificate does not match the join code"
    assert worker.last_transient is None
    assert wlog == ["locust tunnel: the master's certificate does not match the join code"]
    time.sleep(0.2)
    assert echo.connections == 0 and echo.received == 0


def test_a_tls_client_with_a_wrong_token_is_denied(tunnels, echo):
    master, worker, mlog, wlog = tunnels()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    raw = socket.create_connection(("127.0.0.1", master.port), timeout=10)
    with context.wrap_socket(raw) as sock:
        sock.sendall(b"POOLER-LAB-WORKER " + new_token().encode() + b"\nmore bytes")
        reply = b""
        while chunk := sock.recv(100):
            reply += chunk
    assert reply == b"DENIED\n"
    assert wait_for(lambda: master.connections_refused == 1)
    assert echo.connections == 0 and echo.received == 0


def test_master_up_but_locust_master_not_listening_is_transient(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as holder:
        closed = holder.getsockname()[1]
    token, mlog, wlog = new_token(), Log(), Log()
    with MasterTunnel("127.0.0.1", 0, closed, tmp_path, token, log=mlog) as master, \
            WorkerTunnel("127.0.0.1", master.port, token, master.fingerprint, log=wlog) as worker:
        for _ in range(3):
            assert refused(worker.port) == b""
        assert worker.last_error is None
        assert worker.last_transient == (f"the master at 127.0.0.1:{master.port} is up but its "
                                         "Locust master is not listening yet")
        assert master.connections_refused == 0
        assert wait_for(lambda: len(mlog) == 1) and len(wlog) == 1  # logged once, not thrice
        assert f"127.0.0.1:{closed}" in mlog[0]


def test_plain_tcp_client_gets_nothing_through(tunnels, echo):
    master, worker, mlog, wlog = tunnels()
    token = master._expected.decode().split()[-1]
    assert refused(master.port, f"POOLER-LAB-WORKER {token}\n".encode()) == b""
    assert wait_for(lambda: master.connections_refused == 1)
    assert echo.connections == 0 and echo.received == 0
    assert "no TLS handshake" in mlog[0] and token not in mlog[0]


def test_worker_reports_an_unreachable_master():
    with socket.create_server(("127.0.0.1", 0)) as holder:
        port = holder.getsockname()[1]
    wlog = Log()
    with WorkerTunnel("127.0.0.1", port, new_token(), "0" * 64, log=wlog) as worker:
        assert refused(worker.port) == b""
        assert worker.last_transient == f"connection refused by 127.0.0.1:{port}"
        assert worker.last_error is None  # may pass: `lab worker` may start before `lab run`
    assert wait_for(lambda: not tunnel_threads(), 3)


# --- join codes, addresses ---------------------------------------------------------------------


def test_join_code_round_trip():
    token, fingerprint = new_token(), hashlib.sha256(b"x").hexdigest()
    code = join_code(token, fingerprint)
    assert code == f"{token}.{fingerprint}"
    assert parse_join_code(code) == (token, fingerprint)
    assert parse_join_code(f"  {token}.{fingerprint.upper()}\n") == (token, fingerprint)


@pytest.mark.parametrize("code", [
    "", "garbage", "." + "a" * 64, "short." + "a" * 64, new_token() + "." + "g" * 64,
    new_token() + "." + "a" * 63, new_token() + ".", "to ken with spaces." + "a" * 64,
])
def test_parse_join_code_rejects_garbage(code):
    with pytest.raises(ConfigError) as info:
        parse_join_code(code)
    assert "\n" not in info.value.message
    assert "--join" in info.value.fix and "--master-bind" in info.value.fix


def test_worker_checks_its_secrets():
    with pytest.raises(ConfigError):
        WorkerTunnel("127.0.0.1", 1, new_token(), "not-hex")
    with pytest.raises(ConfigError):
        WorkerTunnel("127.0.0.1", 1, "short", "a" * 64)
    colons = ":".join(["AB"] * 32)
    assert WorkerTunnel("127.0.0.1", 1, new_token(), colons)._fingerprint == "ab" * 32


@pytest.mark.parametrize(("host", "expected"), [
    ("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("[::1]", True),
    ("localhost", True), ("LOCALHOST", True), ("0.0.0.0", False), ("10.0.0.5", False),
    ("::", False), ("example.com", False), ("", False),
])
def test_is_loopback(host, expected):
    assert is_loopback(host) is expected


# --- binding, files, closing -------------------------------------------------------------------


def test_port_in_use_is_a_config_error(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as holder:
        port = holder.getsockname()[1]
        master = MasterTunnel("127.0.0.1", port, 1, tmp_path, new_token(), log=Log())
        with pytest.raises(ConfigError) as info:
            master.start()
    assert info.value.message == f"port {port} on 127.0.0.1 is in use"
    assert info.value.fix == "give another --master-bind HOST:PORT"
    master.close()
    assert not tunnel_threads()


def test_certificate_files_and_fingerprint(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    master = MasterTunnel("127.0.0.1", 0, 1, tmp_path / "t", new_token(), log=Log())
    key, crt = tmp_path / "t" / "tunnel.key", tmp_path / "t" / "tunnel.crt"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert "PRIVATE KEY" in key.read_text()
    cert = x509.load_pem_x509_certificate(crt.read_bytes())
    der = cert.public_bytes(serialization.Encoding.DER)
    assert master.fingerprint == hashlib.sha256(der).hexdigest()
    assert "pooler-lab locust master" in cert.subject.rfc4514_string()


def test_close_ends_relays_threads_and_listeners(tunnels, echo):
    master, worker, mlog, wlog = tunnels()
    live = socket.create_connection(("127.0.0.1", worker.port), timeout=10)
    live.sendall(b"ping\n")
    assert live.recv(16) == b"ping\n"
    assert {"lab-tunnel-master-accept", "lab-tunnel-master-conn", "lab-tunnel-worker-accept",
            "lab-tunnel-worker-conn"} <= set(tunnel_threads())
    started = time.monotonic()
    worker.close()
    master.close()
    assert time.monotonic() - started < 3
    assert not tunnel_threads()
    assert live.recv(16) == b""  # the relayed connection was closed
    live.close()
    for port in (master.port, worker.port):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2)


def test_close_interrupts_a_connection_that_never_sends_its_token(tunnels):
    master, worker, mlog, wlog = tunnels()
    silent = socket.create_connection(("127.0.0.1", master.port), timeout=10)
    assert wait_for(lambda: "lab-tunnel-master-conn" in tunnel_threads())
    started = time.monotonic()
    master.close()
    assert time.monotonic() - started < 3
    assert "lab-tunnel-master-conn" not in tunnel_threads()
    silent.close()


# --- a real ZeroMQ conversation ------------------------------------------------------------------


def test_zeromq_router_dealer_through_the_tunnel(tmp_path):
    zmq = pytest.importorskip("zmq")
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    dealer = context.socket(zmq.DEALER)
    for sock in (router, dealer):
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, 10_000)
        sock.setsockopt(zmq.SNDTIMEO, 10_000)
    token, log = new_token(), Log()
    try:
        port = router.bind_to_random_port("tcp://127.0.0.1")
        with MasterTunnel("127.0.0.1", 0, port, tmp_path, token, log=log) as master, \
                WorkerTunnel("127.0.0.1", master.port, token, master.fingerprint,
                             log=log) as worker:
            dealer.setsockopt(zmq.IDENTITY, b"worker-1")
            dealer.connect(f"tcp://127.0.0.1:{worker.port}")
            for i in range(5):
                dealer.send_multipart([b"client_ready", str(i).encode(), os.urandom(1000)])
                identity, kind, number, blob = router.recv_multipart()
                assert (identity, kind, number, len(blob)) == (b"worker-1", b"client_ready",
                                                               str(i).encode(), 1000)
                router.send_multipart([identity, b"spawn", number, blob[::-1]])
                assert dealer.recv_multipart() == [b"spawn", number, blob[::-1]]
            assert master.connections_refused == 0 and not log
    finally:
        dealer.close(0)
        router.close(0)
        context.term()
    assert wait_for(lambda: not tunnel_threads(), 3)
