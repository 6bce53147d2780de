"""compose/lab-relay, the TCP relay that adds network round trips, against a local echo server.

No Docker: the relay runs as a subprocess of this interpreter on 127.0.0.1's free ports. Timing
assertions use medians and generous bounds (a noisy 2-core machine).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

RELAY = Path(__file__).resolve().parent.parent / "compose" / "lab-relay"
PING = b"ping-0123456789\n"


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


# --- the far end: an echo server that answers an EOF with b"EOF:<bytes received>" ----------


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.received = 0

    def data_received(self, data):
        self.received += len(data)
        self.transport.write(data)

    def eof_received(self):
        self.transport.write(b"EOF:%d" % self.received)
        self.transport.close()
        return True

    def pause_writing(self):
        self.transport.pause_reading()

    def resume_writing(self):
        self.transport.resume_reading()


@pytest.fixture(scope="module")
def echo_port():
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder = {}

    async def start():
        server = await loop.create_server(Echo, "127.0.0.1", 0, backlog=1024)
        holder["port"] = server.sockets[0].getsockname()[1]
        ready.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(start()),
                                              loop.run_forever()), daemon=True)
    thread.start()
    assert ready.wait(5)
    yield holder["port"]
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


# --- the relay -------------------------------------------------------------------------------


class Relay:
    def __init__(self, routes: list[dict], tmp: Path) -> None:
        self.config = tmp / "relay.json"
        self.config.write_text(json.dumps({"routes": routes}))
        self.stderr_path = tmp / "relay.stderr"
        self.ports = {r["name"]: int(r["listen"].rsplit(":", 1)[1]) for r in routes}
        with open(self.stderr_path, "wb") as stderr:
            self.proc = subprocess.Popen([sys.executable, str(RELAY), str(self.config)],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=stderr)
        deadline = time.monotonic() + 10
        while self.stderr().count(" rtt ") < len(routes):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"relay did not start:\n{self.stderr()}")
            time.sleep(0.02)

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def connect(self, name: str, timeout: float = 10) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.ports[name]), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock


ROUTES = {"rtt40": 40.0, "rtt0": 0.0, "rtt20": 20.0}


@pytest.fixture(scope="module")
def relay(echo_port, tmp_path_factory):
    ports = free_ports(len(ROUTES) + 2)
    routes = [{"name": name, "listen": f"127.0.0.1:{port}", "target": f"127.0.0.1:{echo_port}",
               "rtt_ms": rtt} for (name, rtt), port in zip(ROUTES.items(), ports, strict=False)]
    # Nothing listens on the last port: a dead target.
    routes.append({"name": "down", "listen": f"127.0.0.1:{ports[-2]}",
                   "target": f"127.0.0.1:{ports[-1]}", "rtt_ms": 20})
    relay = Relay(routes, tmp_path_factory.mktemp("relay"))
    try:
        yield relay
    finally:
        relay.stop()


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise AssertionError(f"connection closed after {len(data)} of {size} bytes")
        data += chunk
    return bytes(data)


def recv_all(sock: socket.socket) -> bytes:
    data = bytearray()
    while chunk := sock.recv(1 << 20):
        data += chunk
    return bytes(data)


def ping(sock: socket.socket) -> float:
    start = time.perf_counter()
    sock.sendall(PING)
    assert recv_exactly(sock, len(PING)) == PING
    return time.perf_counter() - start


def median_ping_ms(relay: Relay, name: str, count: int = 15) -> float:
    with relay.connect(name) as sock:
        ping(sock)  # the first one also pays for the emulated handshake
        return statistics.median(ping(sock) for _ in range(count)) * 1000


# --- tests -----------------------------------------------------------------------------------


def test_start_lines(relay, echo_port):
    lines = relay.stderr().splitlines()
    port = relay.ports["rtt40"]
    assert f"lab-relay: rtt40 127.0.0.1:{port} -> 127.0.0.1:{echo_port} rtt 40.0 ms" in lines
    assert any(line.startswith("lab-relay: rtt0 ") and line.endswith(" rtt 0.0 ms")
               for line in lines)


def test_round_trip_is_the_configured_rtt(relay):
    assert 36 <= median_ping_ms(relay, "rtt40") <= 44


def test_round_trip_without_delay_is_fast(relay):
    assert median_ping_ms(relay, "rtt0", count=50) < 2


def test_new_connection_pays_the_handshake(relay):
    """connect + request + response: one round trip for TCP's handshake, one for the request."""
    times = []
    for _ in range(5):
        start = time.perf_counter()
        with relay.connect("rtt40") as sock:
            sock.sendall(PING)
            assert recv_exactly(sock, len(PING)) == PING
        times.append((time.perf_counter() - start) * 1000)
    assert 1.8 * 40 <= statistics.median(times) <= 2.6 * 40


def test_pipelined_messages_stay_in_order_and_take_one_round_trip(relay):
    count = 2000
    messages = [b"%06d\n" % i for i in range(count)]
    with relay.connect("rtt40") as sock:
        ping(sock)
        start = time.perf_counter()
        for message in messages:  # one send each: 2,000 separate chunks
            sock.send(message)
        data = recv_exactly(sock, sum(map(len, messages)))
        elapsed = time.perf_counter() - start
    assert data.splitlines(keepends=True) == messages
    # One round trip plus the time to send them, not 2,000 round trips (80 s).
    assert 0.036 <= elapsed < 0.5


def test_large_transfer_arrives_intact(relay):
    payload = os.urandom(1 << 20) * 20  # 20 MiB
    with relay.connect("rtt20", timeout=30) as sock:
        def send():
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send)
        sender.start()
        try:
            data = recv_all(sock)
        finally:
            sender.join(30)
    trailer = b"EOF:%d" % len(payload)
    assert data.endswith(trailer)
    assert hashlib.sha256(data[:-len(trailer)]).digest() == hashlib.sha256(payload).digest()


def test_half_close(relay):
    """The client stops sending; the server sees EOF and can still answer."""
    with relay.connect("rtt20") as sock:
        sock.sendall(b"hello")
        sock.shutdown(socket.SHUT_WR)
        assert recv_all(sock) == b"hello" + b"EOF:5"


def test_half_close_without_delay(relay):
    with relay.connect("rtt0") as sock:
        sock.sendall(b"hello")
        sock.shutdown(socket.SHUT_WR)
        assert recv_all(sock) == b"hello" + b"EOF:5"


def test_dead_target_closes_the_client_promptly(relay):
    for _ in range(3):
        start = time.perf_counter()
        with relay.connect("down", timeout=5) as sock:
            try:
                sock.sendall(PING)
                assert sock.recv(100) == b""
            except (ConnectionResetError, BrokenPipeError):
                pass
        assert time.perf_counter() - start < 1
    # Logged, but at most one line a second per route.
    deadline = time.monotonic() + 2
    while "down: cannot connect" not in relay.stderr() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert relay.stderr().count("down: cannot connect to 127.0.0.1:") == 1


def test_many_concurrent_connections(relay):
    port = relay.ports["rtt20"]

    async def one(i: int) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        message = b"%08d\n" % i
        writer.write(message)
        answer = await reader.readexactly(len(message))
        writer.close()
        await writer.wait_closed()
        return answer == message

    async def main():
        return await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(200))), 20)

    assert all(asyncio.run(main()))


def run_relay(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(RELAY), *args], capture_output=True, text=True,
                          timeout=20, stdin=subprocess.DEVNULL)


def test_check(relay, tmp_path):
    ok = run_relay("--check", str(relay.config))
    assert (ok.returncode, ok.stderr) == (0, "")
    port = free_ports(1)[0]
    config = tmp_path / "closed.json"
    config.write_text(json.dumps({"routes": [
        {"name": "nobody", "listen": f"127.0.0.1:{port}", "target": "db:5432", "rtt_ms": 1}]}))
    failed = run_relay("--check", str(config))
    assert failed.returncode == 1
    assert len(failed.stderr.splitlines()) == 1
    assert f"nobody 127.0.0.1:{port}" in failed.stderr


@pytest.mark.parametrize("content", [
    None,
    "{not json",
    '{"routes": []}',
    '{"routes": [{"name": "x", "listen": "127.0.0.1:1", "target": "db:5432", "rtt_ms": -1}]}',
    '{"routes": [{"name": "x", "listen": "nowhere", "target": "db:5432", "rtt_ms": 1}]}',
    '{"routes": [{"name": "x", "listen": "127.0.0.1:1", "target": "db:0", "rtt_ms": 1}]}',
    '{"routes": [{"listen": "127.0.0.1:1", "target": "db:5432", "rtt_ms": 1}]}',
])
@pytest.mark.parametrize("check", [False, True])
def test_bad_config(tmp_path, content, check):
    config = tmp_path / "relay.json"
    if content is not None:
        config.write_text(content)
    proc = run_relay(*(["--check"] if check else []), str(config))
    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 1
    assert proc.stderr.startswith("lab-relay: bad config: ")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_exits_promptly(echo_port, tmp_path, sig):
    port = free_ports(1)[0]
    relay = Relay([{"name": "r", "listen": f"127.0.0.1:{port}",
                    "target": f"127.0.0.1:{echo_port}", "rtt_ms": 5}], tmp_path)
    try:
        with relay.connect("r") as sock:  # an open connection does not hold the exit up
            ping(sock)
            start = time.monotonic()
            relay.proc.send_signal(sig)
            assert relay.proc.wait(5) == 0
            assert time.monotonic() - start < 1
    finally:
        relay.stop()


def test_relay_logged_nothing_unexpected(relay):
    """Run last on the shared relay: start lines and the dead target's one line, no tracebacks."""
    lines = relay.stderr().splitlines()
    assert len(lines) == len(relay.ports) + 1, "\n".join(lines)
    assert relay.proc.poll() is None
