"""All terminal styling of the CLI: colours, tables, the one-line error, progress lines."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click


def info(text: str) -> None:
    click.echo(text)


def note(text: str) -> None:
    """Progress chatter goes to stderr, so stdout stays clean for paths and JSON."""
    click.echo(click.style(text, dim=True), err=True)


def success(text: str) -> None:
    click.echo(click.style(text, fg="green"))


def warn(text: str) -> None:
    click.echo(click.style(f"warning: {text}", fg="yellow"), err=True)


def error(text: str) -> None:
    click.echo(click.style("error: ", fg="red", bold=True) + text, err=True)


def mark(ok: bool) -> str:
    return click.style("ok  ", fg="green") if ok else click.style("FAIL", fg="red", bold=True)


def heading(text: str) -> None:
    click.echo(click.style(text, bold=True))


def table(rows: Sequence[Sequence[object]], headers: Sequence[str]) -> None:
    cells = [[str(c) for c in headers]] + [["" if c is None else str(c) for c in r]
                                            for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        line = "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
        click.echo(click.style(line, bold=True) if n == 0 else line)


class Progress:
    """A single status line rewritten in place on a terminal, plain lines elsewhere."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self._last = 0
        self._text = ""

    def update(self, text: str) -> None:
        if text == self._text:  # nothing new (e.g. the final update after the last tick)
            return
        self._text = text
        if self.tty:
            pad = max(0, self._last - len(text))
            sys.stderr.write("\r" + text + " " * pad)
            sys.stderr.flush()
            self._last = len(text)
        else:
            click.echo(text, err=True)

    def done(self) -> None:
        if self.tty and self._last:
            sys.stderr.write("\n")
            sys.stderr.flush()
        self._last = 0


class Screen:
    """A block of lines redrawn in place on a terminal (`lab status --watch`); elsewhere each
    new block is printed once, after a blank line."""

    def __init__(self) -> None:
        self.tty = sys.stdout.isatty()
        self._lines = 0
        self._last: list[str] = []

    def draw(self, lines: list[str]) -> None:
        if lines == self._last:
            return
        self._last = list(lines)
        if self.tty:
            if self._lines:
                sys.stdout.write(f"\x1b[{self._lines}F\x1b[J")  # up to the block, clear below
            sys.stdout.write("\n".join(lines) + "\n")
            sys.stdout.flush()
            self._lines = len(lines)
        else:
            click.echo("\n".join(lines) + "\n")

    def done(self) -> None:
        self._lines = 0
