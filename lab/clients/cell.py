"""One cell of the matrix, in a child process of its own: ``python -m lab.clients.cell``.

Reads ``{"file", "variant", "config"}`` as JSON on stdin, runs the variant's ``run(workload,
options)`` and prints the outcome as the last line of JSON on stdout. A crash, a hang or an
exit in here costs this cell only: the parent kills the process group at its timeout.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import sys
import time
from pathlib import Path
from typing import Any

from lab.clients.model import CRASHED, FAILS, NOT_INSTALLED, WORKS, WRONG
from lab.clients.workload import ForeignFailure, Workload, WrongResult


def qualified(exc: BaseException) -> str:
    cls = type(exc)
    module = cls.__module__
    if module in ("builtins", "__main__"):
        return cls.__qualname__
    return f"{module}.{cls.__qualname__}"


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:400] if text else type(exc).__name__


def run_cell(request: dict[str, Any]) -> dict[str, Any]:
    from lab.clients.discovery import load

    started = time.monotonic()
    w = Workload(request["config"])
    result: dict[str, Any]
    try:
        variant = load(Path(request["file"])).variant(request["variant"])
        value = variant.run(w, dict(variant.options))
        if inspect.isawaitable(value):
            asyncio.run(_awaited(value))
        result = {"outcome": WORKS}
    except WrongResult as exc:
        result = {"outcome": WRONG, "message": first_line(exc), "where": w.at.where}
    except ForeignFailure as exc:
        result = {"outcome": exc.outcome, "error_class": exc.error_class,
                  "message": exc.message[:400], "where": exc.where}
    except ModuleNotFoundError as exc:
        result = {"outcome": NOT_INSTALLED, "error_class": qualified(exc),
                  "message": first_line(exc), "where": w.at.where}
    except Exception as exc:  # the driver's own exception: what the matrix is for
        result = {"outcome": FAILS, "error_class": qualified(exc), "message": first_line(exc),
                  "where": w.at.where}
    result["seconds"] = time.monotonic() - started
    return result


async def _awaited(value: Any) -> Any:
    return await value


def main() -> int:
    try:
        request = json.loads(sys.stdin.read())
        result = run_cell(request)
    except BaseException as exc:  # noqa: BLE001 - the parent needs a line whatever happened
        result = {"outcome": CRASHED, "error_class": qualified(exc), "message": first_line(exc)}
    sys.stdout.write("\n" + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
