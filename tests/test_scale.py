"""Every tier for real, the parts that need no Docker: file-descriptor budgets (containers and
this process), SCRAM keys given to libpq instead of derived per login, the concurrent logins
of the limit experiments, and `--real-limits` in the catalogue, the guide and the CLI.

The real stack at every tier's limits: tests/test_tiers.py (marked heavy)."""

from __future__ import annotations

import base64
import hashlib
import resource
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from lab import experiments as exp
from lab import pg, render, rlimit
from lab.cli import cli
from lab.config import TIERS, load_config
from lab.errors import ConfigError
from lab.experiments.context import Context
from lab.state import Secrets
from tests.conftest import ROOT

SECRETS = Secrets(postgres_password="pw-for-tests", pgbouncer_password="pb",
                  admin_password="adm", salt="00" * 16)


# -- file descriptors ------------------------------------------------------------------------


def test_container_nofile_covers_a_pooler_full_of_clients_at_every_tier():
    for tier in TIERS.values():
        cfg = load_config("default", overrides={"tier": tier.name})
        nofile = rlimit.container_nofile(cfg)
        # What PgBouncer expects to use: a descriptor per client and per server connection.
        assert nofile >= tier.max_client_conn + tier.max_connections + 10
        assert rlimit.MIN_CONTAINER_NOFILE <= nofile <= rlimit.MAX_NOFILE
    assert rlimit.container_nofile(load_config("default", overrides={"tier": "16xl"})) == 13524
    micro = load_config("default", overrides={"tier": "micro"})
    assert rlimit.container_nofile(micro) == rlimit.MIN_CONTAINER_NOFILE


def test_the_containers_get_the_labs_own_nofile_through_compose_env():
    cfg = load_config("default", overrides={"tier": "16xl"})
    files = render.render(cfg, SECRETS, "img", "/cfg")
    env = dict(line.split("=", 1) for line in files["compose.env"].splitlines())
    assert env["LAB_NOFILE"] == str(rlimit.container_nofile(cfg))
    compose = (ROOT / "compose" / "compose.yaml").read_text()
    assert 'nofile: {soft: "${LAB_NOFILE:-4096}", hard: "${LAB_NOFILE:-4096}"}' in compose


def test_an_experiment_process_needs_a_whole_pooler_only_with_real_limits():
    cfg = load_config("default", overrides={"tier": "16xl"})
    assert rlimit.process_fds_needed(cfg, real_limits=True) == 12000 + rlimit.PROCESS_RESERVE
    assert rlimit.process_fds_needed(cfg, real_limits=False) == 500 + rlimit.PROCESS_RESERVE


class FakeLimits:
    def __init__(self, soft, hard):
        self.limits = (soft, hard)
        self.set_to = None

    def getrlimit(self, _which):
        return self.limits

    def setrlimit(self, _which, limits):
        self.set_to = self.limits = limits


@pytest.fixture
def limits(monkeypatch):
    def make(soft, hard):
        fake = FakeLimits(soft, hard)
        monkeypatch.setattr(rlimit.resource, "getrlimit", fake.getrlimit)
        monkeypatch.setattr(rlimit.resource, "setrlimit", fake.setrlimit)
        return fake
    return make


def test_raise_nofile_lifts_the_soft_limit_to_the_hard_one(limits):
    fake = limits(1024, 524288)
    assert rlimit.raise_nofile(12256) == 524288
    assert fake.set_to == (524288, 524288)


def test_raise_nofile_leaves_a_sufficient_limit_alone(limits):
    fake = limits(20000, 20000)
    assert rlimit.raise_nofile(12256) == 20000
    assert fake.set_to is None


def test_raise_nofile_with_an_unlimited_hard_limit_asks_only_for_what_is_needed(limits):
    fake = limits(1024, resource.RLIM_INFINITY)
    assert rlimit.raise_nofile(12256) == 12256
    assert fake.set_to == (12256, resource.RLIM_INFINITY)


def test_a_hard_limit_below_the_need_is_a_one_line_error_naming_the_fix(limits):
    limits(1024, 4096)
    with pytest.raises(ConfigError) as caught:
        rlimit.raise_nofile(12256)
    assert "at most 4096 files" in caught.value.message and "12256" in caught.value.message
    assert "ulimit -Hn 12256" in caught.value.fix


def test_this_process_can_raise_its_own_limit():
    soft, hard = rlimit.nofile()
    assert rlimit.raise_nofile(min(soft, hard)) == soft  # nothing to do: unchanged


# -- SCRAM keys --------------------------------------------------------------------------------


def test_the_client_keys_belong_to_the_verifier_every_endpoint_holds():
    keys = render.client_scram_keys(SECRETS)
    client_key = base64.b64decode(keys["scram_client_key"])
    server_key = base64.b64decode(keys["scram_server_key"])
    # Postgres's pg_authid, the shared pooler's userlist and the dedicated pooler's auth_query
    # all hold this verifier for the postgres password.
    verifier = render._verifier(SECRETS, "postgres", SECRETS.postgres_password)
    stored, server = verifier.split("$", 2)[2].split(":")
    assert base64.b64decode(stored) == hashlib.sha256(client_key).digest()
    assert base64.b64decode(server) == server_key


def test_libpq_here_takes_scram_keys():
    # psycopg[binary] bundles libpq 18; a libpq without them falls back to the password.
    assert pg.scram_keys_supported() == (pg.psycopg.pq.version() >= 180000)


# -- concurrent logins ---------------------------------------------------------------------------


class Refused(pg.OperationalError):
    sqlstate = "08P01"


class BadPassword(pg.OperationalError):
    sqlstate = "28P01"


def fake_context(monkeypatch, limit: int, *, keys_work: bool = True,
                 supported: bool = True) -> tuple[Context, list[dict]]:
    """A Context whose connect() admits ``limit`` clients, then refuses, as a pooler does."""
    ctx = Context.__new__(Context)
    ctx._conns, ctx._lock, ctx._scram_keys = [], threading.Lock(), None
    ctx.log = lambda _text: None
    ctx.state = type("State", (), {"secrets": staticmethod(lambda: SECRETS)})()
    calls: list[dict] = []
    held = []

    def connect(endpoint, **kwargs):
        with ctx._lock:
            calls.append(kwargs)
            if "scram_client_key" in kwargs and not keys_work:
                raise BadPassword("password authentication failed for user \"postgres\"")
            if len(held) >= limit:
                raise Refused("no more connections allowed (max_client_conn)")
            held.append(object())
            ctx._conns.append(held[-1])
        return held[-1]

    monkeypatch.setattr(ctx, "connect", connect)
    monkeypatch.setattr(pg, "scram_keys_supported", lambda: supported)
    return ctx, calls


def test_connect_many_fills_to_the_limit_with_logins_in_parallel(monkeypatch):
    ctx, calls = fake_context(monkeypatch, limit=997)
    opened, refusal = ctx.connect_many("transaction", 1003, concurrency=8)
    assert opened == 997 and str(refusal) == "no more connections allowed (max_client_conn)"
    assert len(ctx._conns) == 997
    assert all("scram_client_key" in c for c in calls)


def test_connect_many_stops_at_count_without_a_refusal(monkeypatch):
    ctx, _ = fake_context(monkeypatch, limit=100)
    assert ctx.connect_many("transaction", 40) == (40, None)
    assert ctx.connect_many("transaction", 0) == (0, None)


def test_connect_many_derives_the_keys_when_the_lab_refuses_them(monkeypatch):
    ctx, calls = fake_context(monkeypatch, limit=50, keys_work=False)
    opened, refusal = ctx.connect_many("dedicated", 60)
    assert opened == 50 and isinstance(refusal, Refused)
    assert "scram_client_key" in calls[0]
    assert all("scram_client_key" not in c for c in calls[1:])


def test_connect_many_without_libpq_18_uses_the_password(monkeypatch):
    ctx, calls = fake_context(monkeypatch, limit=5, supported=False)
    assert ctx.connect_many("direct", 5) == (5, None)
    assert all(c == {} for c in calls)


# -- --real-limits in the catalogue, the guide and the CLI -------------------------------------


def test_the_limit_experiments_say_what_real_limits_changes():
    for name in ("max-client-conn", "session-exhaustion"):
        assert exp.get(name).real_limits, name
    session = exp.get("session-exhaustion")
    # The tier's own pool size: no default_pool_size = 2 with --real-limits.
    assert "default_pool_size" in session.settings_for(False)["session"]
    assert "default_pool_size" not in session.settings_for(True)["session"]
    budget = exp.get("backend-budget")
    assert budget.settings_for(True) == budget.settings_for(False)
    assert "`--real-limits`: max_client_conn stays the tier's" in exp.guide_markdown()


def test_real_settings_on_a_non_pooler_are_refused(tmp_path: Path):
    path = tmp_path / "my_probe.py"
    path.write_text(
        "from lab.experiments import Experiment, Lane, Observation\n"
        "EXPERIMENT = Experiment(name='my-probe', title='t', question='q?', why='w', fix='f',\n"
        "    lanes=(Lane('direct', 'direct', 'Direct'),), expect={'direct': 'x'},\n"
        "    run=lambda ctx: {'direct': Observation('x')},\n"
        "    real_settings={'direct': {'default_pool_size': 1}})\n")
    with pytest.raises(ConfigError) as caught:
        exp.resolve(str(path))
    assert "only on the poolers" in caught.value.message


def test_lab_experiment_run_has_real_limits():
    result = CliRunner().invoke(cli, ["experiment", "run", "--help"])
    assert result.exit_code == 0 and "--real-limits" in result.output


def test_every_lab_command_lifts_the_soft_limit_for_locust_best_effort(limits, monkeypatch):
    limits(1024, 20000)
    assert rlimit.raise_nofile_for_children() == 20000  # Locust alone stops at 10,000
    fake = limits(1024, resource.RLIM_INFINITY)
    assert rlimit.raise_nofile_for_children() == rlimit.LOAD_NOFILE
    assert fake.set_to == (rlimit.LOAD_NOFILE, resource.RLIM_INFINITY)

    def refuse(_which, _limits):
        raise ValueError("not allowed")

    limits(1024, 4096)
    monkeypatch.setattr(rlimit.resource, "setrlimit", refuse)
    assert rlimit.raise_nofile_for_children() == 1024  # never an error
