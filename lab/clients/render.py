"""The matrix as text (the terminal), Markdown and HTML (reports), from its JSON form alone, so
that a saved ``clients.json`` renders the same as the run that wrote it."""

from __future__ import annotations

import html as htmlmod
from dataclasses import dataclass
from pathlib import Path

from lab.clients.matrix import Matrix, counts
from lab.clients.model import FAILS, WORKS, WRONG, Cell

SHORT = {"works": "works", "fails": "FAILS", "wrong": "WRONG", "hangs": "HANGS",
         "crashed": "crashed", "not installed": "not installed",
         "not testable": "not testable"}


@dataclass
class Table:
    headers: list[str]
    rows: list[tuple[str, str, list[tuple[str, str]]]]  # driver, variant, [(outcome, label)]
    notes: list[str]  # numbered errors, in the order the labels cite them
    fixes: list[str]  # "driver on endpoints: the fix that made it work"
    rescued: list[str]  # "driver variant on endpoint: max_prepared_statements=N"
    unavailable: list[str]  # "driver: not installed (reason)"


def title(matrix: Matrix) -> str:
    return f"Drivers through each endpoint: lab {matrix.lab.get('name', '?')!r}"


def header_lines(matrix: Matrix) -> list[str]:
    lab = matrix.lab
    lines = [
        f"tier {lab.get('tier')}, pool size {lab.get('pool_size')}, pool sharing "
        f"{lab.get('pool_sharing')}; max_prepared_statements: dedicated "
        f"{lab.get('dedicated_max_prepared_statements')}, shared transaction "
        f"{lab.get('shared_max_prepared_statements')}; TLS "
        f"{'enforced' if lab.get('ssl_enforce') else 'not used by the matrix'}; network "
        f"{lab.get('network')}",
        "workload: 2 clients at once; SELECT $1::int + 1 run 8 times each, taking turns; then "
        "client a holds a transaction while b queries; then b holds a's old backend while a "
        "queries; pools drained before each cell; "
        f"timeout {matrix.timeout_s:g} s per cell",
    ]
    if matrix.prepared is not None:
        lines.append(f"--prepared {matrix.prepared}: failing pooler cells re-run with "
                     f"max_prepared_statements={matrix.prepared} set at runtime")
    versions = sorted({f"{k} {v}" for d in matrix.drivers for k, v in d.versions.items()},
                      key=str.lower)
    if versions:
        lines.append("versions: " + ", ".join(versions))
    tally = counts(matrix)
    lines.append(f"{sum(tally.values())} cells in {matrix.seconds:.0f} s: " +
                 ", ".join(f"{n} {k}" for k, n in sorted(tally.items(), key=lambda kv: -kv[1])))
    if matrix.interrupted:
        lines.append("INTERRUPTED: the cells not run are marked 'not run'")
    return lines


def _error_text(cell: Cell) -> str:
    text = f"{cell.error_class}: {cell.message}" if cell.error_class else cell.message
    return f"{text} (at {cell.where})" if cell.where else text


def table(matrix: Matrix) -> Table:
    notes: list[str] = []
    rows = []
    fixes, rescued, unavailable = [], [], []
    for d in matrix.drivers:
        if d.unavailable:
            unavailable.append(f"{d.title}: {d.unavailable_outcome}: {d.unavailable}")
        for i, row in enumerate(d.rows):
            labels = []
            saved: dict[str, list[str]] = {}  # rescued_by -> endpoints, for this row
            for ep in matrix.endpoints:
                cell = row.cells.get(ep)
                if d.unavailable:
                    labels.append((d.unavailable_outcome, SHORT[d.unavailable_outcome]))
                    continue
                if cell is None:
                    labels.append(("not run", "not run"))
                    continue
                label = SHORT.get(cell.outcome, cell.outcome)
                if cell.outcome != WORKS:
                    text = _error_text(cell)
                    if text not in notes:
                        notes.append(text)
                    label += f" [{notes.index(text) + 1}]"
                if cell.rescued_by:
                    label += " *"
                    saved.setdefault(cell.rescued_by, []).append(ep)
                labels.append((cell.outcome, label))
            rescued += [f"{d.title}, {row.label}, on {', '.join(eps)}: works with {setting}"
                        for setting, eps in saved.items()]
            variant = row.label + (" [fix]" if row.fix else "")
            rows.append((d.title if i == 0 else "", variant, labels))
        fixes += _fixes(matrix, d)
        if d.unavailable and not d.rows:
            outcome = d.unavailable_outcome
            rows.append((d.title, "-", [(outcome, SHORT[outcome])] * len(matrix.endpoints)))
    return Table(["driver", "variant", *matrix.endpoints], rows, notes, fixes, rescued,
                 unavailable)


def _fixes(matrix: Matrix, d) -> list[str]:
    """Where the driver's first row (its defaults, or the pitfall its file leads with) fails,
    the fix rows that work there."""
    if d.unavailable or not d.rows:
        return []
    first = d.rows[0]
    broken = [ep for ep, cell in first.cells.items() if cell.outcome in (FAILS, WRONG, "hangs")]
    found: dict[str, list[str]] = {}
    for row in d.rows[1:]:
        eps = [ep for ep in broken if row.fix and row.cells.get(ep)
               and row.cells[ep].outcome == WORKS]
        if eps:
            found.setdefault(row.fix, []).extend(eps)
    lines = [f"{d.title} on {', '.join(eps)}: {fix}" for fix, eps in found.items()]
    left = [ep for ep in broken if not any(ep in eps for eps in found.values())]
    if left:
        lines.append(f"{d.title} on {', '.join(left)}: none of its fixes here works there")
    return lines


def text(matrix: Matrix) -> str:
    t = table(matrix)
    out = [title(matrix), *("  " + ln for ln in header_lines(matrix)), ""]
    grid = [t.headers] + [[drv, var, *(lbl for _, lbl in cells)] for drv, var, cells in t.rows]
    widths = [max(len(r[i]) for r in grid) for i in range(len(t.headers))]
    for j, r in enumerate(grid):
        out.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        if j == 0:
            out.append("  ".join("-" * w for w in widths))
    out += _sections(t, lambda s: s)
    return "\n".join(out) + "\n"


def _sections(t: Table, fmt) -> list[str]:
    out = []
    if t.notes:
        out += ["", fmt("What failed, in the driver's own words:")]
        out += [f"  [{i}] {n}" for i, n in enumerate(t.notes, 1)]
    if t.fixes:
        out += ["", fmt("The fix that made it work:")] + [f"  - {f}" for f in t.fixes]
    if t.rescued:
        out += ["", fmt("Rescued by the pooler setting (marked *):")]
        out += [f"  - {r}" for r in t.rescued]
    if t.unavailable:
        out += ["", fmt("Not run (not a failure of any endpoint):")]
        out += [f"  - {u}" for u in t.unavailable]
    return out


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("*", "\\*").replace("_", "\\_")


def markdown(matrix: Matrix) -> str:
    t = table(matrix)
    out = [f"# {title(matrix)}", ""] + [f"- {_md(ln)}" for ln in header_lines(matrix)] + [""]
    out.append("| " + " | ".join(t.headers) + " |")
    out.append("|" + "---|" * len(t.headers))
    for drv, var, cells in t.rows:
        out.append("| " + " | ".join([_md(drv), _md(var), *(_md(lbl) for _, lbl in cells)])
                   + " |")
    for line in _sections(t, lambda s: f"**{s}**"):
        if line.startswith("  [") or line.startswith("  - "):
            body = line.strip()
            out.append(("1. " + _md(body.split("] ", 1)[1])) if body.startswith("[")
                       else "- " + _md(body[2:]))
        else:
            out.append(line)
    return "\n".join(out) + "\n"


COLORS = {"works": "#e6f4ea", "fails": "#fde7e9", "wrong": "#fde7e9", "hangs": "#fff4e5",
          "crashed": "#f1f1f1", "not installed": "#f1f1f1", "not testable": "#f1f1f1",
          "not run": "#ffffff"}


def html(matrix: Matrix) -> str:
    from lab.report import CSS

    e = htmlmod.escape
    t = table(matrix)
    out = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{e(title(matrix))}</title>",
           f"<style>{CSS} td.cell {{ white-space: nowrap; }}</style></head><body>",
           f"<h1>{e(title(matrix))}</h1>", "<ul>"]
    out += [f"<li>{e(ln)}</li>" for ln in header_lines(matrix)] + ["</ul>"]
    out.append('<div class="scroll"><table><tr>' +
               "".join(f"<th>{e(h)}</th>" for h in t.headers) + "</tr>")
    for drv, var, cells in t.rows:
        tds = "".join(f'<td class="cell" style="background:{COLORS.get(o, "#fff")}">{e(lbl)}'
                      "</td>" for o, lbl in cells)
        out.append(f"<tr><td><strong>{e(drv)}</strong></td><td>{e(var)}</td>{tds}</tr>")
    out.append("</table></div>")
    if t.notes:
        out.append("<h2>What failed, in the driver's own words</h2><ol>" +
                   "".join(f"<li><code>{e(n)}</code></li>" for n in t.notes) + "</ol>")
    for heading, items in (("The fix that made it work", t.fixes),
                           ("Rescued by the pooler setting (marked *)", t.rescued),
                           ("Not run (not a failure of any endpoint)", t.unavailable)):
        if items:
            out.append(f"<h2>{e(heading)}</h2><ul>" +
                       "".join(f"<li>{e(i)}</li>" for i in items) + "</ul>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write(matrix: Matrix, reports_dir: Path) -> Path:
    """clients.json, clients.md and clients.html in a new ``clients-<time>`` folder."""
    import json

    from lab.state import atomic_write

    stamp = matrix.started.replace("-", "").replace(":", "").replace("T", "-").rstrip("Z")
    folder = reports_dir / f"clients-{stamp}"
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "clients.json", json.dumps(matrix.to_json(), indent=2) + "\n", 0o644)
    atomic_write(folder / "clients.md", markdown(matrix), 0o644)
    atomic_write(folder / "clients.html", html(matrix), 0o644)
    return folder
