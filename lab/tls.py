"""Each lab's own certificate authority and the server certificates of its two hosts.

Supabase serves every endpoint over TLS and lets users download the CA certificate so that
clients can use ``sslmode=verify-full``. The lab does the same with a CA made for it at the
first ``lab up``::

    <state>/<name>/tls/ca.crt          the CA certificate (0644): what users download
    <state>/<name>/tls/ca.key          the CA's private key (0600), never leaves this directory
    <state>/<name>/tls/<host>.crt      server certificate of the db / pooler host (0644)
    <state>/<name>/tls/<host>.key      its private key (0600); copied into the host's config
    <state>/<name>/tls/names.json      the names each certificate was made for

The files are stable across ``lab up`` / ``lab down``: a server certificate is made again only
when the names it must carry change (other addresses), the CA only when it is missing.
``lab down --volumes`` removes the directory. Keys are RSA 2048, as Supabase's certificates
are, so a handshake costs what it costs there; nothing here prints a key.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from lab.errors import StackError
from lab.state import atomic_write

CA_NAME = "pooler-lab CA"
KEY_BITS = 2048
VALID_DAYS = 3650


@dataclass(frozen=True)
class TlsMaterial:
    """PEM texts of one lab's CA certificate and its hosts' certificates and keys."""

    ca_cert: str
    ca_path: Path
    certs: Mapping[str, tuple[str, str]]  # host -> (certificate PEM, key PEM)

    def __repr__(self) -> str:
        return f"TlsMaterial(ca={self.ca_path}, hosts={sorted(self.certs)})"


def host_names(db_address: str, pooler_address: str) -> dict[str, list[str]]:
    """What each host's certificate must be valid for: the names and addresses clients and
    poolers use. 127.0.0.1 and localhost on both: the dedicated pooler reaches Postgres over
    the db host's loopback, the shared pooler its inner pool and its relay over its own."""
    common = ["localhost", "127.0.0.1"]
    return {
        "db": _unique(["db", db_address, *common]),
        "pooler": _unique(["pooler", pooler_address, *common]),
    }


def ensure(directory: Path, names: Mapping[str, Sequence[str]]) -> TlsMaterial:
    """Load the lab's CA and certificates, making whatever is missing or out of date."""
    try:
        return _ensure(directory, names)
    except OSError as exc:
        raise StackError(f"cannot write the lab's certificates in {directory} ({exc.strerror})",
                         fix=f"check the permissions of {directory.parent}") from None


def _ensure(directory: Path, names: Mapping[str, Sequence[str]]) -> TlsMaterial:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    ca_crt, ca_key = directory / "ca.crt", directory / "ca.key"
    made_ca = False
    if not (ca_crt.exists() and ca_key.exists()):
        cert, key = _make_ca()
        atomic_write(ca_key, key, 0o600)
        atomic_write(ca_crt, cert, 0o644)
        made_ca = True
    _tighten(ca_key)
    record_path = directory / "names.json"
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        record = {}
    ca_cert_pem = ca_crt.read_text()
    certs: dict[str, tuple[str, str]] = {}
    for host, wanted in names.items():
        crt, key = directory / f"{host}.crt", directory / f"{host}.key"
        stale = made_ca or record.get(host) != list(wanted)
        if stale or not (crt.exists() and key.exists()):
            cert_pem, key_pem = _make_server(host, list(wanted), ca_cert_pem, ca_key.read_text())
            atomic_write(key, key_pem, 0o600)
            atomic_write(crt, cert_pem, 0o644)
            record[host] = list(wanted)
        _tighten(key)
        certs[host] = (crt.read_text(), key.read_text())
    atomic_write(record_path, json.dumps(record, indent=2) + "\n", 0o644)
    return TlsMaterial(ca_cert=ca_cert_pem, ca_path=ca_crt, certs=certs)


def remove(directory: Path) -> bool:
    if directory.is_dir():
        shutil.rmtree(directory)
        return True
    return False


def copy_ca(material_dir: Path, destination: Path) -> Path:
    """Write the CA certificate where the user wants it (like Supabase's download)."""
    source = material_dir / "ca.crt"
    if not source.exists():
        raise StackError("this lab has no certificate yet", fix="lab up")
    if destination.is_dir():
        destination = destination / "pooler-lab-ca.crt"
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, destination)
        os.chmod(destination, 0o644)
    except OSError as exc:
        raise StackError(f"cannot write {destination} ({exc.strerror})",
                         fix="choose a writable path, e.g. --ssl-cert ./lab-ca.crt") from None
    return destination


# -- making certificates -----------------------------------------------------------------------


def _now() -> dt.datetime:
    # A little in the past: a container's clock may lag the host's by a moment.
    return dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)


def self_signed(key, common_name: str, days: int):
    """A certificate builder for ``key``, issued by itself, valid from now for ``days``."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    return (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now())
            .not_valid_after(_now() + dt.timedelta(days=days)))


def _make_ca() -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    cert = (
        self_signed(key, CA_NAME, VALID_DAYS)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return _cert_pem(cert), _key_pem(key)


def _make_server(host: str, names: list[str], ca_cert_pem: str,
                 ca_key_pem: str) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem.encode())
    ca_key = serialization.load_pem_private_key(ca_key_pem.encode(), password=None)
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    alt: list[x509.GeneralName] = []
    for item in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(item)))
        except ValueError:
            alt.append(x509.DNSName(item))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now())
        .not_valid_after(_now() + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return _cert_pem(cert), _key_pem(key)


def _cert_pem(cert) -> str:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _key_pem(key) -> str:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _tighten(path: Path) -> None:
    if path.exists() and path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(i for i in items if i))
