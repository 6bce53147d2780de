"""TLS material, network settings and their rendering: pure, no Docker."""

import json
import ssl
import stat

import pytest

from lab import tls
from lab.classify import classify
from lab.config import NETWORKS, load_config
from lab.connect import EndpointInfo
from lab.errors import ConfigError
from lab.render import POOLER_RELAY_PORT, render
from lab.report import network_text
from lab.state import Secrets
from tests.test_render import ini

SECRETS = Secrets("pw-postgres", "pw-bouncer", "pw-admin", "00" * 16)
NAMES = tls.host_names("127.0.0.2", "127.0.0.3")


@pytest.fixture(scope="module")
def material(tmp_path_factory):
    return tls.ensure(tmp_path_factory.mktemp("tls") / "tls", NAMES)


def test_certificates_are_private_stable_and_remade_only_for_new_names(tmp_path):
    directory = tmp_path / "tls"
    first = tls.ensure(directory, NAMES)
    for name in ("ca.key", "db.key", "pooler.key"):
        assert stat.S_IMODE((directory / name).stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert "PRIVATE KEY" not in repr(first)
    again = tls.ensure(directory, NAMES)
    assert again.ca_cert == first.ca_cert and again.certs == first.certs
    moved = tls.ensure(directory, tls.host_names("127.0.0.4", "127.0.0.5"))
    assert moved.ca_cert == first.ca_cert  # the CA stays: users keep their downloaded copy
    assert moved.certs["db"][0] != first.certs["db"][0]
    assert tls.remove(directory) and not directory.exists()


def test_server_certificates_verify_against_the_ca_for_every_name(tmp_path, material):
    ca = tmp_path / "ca.crt"
    ca.write_text(material.ca_cert)
    for host, names in NAMES.items():
        cert, key = material.certs[host]
        (tmp_path / "s.crt").write_text(cert)
        (tmp_path / "s.key").write_text(key)
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.load_cert_chain(tmp_path / "s.crt", tmp_path / "s.key")
        decoded = ssl._ssl._test_decode_cert(str(tmp_path / "s.crt"))
        alt = {value for _, value in decoded["subjectAltName"]}
        assert set(names) <= alt, host
        assert "pooler" in alt if host == "pooler" else "db" in alt


def test_copy_ca_writes_the_public_certificate_only(tmp_path, material):
    written = tls.copy_ca(material.ca_path.parent, tmp_path / "out.crt")
    assert written == tmp_path / "out.crt"
    text = written.read_text()
    assert text == material.ca_cert and "PRIVATE" not in text
    into_dir = tls.copy_ca(material.ca_path.parent, tmp_path)
    assert into_dir == tmp_path / "pooler-lab-ca.crt" and into_dir.read_text() == text


def test_render_serves_tls_everywhere_and_verifies_postgres(material):
    cfg = load_config("t")
    files = render(cfg, SECRETS, "img", "/c", material)
    pgconf = files["db/postgresql.conf"]
    assert "ssl = on" in pgconf and "ssl_key_file = '/etc/lab/server.key'" in pgconf
    assert "\nhost " in files["db/pg_hba.conf"] and "hostssl" not in files["db/pg_hba.conf"]
    for path in ("dedicated/pgbouncer-dedicated.ini", "pooler/pgbouncer-session.ini",
                 "pooler/pgbouncer-transaction.ini"):
        section = ini(files[path])["pgbouncer"]
        assert section["client_tls_sslmode"] == "prefer"
        assert section["server_tls_sslmode"] == "verify-full"
        assert section["server_tls_ca_file"] == "/etc/lab/ca.crt"
    assert files["dedicated/server.crt"] == material.certs["db"][0]  # co-located: db's name
    assert files["pooler/server.crt"] == material.certs["pooler"][0]
    assert not any(path.endswith("relay.json") for path in files)  # local: no relays


def test_ssl_enforce_refuses_plaintext_in_every_server():
    cfg = load_config("t", overrides={"ssl_enforce": True})
    files = render(cfg, SECRETS, "img", "/c", tls.TlsMaterial("CA", None, {
        "db": ("C", "K"), "pooler": ("C", "K")}))
    hba = [ln for ln in files["db/pg_hba.conf"].splitlines() if ln and not ln.startswith("#")]
    assert [ln.split()[0] for ln in hba] == ["local", "hostssl", "hostssl"]
    for path in ("dedicated/pgbouncer-dedicated.ini", "pooler/pgbouncer-transaction.ini"):
        assert ini(files[path])["pgbouncer"]["client_tls_sslmode"] == "require"


def test_network_presets_and_explicit_round_trips():
    assert load_config("t").network == "local"
    same = load_config("t", overrides={"network": "same-region"})
    assert same.pooler_db_rtt_ms == NETWORKS["same-region"].pooler_db_rtt_ms > 0
    assert same.client_relays and same.pooler_relay
    custom = load_config("t", {"network": "cross-region"}, {"pooler_db_rtt_ms": 5})
    assert custom.network == "custom" and custom.client_db_rtt_ms == 70
    assert custom.endpoint_rtt_ms("transaction") == 75 and custom.endpoint_rtt_ms("dedicated") == 70
    only_pooler = load_config("t", overrides={"pooler_db_rtt_ms": 2})
    assert only_pooler.pooler_relay and not only_pooler.client_relays
    always = load_config("t", overrides={"relay": "always"})
    assert always.client_relays and always.pooler_relay and always.network == "local"
    for bad in ({"network": "mars"}, {"client_db_rtt_ms": -1}, {"pooler_db_rtt_ms": "far"},
                {"relay": "sometimes"}, {"ssl_enforce": "maybe"}):
        with pytest.raises(ConfigError) as info:
            load_config("t", overrides=bad)
        assert info.value.fix


def test_relays_render_the_configured_round_trips():
    cfg = load_config("t", overrides={"network": "same-region", "pooler_db_rtt_ms": 3})
    files = render(cfg, SECRETS, "img", "/c")
    net_db = json.loads(files["net-db/relay.json"])["routes"]
    assert [(r["name"], r["target"], r["rtt_ms"]) for r in net_db] == [
        ("direct", "db:5432", 1.0), ("dedicated", "db:6543", 1.0)]
    net_pooler = json.loads(files["net-pooler/relay.json"])["routes"]
    assert {r["target"] for r in net_pooler} == {"pooler:5432", "pooler:6543"}
    inner = json.loads(files["pooler/relay.json"])["routes"]
    assert inner == [{"name": "pooler-db", "listen": f"127.0.0.1:{POOLER_RELAY_PORT}",
                      "target": "db:5432", "rtt_ms": 3.0}]
    # the shared pooler reaches Postgres (and its tenant lookup) through its relay
    databases = ini(files["pooler/pgbouncer-transaction.ini"])["databases"]
    assert all(f"port={POOLER_RELAY_PORT}" in v for v in databases.values())
    # the dedicated pooler stays on the db host's loopback: no hop
    assert "host=127.0.0.1 port=5432" in files["dedicated/pgbouncer-dedicated.ini"]


def test_uris_ask_for_verify_full_and_keep_the_name_for_the_bench_address():
    ep = EndpointInfo("direct", "Direct", "none", "none", "x", "postgres", "127.0.0.2", 5432,
                      "172.18.0.5", 5432, sslrootcert="/s/tls/ca.crt")
    assert ep.uri().endswith("@127.0.0.2:5432/postgres?sslmode=verify-full"
                             "&sslrootcert=/s/tls/ca.crt")
    bench = ep.uri("pw", bench=True)
    assert "@127.0.0.2:5432/" in bench and "hostaddr=172.18.0.5" in bench
    assert "sslmode=disable" in ep.uri(sslmode="disable")
    assert "sslrootcert" not in ep.uri(sslmode="disable")
    plain = EndpointInfo("direct", "Direct", "none", "none", "x", "postgres", "h", 1, "h", 1)
    assert plain.uri().endswith("?sslmode=prefer")


@pytest.mark.parametrize("text", [
    'connection to server at "127.0.0.3", port 6543 failed: FATAL:  SSL required',
    'connection to server at "127.0.0.2", port 5432 failed: FATAL:  no pg_hba.conf entry for '
    'host "172.18.0.1", user "postgres", database "postgres", no encryption',
    'connection to server at "127.0.0.2", port 5432 failed: server certificate for "db" '
    '(and 3 other names) does not match host name "wrong.example"',
    'connection to server at "127.0.0.2", port 5432 failed: SSL error: certificate verify failed',
])
def test_tls_refusals_are_their_own_class(text):
    assert classify(None, text)[0] == "tls"


def test_report_states_the_distance_configured_and_measured():
    manifest = {"network": {"preset": "same-region", "configured_ms": {
        "client-db": 1.0, "client-pooler": 1.0, "pooler-db": 1.0}, "measured_ms": {
        "client-db": 1.12, "client-pooler": 1.1, "pooler-db": 0.98}},
        "tls": {"sslmode": "verify-full", "ssl_enforce": False}}
    text = network_text(manifest)
    assert text.startswith("same-region, round trips configured client-db 1.00 ms")
    assert "measured client-db 1.12 ms" in text and "sslmode=verify-full" in text
    # the floor (the distance alone) beside the median, where it differs
    manifest["network"]["min_ms"] = {"client-db": 1.01, "client-pooler": 1.1, "pooler-db": 0.98}
    text = network_text(manifest)
    assert "measured client-db 1.12 ms (floor 1.01 ms), client-pooler 1.10 ms, pooler-db " \
        "0.98 ms." in text, text
    local = {"network": {"preset": "local", "configured_ms": {}, "measured_ms": {}}}
    assert network_text(local).startswith("local (no round trip added")
    assert network_text({}) is None
