"""Settings: tier presets, lab.toml and flags, and the one-line errors for bad values."""

import pytest

from lab import config
from lab.config import TIERS, load_config
from lab.errors import ConfigError


def test_every_supabase_tier_has_its_documented_limits():
    assert list(TIERS) == ["nano", "micro", "small", "medium", "large", "xl", "2xl", "4xl",
                           "8xl", "12xl", "16xl"]
    assert (TIERS["micro"].max_connections, TIERS["micro"].max_client_conn,
            TIERS["micro"].pool_size) == (60, 200, 15)
    assert (TIERS["16xl"].max_connections, TIERS["16xl"].max_client_conn,
            TIERS["16xl"].pool_size) == (500, 12000, 128)


def test_defaults_follow_the_documented_topology():
    cfg = load_config()
    assert cfg.tier == "micro" and cfg.project == "pooler-lab-default"
    assert (cfg.db_address, cfg.pooler_address) == ("127.0.0.2", "127.0.0.3")
    assert dict(cfg.ports) == {"direct": 5432, "dedicated": 6543, "session": 5432,
                               "transaction": 6543}
    assert cfg.max_prepared_statements == 0  # what Supabase documents today
    assert cfg.session_overflow == "refuse"  # Supavisor 2.8+: EMAXCONNSESSION at connect


def test_toml_overrides_tier_and_flags_override_toml():
    cfg = load_config("x", {"tier": "large", "pool_size": 30}, {"pool_size": 40,
                                                               "max_connections": None})
    assert cfg.max_connections == 160 and cfg.max_client_conn == 800
    assert cfg.pool_size == 40


def test_ports_layout_puts_everything_on_one_address_with_offsets():
    cfg = load_config("x", {"layout": "ports", "port_offset": 20000})
    assert cfg.db_address == cfg.pooler_address == "127.0.0.1"
    assert dict(cfg.ports) == {"direct": 25432, "dedicated": 26543, "session": 25433,
                               "transaction": 26544}


@pytest.mark.parametrize("kwargs, words", [
    ({"overrides": {"tier": "huge"}}, ["unknown tier 'huge'", "micro"]),
    ({"overrides": {"pool_size": 100}}, ["pool size 100 is above max_connections 60",
                                         "--pool-size"]),
    ({"overrides": {"direct_port": 70000}}, ["out of range", "--direct-port"]),
    ({"overrides": {"tenant": "a.b"}}, ["invalid tenant", "--tenant"]),
    ({"overrides": {"db_address": "localhost"}}, ["not an IP address"]),
    ({"toml": {"session_overflow": "wait"}}, ["unknown session_overflow 'wait'", "'queue'"]),
    ({"overrides": {"max_connections": "many"}}, ["whole number"]),
    ({"toml": {"pool_sise": 3}}, ["unknown setting 'pool_sise'", "pool_size"]),
    ({"name": "Bad Name"}, ["invalid lab name"]),
    ({"overrides": {"layout": "ports", "session_port": 15432}},
     ["would both listen on 127.0.0.1:15432"]),
])
def test_bad_values_are_refused_with_a_fix(kwargs, words):
    name = kwargs.pop("name", "default")
    with pytest.raises(ConfigError) as caught:
        load_config(name, **kwargs)
    line = caught.value.one_line()
    assert "\n" not in line and "fix:" in line
    for word in words:
        assert word in line


def test_saved_settings_round_trip():
    cfg = load_config("two", {"tier": "small", "tenant": "acme", "session_overflow": "queue"})
    assert cfg.to_dict()["session_overflow"] == "queue"  # in every run's manifest
    assert config.from_dict(cfg.to_dict()) == cfg


def test_toml_file_errors_are_one_line(tmp_path):
    bad = tmp_path / "lab.toml"
    bad.write_text("tier = \n")
    with pytest.raises(ConfigError) as caught:
        config.load_toml(bad)
    assert "not valid TOML" in caught.value.one_line()
    with pytest.raises(ConfigError):
        config.load_toml(tmp_path / "missing.toml")
    good = tmp_path / "ok.toml"
    good.write_text('[lab]\ntier = "xl"\npool_size = 25\n')
    assert load_config("x", config.load_toml(good)).pool_size == 25


def test_unknown_tier_from_the_cli_is_one_line_and_exit_2(tmp_path):
    from tests.conftest import lab_cli

    proc = lab_cli("up", "--tier", "huge", home=tmp_path, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "huge" in proc.stderr


def test_the_reproduce_line_brings_the_same_session_overflow_back():
    from lab.run.manifest import reproduce_text

    lab = load_config("two", {"session_overflow": "queue"}).to_dict()
    text = reproduce_text({"lab": lab, "command": ["lab", "run", "mixed"]})
    assert "--session-overflow queue" in text.splitlines()[0]
    text = reproduce_text({"lab": load_config().to_dict(), "command": ["lab", "run", "mixed"]})
    assert "--session-overflow refuse" in text
    del lab["session_overflow"]  # a manifest from before the setting: that lab queued
    assert "--session-overflow queue" in reproduce_text({"lab": lab, "command": ["lab"]})


def test_the_shared_transaction_pooler_has_a_prepared_statement_switch_off_by_default():
    # Supavisor: named prepared statements in transaction mode only behind a flag, off by
    # default. The lab: PgBouncer's max_prepared_statements on the transaction-mode pooler.
    assert load_config().shared_max_prepared_statements == 0
    cfg = load_config("x", {"shared_max_prepared_statements": 100},
                      {"shared_max_prepared_statements": 200})
    assert cfg.shared_max_prepared_statements == 200 and cfg.max_prepared_statements == 0
    assert cfg.to_dict()["shared_max_prepared_statements"] == 200  # in every run's manifest
    assert config.from_dict(cfg.to_dict()) == cfg
    older = cfg.to_dict()
    del older["shared_max_prepared_statements"]  # saved by a lab from before the setting
    assert config.from_dict(older).shared_max_prepared_statements == 0
    with pytest.raises(ConfigError) as caught:
        load_config(overrides={"shared_max_prepared_statements": -1})
    assert "at least 0" in caught.value.one_line()


def test_the_reproduce_line_brings_the_same_prepared_statement_switches_back():
    from lab.run.manifest import reproduce_text

    lab = load_config("x", {"shared_max_prepared_statements": 200,
                            "max_prepared_statements": 100}).to_dict()
    line = reproduce_text({"lab": lab, "command": ["lab", "run", "mixed"]}).splitlines()[0]
    assert "--shared-max-prepared-statements 200" in line
    assert "--max-prepared-statements 100" in line
    del lab["shared_max_prepared_statements"]  # a manifest from before the setting: off
    assert "--shared-max-prepared-statements 0" in reproduce_text({"lab": lab,
                                                                   "command": ["lab"]})
