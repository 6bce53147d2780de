"""The CLI surface: every command has help text and is documented in the README; the
orchestrator never loads Locust or gevent (psycopg must not lock in its blocking wait)."""

import subprocess
import sys
from pathlib import Path

import click
import pytest

from lab.cli import cli

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def walk(group, prefix=("lab",)):
    for name, command in sorted(group.commands.items()):
        path = (*prefix, name)
        yield path, command
        if isinstance(command, click.Group):
            yield from walk(command, path)


COMMANDS = list(walk(cli))


@pytest.mark.parametrize("path, command", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_command_has_help_and_is_in_the_readme(path, command):
    assert (command.help or "").strip(), f"{' '.join(path)} has no help text"
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden:
            assert (param.help or "").strip(), f"{' '.join(path)} {param.opts[0]} has no help"
    assert f"`{' '.join(path)}" in README, f"README does not document `{' '.join(path)}`"


def test_the_orchestrator_never_imports_locust_or_gevent():
    code = (
        "import sys, lab.cli, lab.run, lab.status, lab.sampler, lab.pg, lab.stack\n"
        "import lab.distributed.master, lab.distributed.worker, lab.distributed.tunnel\n"
        "import lab.distributed.wrapper\n"
        "from lab.cli import cli\n"
        "bad = [m for m in ('locust', 'gevent', 'gevent.monkey') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_lab_pg_refuses_a_locust_process():
    code = "import locust\nimport lab.pg\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode != 0 and "lab.users" in proc.stderr


def test_the_progress_line_off_a_terminal_prints_each_new_state_once(capsys):
    from lab import term

    progress = term.Progress()
    for text in ("[direct 1/3s] 10 req/s", "[direct 2/3s] 12 req/s", "[direct 2/3s] 12 req/s"):
        progress.update(text)
    progress.done()
    assert capsys.readouterr().err.splitlines() == ["[direct 1/3s] 10 req/s",
                                                    "[direct 2/3s] 12 req/s"]
