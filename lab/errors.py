"""The one error family of the lab.

Core modules raise these; only the CLI turns them into a one-line message and an exit code
(see ``lab.cli``). Every error says what went wrong and, where there is one, the command that
fixes it, so the user never has to read a traceback.
"""

from __future__ import annotations


class LabError(Exception):
    """Base class: ``message`` says what went wrong, ``fix`` says what to run or change."""

    exit_code = 1

    def __init__(self, message: str, fix: str | None = None):
        super().__init__(message)
        self.message = message
        self.fix = fix

    def one_line(self) -> str:
        text = self.message.rstrip(".")
        if self.fix:
            text += f"; fix: {self.fix}"
        return " ".join(text.split())


class ConfigError(LabError):
    """A setting, flag or lab.toml value is invalid."""

    exit_code = 2


class DockerUnavailable(LabError):
    """The Docker engine or Compose v2 cannot be reached."""

    exit_code = 3


class StackError(LabError):
    """The compose stack could not be brought up, found, or talked to."""

    exit_code = 4


class RunError(LabError):
    """A load run could not start or its output is unusable."""

    exit_code = 5


class ReportError(LabError):
    """A run directory is missing or damaged."""

    exit_code = 6


class ExpectationFailed(LabError):
    """An experiment observed something other than what it expected."""

    exit_code = 7
