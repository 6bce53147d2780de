"""Scenario discovery and -P coercion, read with ast (never importing a locustfile)."""

from __future__ import annotations

import sys
import textwrap

import pytest

from lab import scenarios
from lab.errors import ConfigError

BUILTIN = {"serverless-burst", "persistent-server", "mixed"}


def test_builtin_scenarios_are_listed_without_importing_locust():
    found = {s.name: s for s in scenarios.available()}
    assert set(found) >= BUILTIN
    assert "locust" not in sys.modules and "gevent" not in sys.modules
    burst = found["serverless-burst"]
    assert burst.builtin and burst.path.name == "serverless_burst.py"
    assert burst.description.startswith("Serverless functions in bursts")
    assert burst.default_users == 150
    assert burst.params["spike_rate"].default == 120.0
    assert burst.params["arrivals"].choices == ("poisson", "even")
    assert found["persistent-server"].default_users == 4
    for s in found.values():
        assert s.description and s.description != "(no description)"
        assert all(p.help for p in s.params.values()), s.name
        data = s.to_json()
        assert data["params"] and data["default_users"] >= 1


def test_resolve_by_name_and_by_path():
    by_name = scenarios.resolve("serverless-burst")
    by_path = scenarios.resolve(str(by_name.path))
    assert by_name.path == by_path.path and by_path.builtin
    with pytest.raises(ConfigError, match="unknown scenario 'nope'") as info:
        scenarios.resolve("nope")
    assert "serverless-burst" in info.value.message and "lab scenarios" in info.value.fix
    with pytest.raises(ConfigError, match="does not exist"):
        scenarios.resolve("missing/file.py")


def test_coerce_to_the_defaults_types():
    s = scenarios.resolve("serverless-burst")
    params = s.coerce({"spike_rate": "50", "queries": "4", "arrivals": "even",
                       "prepare_threshold": "0"})
    assert params["spike_rate"] == 50.0 and isinstance(params["spike_rate"], float)
    assert params["queries"] == 4 and isinstance(params["queries"], int)
    assert params["arrivals"] == "even"
    assert params["prepare_threshold"] == 0
    assert params["hold_ms"] == 500.0  # defaults included
    assert s.coerce({"prepare_threshold": "off"})["prepare_threshold"] == "off"
    assert s.coerce({"prepare_threshold": "none"})["prepare_threshold"] is None
    # typed values (LAB_PARAMS written by the orchestrator) pass through unchanged
    assert s.coerce(params) == params


@pytest.mark.parametrize(("key", "value", "match"), [
    ("queries", "three", "whole number"),
    ("spike_rate", "fast", "not a number"),
    ("spike_rate", "nan", "not a number"),
    ("arrivals", "bursty", "not one of poisson, even"),
])
def test_bad_values(key, value, match):
    with pytest.raises(ConfigError, match=match):
        scenarios.resolve("serverless-burst").coerce({key: value})


def test_unknown_key_names_the_valid_ones():
    with pytest.raises(ConfigError, match="no parameter 'spike'") as info:
        scenarios.resolve("serverless-burst").coerce({"spike": "1"})
    assert "spike_rate" in info.value.message and "base_rate" in info.value.message


def test_users_own_locustfile(tmp_path):
    plain = tmp_path / "my_test.py"
    plain.write_text("from locust import User, task\n\nclass U(User):\n    pass\n")
    s = scenarios.resolve(str(plain))
    assert s.name == "my-test" and not s.builtin
    assert s.description == "(no description)" and s.default_users == 1
    assert s.coerce({"anything": "x"}) == {"anything": "x"}  # passed through as strings

    declared = tmp_path / "declared.py"
    declared.write_text(textwrap.dedent('''
        """My scenario.

        More text.
        """
        import os
        PARAMS: dict = {"flag": {"default": False, "help": "a flag"},
                        "n": {"default": 3}}
        DEFAULT_USERS = 7
    '''))
    s = scenarios.resolve(str(declared))
    assert s.description == "My scenario." and s.default_users == 7
    assert s.coerce({"flag": "yes"}) == {"flag": True, "n": 3}
    with pytest.raises(ConfigError, match="true or false"):
        s.coerce({"flag": "maybe"})


@pytest.mark.parametrize(("source", "match"), [
    ("PARAMS = {'a': {'default': os.getcwd()}}\n", "must be a literal"),
    ("PARAMS = {'a': {'help': 'no default'}}\n", "needs a 'default'"),
    ("PARAMS = {'a': {'default': [1]}}\n", "not int, float, str, bool or None"),
    ("PARAMS = [1]\n", "must be a dict literal"),
    ("DEFAULT_USERS = 0\n", "DEFAULT_USERS must be"),
    ("def broken(:\n", "line 1"),
])
def test_malformed_locustfiles(tmp_path, source, match):
    path = tmp_path / "bad.py"
    path.write_text(source)
    with pytest.raises(ConfigError, match=match):
        scenarios.resolve(str(path))
