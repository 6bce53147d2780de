"""`lab experiment`, the parts that need no Docker: the catalogue and its files (built-in, in a
POOLER_LAB_EXPERIMENTS folder, by path), expectation overrides, the verdict, error texts, and
the workshop guide generated from the definitions."""

from __future__ import annotations

import re
import shlex

import click
import psycopg
import pytest

from lab import experiments as exp
from lab import resources
from lab.cli import cli
from lab.config import ENDPOINTS, load_config
from lab.errors import ConfigError, ExpectationFailed
from tests.conftest import ROOT, lab_cli

GUIDE = ROOT / "docs" / "workshop.md"
STOCK = load_config("default")
SHARED = load_config("default", overrides={"pool_sharing": "shared"})


@pytest.fixture(autouse=True)
def _builtin_catalogue_only(monkeypatch):
    monkeypatch.delenv(exp.ENV_VAR, raising=False)


def test_the_set_covers_every_pitfall_and_limit_of_the_brief():
    assert exp.names() == [
        "backend-identity", "set-leak", "sql-prepare", "protocol-prepared", "advisory-lock",
        "listen-notify", "temp-table", "with-hold-cursor", "currval", "load-library",
        "startup-options", "idle-in-transaction", "max-client-conn", "max-connections",
        "session-exhaustion", "backend-budget", "tenant-not-found", "delayed-cancel",
        "migrations", "dropped-connection", "idle-timeouts", "pg-dump", "tls", "pooler-restart",
        "postgres-restart", "pool-pause",
    ]


@pytest.mark.parametrize("experiment", exp.CATALOGUE, ids=exp.names())
def test_every_experiment_is_complete(experiment):
    assert experiment.title and experiment.question.endswith("?") and experiment.fix
    keys = [lane.key for lane in experiment.lanes]
    assert len(keys) == len(set(keys)), "lane keys must be unique"
    for lane in experiment.lanes:
        # --expect EXPERIMENT.LANE=OUTCOME must be able to name every lane.
        assert re.fullmatch(r"[a-z0-9-]+", lane.key), lane.key
        assert lane.endpoint in ENDPOINTS and lane.label
    for cfg in (STOCK, SHARED):
        expected = experiment.expected(cfg)
        assert set(expected) == set(keys) and all(expected.values())
    for endpoint, values in experiment.settings.items():
        assert endpoint in exp.POOLERS, "runtime settings exist only on PgBouncer consoles"
        assert all(isinstance(v, int) for v in values.values())


def test_transaction_poolers_are_expected_to_lose_session_state_that_direct_keeps():
    for name in ("sql-prepare", "temp-table", "with-hold-cursor", "currval", "advisory-lock",
                 "listen-notify", "backend-identity", "load-library"):
        expected = exp.get(name).expected(STOCK)
        assert expected["direct"] == expected["session"], name
        assert expected["transaction"] == expected["dedicated"] != expected["direct"], name


def test_the_backend_budget_follows_the_lab_settings():
    assert exp.get("backend-budget").expected(STOCK) == {
        "session": "15", "transaction": "15", "dedicated": "15", "dedicated-auth": "1",
        "direct": "1", "total": "47 <= 60"}
    # One pool shared by both modes: session mode takes it all, transaction mode gets none.
    shared = exp.get("backend-budget").expected(SHARED)
    assert (shared["session"], shared["transaction"], shared["total"]) == ("15", "0", "32 <= 60")
    small = load_config("default", overrides={"pool_size": 3, "max_connections": 20})
    assert exp.get("backend-budget").expected(small)["total"] == "11 <= 20"


def test_parse_expect_reads_experiment_lane_outcome():
    assert exp.parse_expect(["set-leak.transaction=isolated",
                             "max-connections.direct=sorry = no"]) == {
        "set-leak": {"transaction": "isolated"},
        "max-connections": {"direct": "sorry = no"}}


@pytest.mark.parametrize("value, words", [
    ("set-leak.transaction", "EXPERIMENT.LANE=OUTCOME"),
    ("set-leak=leaked", "EXPERIMENT.LANE=OUTCOME"),
    ("set-leak.transaction=", "EXPERIMENT.LANE=OUTCOME"),
    ("no-such.direct=works", "no experiment named 'no-such'"),
    ("set-leak.nowhere=leaked", "has no lane 'nowhere'"),
])
def test_parse_expect_refuses_what_it_cannot_check(value, words):
    with pytest.raises(ConfigError) as caught:
        exp.parse_expect([value])
    assert words in caught.value.message and caught.value.fix


def test_select_needs_names_or_all_but_not_both():
    assert [e.name for e in exp.select([], run_all=True)] == exp.names()
    assert [e.name for e in exp.select(["currval", "set-leak"], False)] == ["currval",
                                                                            "set-leak"]
    for chosen, run_all in (([], False), (["set-leak"], True), (["nope"], False)):
        with pytest.raises(ConfigError):
            exp.select(chosen, run_all)


def _result(name: str, *pairs: tuple[str, str], error: str | None = None):
    lanes = tuple(exp.LaneResult(f"lane{i}", "direct", "Direct", expected, observed, "seen")
                  for i, (expected, observed) in enumerate(pairs))
    return exp.ExperimentResult(name, "title", "q?", "fix", lanes, 0.1, error)


def test_check_passes_only_when_every_lane_matches():
    good = _result("good", ("works", "works"), ("leaked", "leaked"))
    exp.check([good])  # no exception
    bad = _result("bad", ("works", "works"), ("leaked", "isolated"))
    with pytest.raises(ExpectationFailed) as caught:
        exp.check([good, bad], "lab2")
    err = caught.value
    assert err.exit_code == 7
    line = err.one_line()
    assert "\n" not in line and "1 of 2" in line
    assert "bad (lane1 'isolated', expected 'leaked')" in line and "--name lab2" in line
    broken = _result("broken", ("works", "works"), error="lab not idle")
    assert not broken.passed
    with pytest.raises(ExpectationFailed, match="broken \\(lab not idle\\)"):
        exp.check([broken])


def test_results_json_carries_expected_and_observed_per_lane():
    data = exp.results_json("default", [_result("x", ("a", "b"))])
    assert data["passed"] is False
    lane = data["experiments"][0]["lanes"][0]
    assert (lane["expected"], lane["observed"], lane["passed"]) == ("a", "b", False)


@pytest.mark.parametrize("text, message", [
    ('connection failed: connection to server at "10.0.0.2", port 6543 failed: FATAL:  '
     'no more connections allowed (max_client_conn)',
     "no more connections allowed (max_client_conn)"),
    ('connection failed: connection to server at "10.0.0.2", port 5432 failed: FATAL:  '
     'sorry, too many clients already', "sorry, too many clients already"),
    ("query_wait_timeout", "query_wait_timeout"),
])
def test_server_message_is_the_servers_own_text(text, message):
    assert exp.server_message(psycopg.OperationalError(text)) == message


def test_the_committed_guide_matches_the_experiment_definitions():
    section = exp.guide_section(GUIDE.read_text())
    assert section, f"{GUIDE} lost its generated section markers"
    assert section == exp.guide_markdown(), (
        "docs/workshop.md is out of date; regenerate it with: .venv/bin/python -c "
        "\"from pathlib import Path; from lab.experiments import update_guide; "
        "update_guide(Path('docs/workshop.md'))\"")
    for name in exp.names():
        assert f"lab experiment run {name}\n" in section


def test_lab_experiment_list_markdown_prints_the_guide_section(tmp_path):
    proc = lab_cli("experiment", "list", "--markdown", home=tmp_path)
    assert proc.stdout == exp.guide_markdown()
    listing = lab_cli("experiment", "list", home=tmp_path).stdout
    assert all(name in listing for name in exp.names())


def test_update_guide_rewrites_only_the_generated_section(tmp_path):
    guide = tmp_path / "guide.md"
    guide.write_text(f"# Title\n\nbefore\n\n{exp.GUIDE_BEGIN}\nstale\n{exp.GUIDE_END}\n\nafter\n")
    assert exp.update_guide(guide) is True
    text = guide.read_text()
    assert text.startswith("# Title\n\nbefore\n\n") and text.endswith("\n\nafter\n")
    assert exp.guide_section(text) == exp.guide_markdown()
    assert exp.update_guide(guide) is False


def _guide_commands() -> list[str]:
    """Every `lab ...` line of the guide's shell blocks, without its comment."""
    commands, in_sh = [], False
    for line in GUIDE.read_text().splitlines():
        if line.startswith("```"):
            in_sh = line.strip() == "```sh"
            continue
        if in_sh and line.startswith("lab "):
            commands.append(line.split("  #")[0].strip())
    return commands


GUIDE_COMMANDS = _guide_commands()


def test_the_guide_has_the_workshop_path():
    for command in ("lab up", "lab connect", "lab experiment run --all",
                    "lab run serverless-burst --endpoint all --duration 60s",
                    "lab run persistent-server --endpoint transaction --endpoint direct",
                    "lab report reports/<run-id>", "lab down"):
        assert command in GUIDE_COMMANDS, command


@pytest.mark.parametrize("command", GUIDE_COMMANDS)
def test_every_guide_command_parses_with_the_real_cli(command):
    """Each command names a real command and its options and arguments parse (not run)."""
    args = shlex.split(command)[1:]
    group: click.Group = cli
    ctx = click.Context(cli, info_name="lab")
    while True:
        name, rest = args[0], args[1:]
        sub = group.get_command(ctx, name)
        if sub is None:
            if name == "report":
                pytest.skip("`lab report` is not in the CLI yet (another issue)")
            pytest.fail(f"`{command}`: no command {name!r}")
        if isinstance(sub, click.Group):
            group, args = sub, rest
            ctx = click.Context(sub, info_name=name, parent=ctx)
            continue
        if "<" not in command:  # placeholders such as <run-id> are for people to fill in
            sub.make_context(name, list(rest), parent=ctx)
        return


def test_run_refuses_a_lab_that_was_never_brought_up(tmp_path):
    proc = lab_cli("experiment", "run", "set-leak", "--name", "never-up", home=tmp_path,
                   check=False)
    assert proc.returncode == 4
    assert proc.stderr.count("error:") == 1 and "never been brought up" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_unknown_experiment_is_a_one_line_error(tmp_path):
    proc = lab_cli("experiment", "run", "no-such-thing", home=tmp_path, check=False)
    assert proc.returncode == 2
    assert "no experiment named 'no-such-thing'" in proc.stderr and "fix:" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_experiments_never_import_locust_or_gevent():
    import subprocess
    import sys

    code = ("import sys, lab.experiments\n"
            "assert len(lab.experiments.CATALOGUE) > 1\n"  # every experiment file imported
            "bad = [m for m in ('locust', 'gevent') if m in sys.modules]\n"
            "assert not bad, bad\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr



# -- experiment files --------------------------------------------------------------------------

PROBE = """
\"\"\"A user's own experiment.\"\"\"

from lab.experiments import Context, Experiment, Lane, Observation, endpoint_lanes, per_lane


@per_lane
def run(ctx: Context, lane: Lane) -> Observation:
    return Observation("probed")


EXPERIMENT = Experiment(
    name={name!r}, title="A probe", question="Does the probe probe?", why="It does.",
    fix="None needed.", lanes={lanes}, expect={{"direct": "probed"}}, run=run, {extra}
)
"""


def write_probe(folder, file_name="my_probe.py", name="my-probe",
                lanes='endpoint_lanes("direct")', extra=""):
    path = folder / file_name
    path.write_text(PROBE.format(name=name, lanes=lanes, extra=extra))
    return path


def test_each_builtin_experiment_is_one_numbered_file_in_workshop_order():
    files = sorted(resources.experiments_dir().glob("*.py"))
    assert [f.name[:3] for f in files] == [f"{n:02d}_" for n in range(1, len(files) + 1)]
    assert [exp.discovery.file_name_of(f) for f in files] == exp.names()


def test_a_folder_in_the_environment_adds_its_experiments_after_the_builtin_ones(
        tmp_path, monkeypatch):
    write_probe(tmp_path)
    write_probe(tmp_path, "_helper.py", name="ignored")  # leading underscore: not an experiment
    builtin = exp.names()
    monkeypatch.setenv(exp.ENV_VAR, str(tmp_path))
    assert exp.names() == [*builtin, "my-probe"]
    assert exp.get("my-probe").expected(STOCK) == {"direct": "probed"}
    assert [e.name for e in exp.select(["my-probe"], False)] == ["my-probe"]
    assert exp.select([], run_all=True)[-1].name == "my-probe"
    listing = lab_cli("experiment", "list", home=tmp_path, env={exp.ENV_VAR: str(tmp_path)})
    assert listing.stdout.splitlines()[-1].split()[:2] == ["my-probe", "A"]


def test_an_experiment_file_given_by_path_runs_without_joining_the_catalogue(tmp_path):
    path = write_probe(tmp_path)
    chosen = exp.select([str(path)], False)
    assert [e.name for e in chosen] == ["my-probe"] and "my-probe" not in exp.names()
    assert exp.parse_expect(["my-probe.direct=other"], chosen) == {
        "my-probe": {"direct": "other"}}
    # A built-in file by path is the built-in experiment itself.
    builtin = resources.experiments_dir() / "02_set_leak.py"
    assert exp.resolve(str(builtin)) is exp.get("set-leak")


@pytest.mark.parametrize("file_name, kwargs, words", [
    ("other_name.py", {}, "its file name says 'other-name'"),
    ("set_leak.py", {"name": "set-leak"}, "defines already"),
    ("my_probe.py", {"lanes": '(Lane("Bad Key", "direct", "x"),)'}, "lane key 'Bad Key'"),
    ("my_probe.py", {"lanes": '(Lane("a", "nowhere", "x"),)'}, "no endpoint 'nowhere'"),
    ("my_probe.py", {"extra": 'settings={"direct": {"default_pool_size": 1}}'},
     "only on the poolers"),
])
def test_a_bad_experiment_file_is_a_one_line_error(tmp_path, file_name, kwargs, words):
    path = write_probe(tmp_path, file_name, **kwargs)
    with pytest.raises(ConfigError) as caught:
        exp.resolve(str(path))
    assert words in caught.value.message and caught.value.fix


@pytest.mark.parametrize("text, words", [
    ("x = (\n", "line 1"),
    ("import no_such_module_here\n", "ModuleNotFoundError"),
    ("EXPERIMENT = 1\n", "defines no EXPERIMENT"),
])
def test_an_experiment_file_that_does_not_load_is_a_one_line_error(tmp_path, text, words):
    path = tmp_path / "broken.py"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        exp.resolve(str(path))
    assert words in caught.value.message and str(path) in caught.value.message


def test_a_missing_folder_or_a_duplicate_name_in_the_environment_is_refused(tmp_path,
                                                                           monkeypatch):
    monkeypatch.setenv(exp.ENV_VAR, str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="does not exist"):
        exp.names()
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        write_probe(tmp_path / sub)
    monkeypatch.setenv(exp.ENV_VAR, f"{tmp_path / 'a'}:{tmp_path / 'b'}")
    with pytest.raises(ConfigError, match="two experiments named 'my-probe'"):
        exp.names()
    proc = lab_cli("experiment", "list", home=tmp_path, check=False,
                   env={exp.ENV_VAR: f"{tmp_path / 'a'}:{tmp_path / 'b'}"})
    assert proc.returncode == 2 and proc.stderr.count("error:") == 1
    assert "Traceback" not in proc.stderr


def test_prepared_statement_expectations_follow_the_poolers_switches():
    clash = "already-exists, then does-not-exist"
    stock = exp.get("protocol-prepared").expected(STOCK)
    assert stock["direct"] == stock["session"] == "works"
    for lane in ("transaction", "dedicated", "transaction-asyncpg", "transaction-prisma"):
        assert stock[lane] == clash, lane  # 42P05 first, then 26000
    for lane in ("transaction-no-prepare", "transaction-unnamed", "transaction-mps-200",
                 "dedicated-mps-100"):
        assert stock[lane] == "works", lane  # the drivers' fixes; the poolers' switches
    on = load_config("default", overrides={"shared_max_prepared_statements": 200})
    switched = exp.get("protocol-prepared").expected(on)
    assert switched["transaction"] == switched["transaction-prisma"] == "works"
    assert switched["dedicated"] == clash
    dedicated_on = load_config("default", overrides={"max_prepared_statements": 100})
    assert exp.get("protocol-prepared").expected(dedicated_on)["dedicated"] == "works"
    # PgBouncer never tracks SQL PREPARE, switch or not.
    for cfg in (STOCK, on):
        sql = exp.get("sql-prepare").expected(cfg)
        assert sql["transaction"] == sql["transaction-mps-200"] == "does-not-exist"
