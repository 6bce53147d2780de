"""TLS as Supabase serves it, and distance between the hosts, on the real stack.

Every endpoint verifies with the lab's CA (psycopg, psql, pgbench, unchanged strings), a wrong
CA or host name is refused as `tls`, ssl_enforce refuses plaintext with the servers' own texts,
and configured round trips are what a client measures (within 10%).
"""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
from pathlib import Path

import psycopg
import pytest

from lab import tls
from lab.classify import classify
from tests.conftest import lab_cli

pytestmark = pytest.mark.stack

ENDPOINTS = ("direct", "session", "transaction", "dedicated")


@pytest.fixture(scope="module")
def plain_lab(lab_factory):
    return lab_factory()


def _uri(lab, endpoint: str) -> str:
    return lab.connect()[endpoint]["uri"]


def _tls_of(conn) -> tuple[bool, str]:
    row = conn.execute("select ssl, version from pg_stat_ssl where pid = pg_backend_pid()",
                       prepare=False).fetchone()
    return row[0], row[1]


def test_verify_full_works_on_every_endpoint_with_psycopg_psql_and_pgbench(plain_lab):
    eps = plain_lab.connect()
    for endpoint in ENDPOINTS:
        uri = eps[endpoint]["uri"]
        assert "sslmode=verify-full" in uri and "sslrootcert=" in uri
        with psycopg.connect(uri, prepare_threshold=None, connect_timeout=10) as conn:
            assert conn.pgconn.ssl_in_use
            # the backend that ran the query: the client's own, or the pooler's server
            # connection, which speaks TLS to Postgres too
            ssl, version = _tls_of(conn)
            assert ssl and version.startswith("TLSv1."), endpoint
        if shutil.which("psql"):
            out = subprocess.run(["psql", uri, "-XAtc", "show ssl"], capture_output=True,
                                 text=True, timeout=30, stdin=subprocess.DEVNULL)
            assert out.returncode == 0 and out.stdout.strip() == "on", out.stderr
    if shutil.which("pgbench"):
        proc = subprocess.run(["pgbench", "-n", "-c", "2", "-t", "5", "-f", "-",
                               eps["transaction"]["uri"]], input="select 1;\n",
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0 and "failed transactions: 0" in proc.stdout, proc.stderr


def test_ssl_cert_writes_the_ca_and_the_strings_point_at_it(plain_lab, tmp_path):
    target = tmp_path / "supabase-like-ca.crt"
    out = plain_lab.cli("connect", "direct", "--show-password", "--ssl-cert",
                        str(target)).stdout.strip()
    assert target.exists() and "PRIVATE" not in target.read_text()
    assert f"sslrootcert={target}" in out
    with psycopg.connect(out, connect_timeout=10) as conn:
        assert conn.pgconn.ssl_in_use
    state = plain_lab.home / plain_lab.name / "tls"
    for key in ("ca.key", "db.key", "pooler.key"):
        assert stat.S_IMODE((state / key).stat().st_mode) == 0o600
    assert "PRIVATE" not in plain_lab.cli("connect").stdout + plain_lab.cli("status").stdout


def test_another_ca_or_a_wrong_host_name_is_refused_as_tls(plain_lab, tmp_path):
    other = tls.ensure(tmp_path / "other", tls.host_names("127.0.0.2", "127.0.0.3"))
    uri = _uri(plain_lab, "transaction")
    base, _, query = uri.partition("?")
    wrong_ca = f"{base}?sslmode=verify-full&sslrootcert={other.ca_path}"
    with pytest.raises(psycopg.OperationalError) as info:
        psycopg.connect(wrong_ca, connect_timeout=10)
    cls, _, message = classify(info.value)
    assert cls == "tls" and "certificate verify failed" in message
    # the right CA, but a name the certificate does not carry (the address unchanged)
    eps = plain_lab.connect()
    host = eps["direct"]["host"]
    with pytest.raises(psycopg.OperationalError) as info:
        psycopg.connect(eps["direct"]["uri"], host="wrong.example", hostaddr=host,
                        connect_timeout=10)
    cls, _, message = classify(info.value)
    assert cls == "tls" and 'does not match host name "wrong.example"' in message
    # without verification a plaintext client still gets in: ssl_enforce is off by default
    with psycopg.connect(f"{base}?sslmode=disable", connect_timeout=10) as conn:
        assert not conn.pgconn.ssl_in_use


def test_supabase_monitoring_queries_show_ssl_per_connection(plain_lab):
    eps = plain_lab.connect()
    with psycopg.connect(eps["direct"]["uri"], application_name="tls-client") as secure, \
            psycopg.connect(eps["direct"]["uri"].replace("sslmode=verify-full",
                                                         "sslmode=disable"),
                            application_name="plain-client") as plain:
        assert secure.pgconn.ssl_in_use and not plain.pgconn.ssl_in_use
        results = json.loads(plain_lab.cli("status", "--sql", "--json").stdout)
    titles = [r["title"] for r in results]
    assert titles == ["Connections by application and user", "All connections"]
    assert "pg_stat_ssl" in results[0]["sql"] and "pg_stat_ssl" in results[1]["sql"]
    by_app = {r["application_name"]: r["ssl_connection"] for r in results[1]["rows"]}
    assert by_app["tls-client"] is True and by_app["plain-client"] is False
    counted = {r["application_name"] for r in results[0]["rows"]}
    assert {"tls-client", "plain-client"} <= counted


def test_tls_experiment_measures_the_handshake_on_every_endpoint(plain_lab):
    data = json.loads(plain_lab.cli("experiment", "run", "tls", "--json",
                                    timeout=300).stdout)
    lanes = {lane["lane"]: lane for lane in data["experiments"][0]["lanes"]}
    assert data["passed"], lanes
    for endpoint in ENDPOINTS:
        assert lanes[endpoint]["observed"] == "TLS connect slower"
        assert "with TLS (verify-full)" in lanes[endpoint]["detail"]


def test_the_ca_survives_down_and_up_and_goes_with_the_volumes(lab_factory):
    lab = lab_factory()
    ca = lab.home / lab.name / "tls" / "ca.crt"
    before = ca.read_text()
    lab.cli("down")
    assert ca.read_text() == before
    lab.cli("up")
    assert ca.read_text() == before
    with psycopg.connect(_uri(lab, "dedicated"), connect_timeout=10) as conn:
        assert conn.pgconn.ssl_in_use
    lab.cli("down", "--volumes")
    assert not ca.parent.exists()


def test_ssl_enforce_refuses_plaintext_on_every_endpoint_with_the_servers_text(lab_factory):
    lab = lab_factory("--ssl-enforce")
    eps = lab.connect()
    texts = {}
    for endpoint in ENDPOINTS:
        uri = eps[endpoint]["uri"]
        with psycopg.connect(uri, prepare_threshold=None, connect_timeout=10) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
        with pytest.raises(psycopg.OperationalError) as info:
            psycopg.connect(uri.replace("sslmode=verify-full", "sslmode=disable"),
                            connect_timeout=10)
        cls, _, texts[endpoint] = classify(info.value)
        assert cls == "tls", texts[endpoint]
    assert "no pg_hba.conf entry for host" in texts["direct"] and \
        "no encryption" in texts["direct"]
    for endpoint in ("session", "transaction", "dedicated"):
        assert texts[endpoint].endswith("SSL required"), texts[endpoint]
    data = json.loads(lab.cli("experiment", "run", "tls", "--json", timeout=300).stdout)
    lanes = {lane["lane"]: lane["observed"] for lane in data["experiments"][0]["lanes"]}
    assert data["passed"] and lanes["direct"] == "plaintext refused (tls)", lanes


@pytest.mark.heavy  # a minute of 20 ms round trips: make test-heavy (.ci/run runs it)
def test_round_trips_are_the_configured_ones_and_the_run_records_them(lab_factory, tmp_path):
    lab = lab_factory("--client-db-rtt-ms", "20", "--client-pooler-rtt-ms", "20",
                      "--pooler-db-rtt-ms", "10")
    status = lab.status()
    services = {c["service"]: c["state"] for c in status["containers"]}
    assert services.get("net-db") == services.get("net-pooler") == "running"
    # the user's strings go through the relays and verify as before
    with psycopg.connect(_uri(lab, "direct"), application_name="far-client") as conn:
        assert conn.pgconn.ssl_in_use
        # Postgres sees the client coming from the network, not from its own host
        assert lab.status()["postgres"]["by_origin"].get("direct", 0) >= 1
    reports = tmp_path / "reports"
    out = lab.cli("run", "serverless-burst", "-e", "direct", "-e", "transaction",
                  "--duration", "3s", "--cooldown", "0s", "--connect-cost",
                  "--reports-dir", str(reports), timeout=300).stdout
    run_dir = Path(out.strip().splitlines()[-1])
    manifest = json.loads((run_dir / "manifest.json").read_text())
    net = manifest["network"]
    assert net["configured_ms"] == {"client-db": 20.0, "client-pooler": 20.0,
                                    "pooler-db": 10.0}
    expected = {"direct": 20.0, "session": 30.0, "transaction": 30.0, "dedicated": 20.0}
    for endpoint, rtt in expected.items():
        entry = net["endpoints"][endpoint]
        assert entry["configured_ms"] == rtt
        # The floor is the distance: the relays add the configured delay once and never
        # deliver early; a busy machine only adds. A missing hop would be 10 ms short, a delay
        # applied twice 10 ms or more over. The median also carries the machine's scheduling
        # (CI measured 26.4 ms for 20): above the floor, and nowhere near a doubled delay.
        assert rtt - 1.5 <= entry["min_ms"] <= rtt + 5, (endpoint, net)
        assert entry["min_ms"] <= entry["measured_ms"] < 2 * rtt, (endpoint, net)
    floors = net["min_ms"]
    assert 18.5 <= floors["client-pooler"] <= 25.0, floors
    assert floors["client-pooler"] <= net["measured_ms"]["client-pooler"], net
    assert floors["client-db"] == net["endpoints"]["direct"]["min_ms"]
    assert abs(floors["pooler-db"] - 10.0) <= 3.0, floors
    assert net["measured_ms"]["pooler-db"] == floors["pooler-db"]
    # a serverless invocation pays several round trips, and TLS some more
    cost = manifest["connect_cost"]["endpoints"]["transaction"]
    assert cost["tls"]["connect_p50_ms"] > cost["plain"]["connect_p50_ms"] > 2 * 20.0
    assert manifest["tls"] == {**manifest["tls"], "sslmode": "verify-full",
                               "ssl_enforce": False}
    assert "--client-db-rtt-ms 20" in manifest["reproduce"]
    lab_cli("report", str(run_dir), home=lab.home)
    report = (run_dir / "report.md").read_text()
    first = report[:1500]
    assert "**Network:** custom, round trips configured client-db 20.0 ms" in first
    assert "What one connection costs" in report
