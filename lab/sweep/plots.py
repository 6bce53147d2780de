"""The figures of a sweep report: each measure against the swept variable, one line per
endpoint with its 95% interval as a band, one column of panels per facet, the documented
limits and the objective as lines. Drawn with the run report's style, colours and layout
(``lab.plots``).

0. the headline: failures and peak backends, where an endpoint gives way;
1. latency: p50, p95 and p99 of total time (log axis);
2. failures: the share of arrivals that failed (by class when several occurred) and the share
   never started;
3. connections: peak Postgres backends with max_connections and pool_size drawn as limits,
   peak clients waiting for a server connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator

from lab import plots
from lab.sweep.analysis import MEASURES, PARAM_UNITS, Curve, SweepAnalysis, facet_text

PANEL_H = 3.3
BAND_ALPHA = 0.16


def render(a: SweepAnalysis, out_dir: Path | str) -> list[plots.FigureFile]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for kind, (title, rows, caption) in figure_specs(a).items():
        with matplotlib.rc_context(plots.STYLE):
            fig = draw(a, title, rows)
            name = f"sweep-{kind}"
            png, svg = out_dir / f"{name}.png", out_dir / f"{name}.svg"
            fig.savefig(png, format="png", dpi=plots.DPI)
            fig.savefig(svg, format="svg", metadata={"Date": None})
        files.append(plots.FigureFile(name, f"sweep-{kind}", a.plan.scenario, title, caption,
                                      png, svg))
    return files


def figure_specs(a: SweepAnalysis) -> dict[str, tuple[str, list[str], str]]:
    x = a.x.name
    classes = list(dict.fromkeys(c for p in a.finished for g in p.analysis.groups
                                 for c in g.errors))
    failure_rows = ["error_rate"] + ([f"class:{c}" for c in classes] if len(classes) > 1
                                     else []) + ["not_started_rate"]
    band = ("Bands are 95% intervals (bootstrap over each point's one-second windows, as in "
            "its run report); a missing marker is a point that failed or has not run.")
    return {
        "headline": (f"Where each endpoint gives way: {a.plan.scenario} against {x}",
                     ["error_rate", "peak_backends"],
                     f"The share of scheduled arrivals that failed, and the peak of Postgres "
                     f"backends with max_connections and pool_size as limits, at each {x}: an "
                     "endpoint that needs a backend per client fails where its backends meet "
                     f"max_connections. {band}"),
        "latency": (f"Latency against {x}: {a.plan.scenario}", ["p50", "p95", "p99"],
                    f"p50, p95 and p99 of total time (from the intended start, successful "
                    f"requests only) at each {x}, one line per endpoint. {band}"),
        "failures": (f"Failures against {x}: {a.plan.scenario}", failure_rows,
                     "The share of scheduled arrivals that failed"
                     + (" (in all, then by class)" if len(classes) > 1 else
                        f" ({classes[0]})" if classes else "")
                     + f" and the share never started, at each {x}. " + band),
        "connections": (f"Connections against {x}: {a.plan.scenario}",
                        ["peak_backends", "peak_waiting"],
                        "Peak Postgres client backends (the dedicated pooler's own auth logins "
                        "apart) with max_connections and pool_size drawn as limits, and peak "
                        "clients waiting for a server connection in the endpoint's pooler "
                        "(none for direct)."),
    }


def _row_label(row: str) -> tuple[str, str]:
    if row.startswith("class:"):
        return f"failed: {row.removeprefix('class:')}", "% of scheduled"
    return MEASURES[row]


def _positions(a: SweepAnalysis) -> tuple[np.ndarray, list[str], bool]:
    values = list(a.x.values)
    if a.x.numeric:
        return np.array(values, dtype=float), [f"{v:g}" for v in values], True
    return np.arange(len(values), dtype=float), [str(v) for v in values], False


def draw(a: SweepAnalysis, title: str, rows: Sequence[str]):
    facets = list(dict.fromkeys(c.facet for c in a.curves))
    ncols = len(facets)
    fig, axes, layout = plots._figure(len(rows) * ncols, ncols=ncols, panel_h=PANEL_H,
                                      row_gap=0.85)
    pos, ticklabels, numeric = _positions(a)
    curves_by_facet = {f: [c for c in a.curves if c.facet == f] for f in facets}
    for r, row in enumerate(rows):
        label, unit = _row_label(row)
        for c, facet in enumerate(facets):
            ax = axes[r * ncols + c]
            where = facet_text(facet).strip()
            ax.set_title(f"{label}" + (f", {where}" if where else ""), loc="left")
            for curve in curves_by_facet[facet]:
                _line(ax, curve, row, pos, a)
            _limits(ax, a, curve_points(curves_by_facet[facet]), row, pos, numeric)
            _objective(ax, a, row)
            _missing(ax, curve_points(curves_by_facet[facet]), pos)
            ax.set_xticks(pos)
            ax.set_xticklabels(ticklabels)
            if numeric and len(pos) > 1:
                span = pos.max() - pos.min()
                ax.set_xlim(pos.min() - 0.05 * span, pos.max() + 0.05 * span)
            elif not numeric:
                ax.set_xlim(-0.4, len(pos) - 0.6)
            if unit == "ms":
                hold = _hold_ms(a)
                if hold is not None:
                    plots._draw_hold(ax, hold, fontsize=11)
                ax.set_ylabel("ms")
            elif unit.startswith("%"):
                ax.yaxis.set_major_formatter(FuncFormatter(_percent))
                ax.set_ylabel("of scheduled")
            else:
                ax.yaxis.set_major_locator(MaxNLocator(integer=True))
                ax.set_ylabel(unit)
            if r == len(rows) - 1:
                ax.set_xlabel(_x_label(a))
        _same_y(axes[r * ncols:(r + 1) * ncols], unit)
    handles = _handles(a)
    return plots._finish(fig, layout, title, handles)


def curve_points(curves: list[Curve]) -> list[Any]:
    return curves[0].points if curves else []


def _x_label(a: SweepAnalysis) -> str:
    if a.x.key == "users":
        phases = {c.phase for c in a.curves}
        if phases == {"serverless"}:
            return "users (concurrent invocations at most)"
        if phases == {"persistent"}:
            return "users (app servers)"
    unit = PARAM_UNITS.get(a.x.name) if a.x.kind == "load" else None
    return f"{a.x.name} ({unit})" if unit else a.x.name


def _line(ax, curve: Curve, row: str, pos: np.ndarray, a: SweepAnalysis) -> None:
    estimates = curve.measure(row)
    values = np.array([e.value for e in estimates], dtype=float)
    low = np.array([e.low for e in estimates], dtype=float)
    high = np.array([e.high for e in estimates], dtype=float)
    c = plots.color(curve.endpoint)
    style = "-" if curve.phase == _phases(a)[0] else "--"
    marker, size = _marker(a, curve.endpoint)
    if row in ("p50", "p95", "p99"):
        values = np.where(values > 0, values, np.nan)
        low = np.where(low > 0, low, np.nan)
    ax.plot(pos, values, color=c, linestyle=style, marker=marker, markersize=size, zorder=3,
            markerfacecolor="white" if size > 8 else c, markeredgewidth=2)
    band = np.isfinite(low) & np.isfinite(high)
    if band.sum() >= 1:
        ax.fill_between(pos, np.where(band, low, np.nan), np.where(band, high, np.nan),
                        color=c, alpha=BAND_ALPHA, linewidth=0, zorder=2)
        for i in np.flatnonzero(band & ~_neighbour(band)):  # a lone interval: a whisker
            ax.plot([pos[i], pos[i]], [low[i], high[i]], color=c, alpha=0.5, linewidth=6,
                    solid_capstyle="butt", zorder=2)


MARKERS = (("o", 11), ("s", 6), ("^", 8), ("D", 5))  # overlapping points stay visible


def _marker(a: SweepAnalysis, endpoint: str) -> tuple[str, float]:
    i = list(a.plan.endpoints).index(endpoint) if endpoint in a.plan.endpoints else 0
    return MARKERS[i % len(MARKERS)]


def _missing(ax, points: list[Any], pos: np.ndarray) -> None:
    """'not measured' where a point failed or has not run."""
    for x, p in zip(pos, points, strict=True):
        if p is None:
            ax.annotate("not measured", (x, 0.02), xycoords=("data", "axes fraction"),
                        ha="center", va="bottom", fontsize=11, color="#777777",
                        rotation=90)


def _neighbour(mask: np.ndarray) -> np.ndarray:
    """Where an element of ``mask`` has a True neighbour (a band needs two points)."""
    left = np.concatenate([[False], mask[:-1]])
    right = np.concatenate([mask[1:], [False]])
    return left | right


def _phases(a: SweepAnalysis) -> list[str]:
    return list(dict.fromkeys(c.phase for c in a.curves))


def _percent(value: float, _pos=None) -> str:
    return f"{100 * value:.3g}%"


def _hold_ms(a: SweepAnalysis) -> float | None:
    """The scenario's client-side work per invocation (hold_ms), when every point has the
    same: total time includes it."""
    holds = {plots.hold_ms(p.analysis, p.analysis.scenarios[0]) for p in a.finished
             if p.analysis.scenarios}
    return holds.pop() if len(holds) == 1 else None


def _data_of(ax) -> np.ndarray:
    """Every y value drawn in a panel: its lines and its bands (limit lines included)."""
    parts = [np.asarray(ln.get_ydata(), dtype=float) for ln in ax.lines]
    for coll in ax.collections:
        for path in coll.get_paths():
            parts.append(np.asarray(path.vertices[:, 1], dtype=float))
    data = np.concatenate(parts) if parts else np.array([])
    return data[np.isfinite(data)]


def _same_y(axes: Sequence, unit: str) -> None:
    """One y range for a row of panels, so facets compare at a glance: latency on a log axis
    when it spans more than a factor of 10, else linear from 0; counts and shares from 0."""
    data = np.concatenate([_data_of(ax) for ax in axes]) if axes else np.array([])
    if unit == "ms":
        data = data[data > 0]
        if len(data) == 0:
            return
        lo, hi = float(data.min()), float(data.max())
        for ax in axes:
            if hi / lo >= 10:
                ax.set_yscale("log")
                plots._log_axis(ax.yaxis)
                ax.set_ylim(lo / 1.5, hi * 1.5)
            else:
                ax.set_ylim(0, hi * 1.15)
        return
    top = float(data.max()) if len(data) else 0.0
    floor = 0.02 if unit.startswith("%") else 2.0
    top = max(top * 1.12, floor)
    for ax in axes:
        ax.set_ylim(-0.03 * top, top)  # markers at 0 drawn whole


def _limits(ax, a: SweepAnalysis, points: list[Any], row: str, pos: np.ndarray,
            numeric: bool) -> None:
    """max_connections and pool_size on the backends panel (a line when constant, a dashed
    step where it changes with x); with users on x, max_connections as a vertical line on the
    failure panels (beyond it direct has no backend left)."""
    if row == "peak_backends":
        for key in ("max_connections", "pool_size"):
            values = [p.limit(key) if p is not None else None for p in points]
            known = [v for v in values if v is not None]
            if not known:
                continue
            if len(set(known)) == 1:
                plots._limit_line(ax, key, known[0], fontsize=11, lw=1.5)
            else:
                ys = np.array([np.nan if v is None else v for v in values], dtype=float)
                ax.plot(pos, ys, color=plots.LIMIT_COLORS[key], linestyle=plots.LIMIT_STYLE,
                        linewidth=1.5, marker="_", markersize=22, zorder=1)
                last = int(np.flatnonzero(np.isfinite(ys))[-1])
                ax.annotate(f"{key} (each point's)", (pos[last], ys[last]), xytext=(-8, 5),
                            textcoords="offset points", ha="right", va="bottom", fontsize=11,
                            color=plots.LIMIT_COLORS[key], fontweight="bold", zorder=6,
                            bbox={"boxstyle": "square,pad=0.1", "facecolor": "white",
                                  "edgecolor": "none", "alpha": 0.75})
    elif a.x.key == "users" and numeric and (row in ("error_rate", "not_started_rate")
                                             or row.startswith("class:")):
        known = {p.limit("max_connections") for p in points if p is not None} - {None}
        if len(known) == 1:
            value = known.pop()
            if pos.min() <= value <= pos.max():
                ax.axvline(value, color=plots.LIMIT_COLORS["max_connections"],
                           linestyle=plots.LIMIT_STYLE, linewidth=1.5, zorder=1)
                ax.annotate(f"max_connections {value}", (value, 1.0),
                            xycoords=("data", "axes fraction"), xytext=(4, -4),
                            textcoords="offset points", ha="left", va="top", fontsize=11,
                            color=plots.LIMIT_COLORS["max_connections"], fontweight="bold")


OBJECTIVE_COLOR = "#2E7D32"
OBJECTIVE_STYLE = (0, (6, 3))


def _objective(ax, a: SweepAnalysis, row: str) -> None:
    """The objective's bound on its own panel (p99 < 100 ms on the p99 panel, errors on the
    failed one), labelled on the line."""
    if a.objective is None:
        return
    metric = {"error_rate": "errors", "not_started_rate": "not_started"}.get(row, row)
    for c in a.objective.conditions:
        if c.metric != metric:
            continue
        ax.axhline(c.value, color=OBJECTIVE_COLOR, linestyle=OBJECTIVE_STYLE, linewidth=1.6,
                   zorder=1)
        coords = ("axes fraction", "data")
        plots._later(ax, f"objective {c.text}",
                     [(x, c.value, coords, dx, dy, ha, va) for dy, va in ((3, "bottom"),
                                                                         (-3, "top"))
                      for x, dx, ha in ((0.99, 0, "right"), (0.01, 0, "left"),
                                        (0.5, 0, "center"))],
                     priority=0, fontsize=11, color=OBJECTIVE_COLOR, fontweight="bold",
                     zorder=6, bbox={"boxstyle": "square,pad=0.1", "facecolor": "white",
                                     "edgecolor": "none", "alpha": 0.75})


def _handles(a: SweepAnalysis) -> list:
    handles: list = []
    phases = _phases(a)
    for endpoint in a.plan.endpoints:
        for phase in phases:
            style = "-" if phase == phases[0] else "--"
            label = endpoint if len(phases) == 1 else f"{endpoint} ({phase})"
            marker, size = _marker(a, endpoint)
            handles.append(Line2D([], [], color=plots.color(endpoint), linestyle=style,
                                  marker=marker, markersize=size, markeredgewidth=2,
                                  markerfacecolor="white" if size > 8 else plots.color(endpoint),
                                  label=label))
    handles.append(Patch(facecolor="#777777", alpha=0.3, label="95% interval"))
    return handles

