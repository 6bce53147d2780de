"""A TLS tunnel with a worker token in front of Locust's master port.

Locust's master and workers talk ZeroMQ over plain TCP: no encryption, no authentication.
That is fine on loopback; beyond it anyone who reaches the port could read the traffic or join
as a worker. So Locust's master binds 127.0.0.1 only and :class:`MasterTunnel` listens on the
public address with TLS (a self-signed EC certificate made for it, key 0600), reads the line
``POOLER-LAB-WORKER <token>`` from each new connection within 5 s and answers ``OK`` (then
relays bytes to the master's loopback port), ``WAIT`` (Locust's master is not listening yet,
as between two segments) or ``DENIED``, and closes the connection. On the worker's machine
:class:`WorkerTunnel` listens on a loopback port for Locust's worker and opens one TLS
connection to the master per local connection (Locust's worker makes several over its life).

Two secrets travel in the *join code* (``<token>.<sha256 fingerprint>``): the token
authenticates workers to the master, the pinned certificate fingerprint authenticates the
master to workers (checked before the token is sent, so a stranger never sees it). Nothing
secret is logged: refusals name the peer's address and the reason only.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import ipaddress
import re
import secrets
import selectors
import socket
import ssl
import threading
import time
from pathlib import Path

from lab.errors import ConfigError, RunError

PREFIX, OK, WAIT, DENIED = b"POOLER-LAB-WORKER ", b"OK\n", b"WAIT\n", b"DENIED\n"
MAX_LINE, TIMEOUT, CHUNK, LIMIT = 200, 5.0, 65536, 1 << 20  # LIMIT: bytes buffered a direction
FIX_JOIN = "copy the --join code that `lab run ... --master-bind` printed"
_AGAIN = (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError)
_TOKEN, _HEX64 = re.compile(r"[A-Za-z0-9_-]{16,200}"), re.compile(r"[0-9a-f]{64}")


def new_token() -> str:
    return secrets.token_urlsafe(24)


def join_code(token: str, fingerprint: str) -> str:
    return f"{token}.{fingerprint}"


def parse_join_code(code: str) -> tuple[str, str]:
    token, _, fingerprint = code.strip().rpartition(".")
    fingerprint = fingerprint.lower()
    if not (_TOKEN.fullmatch(token) and _HEX64.fullmatch(fingerprint)):
        raise ConfigError("the join code is malformed (expected <token>.<64 hex digits>)",
                          fix=FIX_JOIN)
    return token, fingerprint


def is_loopback(host: str) -> bool:
    if host.strip().rstrip(".").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def _addr(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Tunnel:
    """Accept loop, one thread per connection, bounded close; subclasses serve a connection."""

    role = "tunnel"

    def __init__(self, log):
        self.log, self.port = log, 0
        self._stop, self._lock = threading.Event(), threading.Lock()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._threads: set[threading.Thread] = set()
        self._socks: set[socket.socket] = set()

    def _listen(self, host: str, port: int) -> None:
        if self._listener is not None:
            return
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.create_server((host.strip("[]"), port), family=family)
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True,
                                          name=f"lab-tunnel-{self.role}-accept")
        self._acceptor.start()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                conn, peer = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            if self._stop.is_set():
                conn.close()
                break
            thread = threading.Thread(target=self._run, args=(conn, peer), daemon=True,
                                      name=f"lab-tunnel-{self.role}-conn")
            with self._lock:
                self._threads.add(thread)
            thread.start()
        self._listener.close()

    def _run(self, conn: socket.socket, peer) -> None:
        held = [conn]
        try:
            self._track(conn)
            self._serve(conn, _addr(peer[0], peer[1]), held)
        except OSError:
            pass  # a reset, or close(): the connection just ends
        except Exception as exc:  # a bug here must not print a traceback into the live view
            self.log(f"locust tunnel: a connection from {_addr(*peer[:2])} failed ({exc!r})")
        finally:
            for sock in held:
                self._untrack(sock)
                sock.close()
            with self._lock:
                self._threads.discard(threading.current_thread())

    def _track(self, sock: socket.socket) -> socket.socket:
        with self._lock:
            if self._stop.is_set():
                raise OSError("tunnel closed")
            self._socks.add(sock)
        return sock

    def _untrack(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.discard(sock)

    def close(self) -> None:
        """Stop accepting, end every relayed connection, wait for the threads (about 2 s)."""
        self._stop.set()
        deadline = time.monotonic() + 2.0
        if self._acceptor is not None:
            self._acceptor.join(timeout=1.0)
        with self._lock:
            for sock in self._socks:  # wakes blocked reads; base-class shutdown keeps TLS intact
                with contextlib.suppress(OSError):
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def _relay(self, a: socket.socket, b: socket.socket, first: bytes = b"") -> None:
        """Copy bytes both ways until either side closes (then deliver what it sent, and end)."""
        out = {a: bytearray(), b: bytearray(first)}  # bytes waiting to be written to the key
        peer, reading = {a: b, b: a}, {a: True, b: True}
        with selectors.DefaultSelector() as sel:
            for sock in (a, b):
                sock.setblocking(False)
            while not self._stop.is_set():
                if any(not reading[s] and not out[peer[s]] for s in (a, b)):
                    return
                pending = []
                for s in (a, b):
                    want = selectors.EVENT_READ if reading[s] and len(out[peer[s]]) < LIMIT else 0
                    if want and isinstance(s, ssl.SSLSocket) and s.pending():
                        pending.append(s)
                    _want(sel, s, want | (selectors.EVENT_WRITE if out[s] else 0))
                events = sel.select(0 if pending else 0.2)
                ready_read = {k.fileobj for k, ev in events if ev & selectors.EVENT_READ}
                for s in (a, b):
                    if s in ready_read or s in pending:
                        try:
                            data = s.recv(CHUNK)
                        except _AGAIN:
                            data = None
                        if data == b"":
                            reading[s] = False
                        elif data:
                            out[peer[s]] += data
                    if out[s]:
                        with contextlib.suppress(*_AGAIN):
                            del out[s][:s.send(out[s][:CHUNK])]


def _want(sel: selectors.BaseSelector, sock: socket.socket, events: int) -> None:
    key = sel.get_map().get(sock)
    if not events:
        if key:
            sel.unregister(sock)
    elif not key:
        sel.register(sock, events)
    elif key.events != events:
        sel.modify(sock, events)


class MasterTunnel(_Tunnel):
    """TLS + token on (bind_host, bind_port), relayed to Locust's master on 127.0.0.1."""

    role = "master"

    def __init__(self, bind_host: str, bind_port: int, target_port: int, state_dir: Path,
                 token: str, log=print):
        super().__init__(log)
        if not _TOKEN.fullmatch(token):
            raise ValueError("the worker token must be 16 or more URL-safe characters")
        self.bind_host, self.bind_port, self.target_port = bind_host, bind_port, target_port
        self._expected = PREFIX + token.encode()
        self.connections_refused = 0
        self._logged: set[tuple[str, str]] = set()  # (peer host, reason), or target: log once
        cert, key, self.fingerprint = _certificate(Path(state_dir))
        self._ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        self._ctx.load_cert_chain(cert, key)

    def start(self) -> MasterTunnel:
        host, port = self.bind_host, self.bind_port
        try:
            self._listen(host, port)
        except OSError as exc:
            text = {errno.EADDRINUSE: f"port {port} on {host} is in use",
                    errno.EADDRNOTAVAIL: f"{host} is not an address of this machine",
                    errno.EACCES: f"port {port} on {host} needs privileges"}.get(
                exc.errno or 0, f"cannot listen on {_addr(host, port)} ({exc.strerror or exc})")
            raise ConfigError(text, fix="give another --master-bind HOST:PORT") from None
        return self

    def _once(self, key: tuple[str, str], text: str) -> None:
        with self._lock:
            new = key not in self._logged
            self._logged.add(key)
        if new:  # a refused Locust worker retries every 0.1 s
            self.log(text)

    def _refuse(self, tls: ssl.SSLSocket | None, peer: str, reason: str) -> None:
        if self._stop.is_set():
            return
        if tls is not None:
            with contextlib.suppress(OSError):
                tls.sendall(DENIED)
        with self._lock:
            self.connections_refused += 1
        self._once((peer.rpartition(":")[0], reason),
                   f"locust tunnel: refused a connection from {peer} ({reason}); "
                   "further ones from that host are counted, not logged")

    def _serve(self, conn: socket.socket, peer: str, held: list) -> None:
        deadline = time.monotonic() + TIMEOUT
        conn.settimeout(TIMEOUT)
        tls = self._track(self._ctx.wrap_socket(conn, server_side=True,
                                                do_handshake_on_connect=False))
        held.append(tls)
        try:
            tls.do_handshake()
        except OSError:  # a plain TCP client, a scanner, a timeout (SSLError is an OSError)
            return self._refuse(None, peer, "no TLS handshake")
        buf = b""
        try:
            while b"\n" not in buf and len(buf) <= MAX_LINE:
                tls.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = tls.recv(4096)
                if not chunk:
                    break
                buf += chunk
        except TimeoutError:
            return self._refuse(tls, peer, f"no worker token within {TIMEOUT:.0f} s")
        except OSError:
            return self._refuse(None, peer, "reset before sending a worker token")
        line, newline, rest = buf.partition(b"\n")
        if not newline or len(line) > MAX_LINE or not hmac.compare_digest(line, self._expected):
            return self._refuse(tls, peer, "wrong or missing worker token")
        tls.settimeout(TIMEOUT)
        try:
            target = socket.create_connection(("127.0.0.1", self.target_port), timeout=TIMEOUT)
        except OSError:  # between segments, before Locust's master binds: the worker retries
            self._once(("", "target"), "locust tunnel: a worker connected while Locust's master "
                       f"was not listening on 127.0.0.1:{self.target_port}; it retries")
            return tls.sendall(WAIT)
        held.append(self._track(target))
        tls.sendall(OK)
        self._relay(tls, target, rest)


class WorkerTunnel(_Tunnel):
    """Loopback port for Locust's worker; each connection goes to the master over TLS.

    ``last_error`` is set only by what retrying cannot fix (the certificate does not match,
    the master refused the token, no TLS on that port); ``last_transient`` by what may pass
    (connection refused, no answer, Locust's master not listening yet between segments).
    Both are cleared when a connection gets through; each new text is logged once."""

    role = "worker"

    def __init__(self, master_host: str, master_port: int, token: str, fingerprint: str,
                 log=print):
        super().__init__(log)
        token, fingerprint = parse_join_code(join_code(token, fingerprint.replace(":", "")))
        self.master_host, self.master_port = master_host, master_port
        self._line, self._fingerprint = PREFIX + token.encode() + b"\n", fingerprint
        self.last_error: str | None = None
        self.last_transient: str | None = None
        self._logged: str | None = None
        self._ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self._ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        self._ctx.check_hostname, self._ctx.verify_mode = False, ssl.CERT_NONE  # pinned below

    def start(self) -> WorkerTunnel:
        try:
            self._listen("127.0.0.1", 0)
        except OSError as exc:
            raise RunError(f"cannot listen on 127.0.0.1 ({exc.strerror or exc})",
                           fix="check the machine's loopback interface") from None
        return self

    def _fail(self, text: str, fatal: bool = False) -> None:
        if fatal:
            self.last_error = text
        else:
            self.last_transient = text
        if text != self._logged:  # Locust's worker reconnects every 0.1 s: log changes only
            self._logged = text
            self.log(f"locust tunnel: {text}")

    def _serve(self, conn: socket.socket, peer: str, held: list) -> None:
        where = _addr(self.master_host, self.master_port)
        try:
            raw = socket.create_connection((self.master_host, self.master_port), timeout=TIMEOUT)
        except ConnectionRefusedError:
            return self._fail(f"connection refused by {where}")
        except TimeoutError:
            return self._fail(f"no answer from {where} within {TIMEOUT:.0f} s")
        except OSError as exc:
            return self._fail(f"cannot reach {where} ({exc.strerror or exc})")
        tls = self._track(self._ctx.wrap_socket(raw, do_handshake_on_connect=False))
        held.append(tls)
        try:
            tls.do_handshake()
        except ssl.SSLError as exc:
            return self._fail(f"no TLS handshake with {where} ({exc.reason or exc})", True)
        except OSError as exc:
            return self._fail(f"the TLS handshake with {where} failed ({exc})")
        seen = hashlib.sha256(tls.getpeercert(binary_form=True) or b"").hexdigest()
        if not hmac.compare_digest(seen, self._fingerprint):
            return self._fail("the master's certificate does not match the join code", True)
        tls.sendall(self._line)
        reply = b""
        with contextlib.suppress(OSError):
            while not reply.endswith(b"\n") and len(reply) < 16 and (chunk := tls.recv(1)):
                reply += chunk
        if reply == DENIED:
            return self._fail(f"the master at {where} refused the token of the join code", True)
        if reply == WAIT:
            return self._fail(f"the master at {where} is up but its Locust master is not "
                              "listening yet")
        if reply != OK:
            return self._fail(f"the master at {where} closed the connection before answering")
        self.last_error = self.last_transient = self._logged = None
        self._relay(conn, tls)


def _certificate(directory: Path) -> tuple[Path, Path, str]:
    """A fresh self-signed EC P-256 certificate (30 days): paths and SHA-256 of its DER."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from lab.state import atomic_write
    from lab.tls import _cert_pem, _key_pem, self_signed

    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        self_signed(key, "pooler-lab locust master", 30)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    crt_path, key_path = directory / "tunnel.crt", directory / "tunnel.key"
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write(key_path, _key_pem(key), 0o600)
        atomic_write(crt_path, _cert_pem(cert), 0o644)
    except OSError as exc:
        raise RunError(f"cannot write the tunnel's certificate in {directory} "
                       f"({exc.strerror or exc})",
                       fix=f"check the permissions of {directory}") from None
    fingerprint = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    return crt_path, key_path, fingerprint
