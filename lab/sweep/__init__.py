"""On top of the pipeline: `lab sweep`, the benchmark matrix in one command (stages 3 to 8
once per point: the stack, a run, its analysis; then curves across the points).

One module per part, along the data flow:

* ``plan``: ``--vary`` axes (lab settings vs load), points ordered to minimise restarts, the
  objective, presets (``sweeps/``), the estimate;
* ``manifest``: sweep/1 (``sweep.json``), written as points start and end, read by
  ``--resume`` and the report;
* ``execute``: the lab brought up with each point's settings (``lab.stack``), each point one
  run (``lab.run.run``), failures recorded, Ctrl-C kept;
* ``analysis``: each point's own analysis lined up as curves; knees, ratios, capacity;
* ``plots`` and ``report``: the curves and the report (``lab.plots`` style, ``lab.report``
  writers).
"""

from __future__ import annotations

from lab.sweep.analysis import SweepAnalysis, analyze, to_json
from lab.sweep.execute import SweepRequest, SweepResult, build_plan, sweep
from lab.sweep.manifest import is_sweep_dir
from lab.sweep.plan import Preset, SweepPlan, parse_objective, parse_vary, presets
from lab.sweep.report import build_sweep_report

__all__ = ["Preset", "SweepAnalysis", "SweepPlan", "SweepRequest", "SweepResult", "analyze",
           "build_plan", "build_sweep_report", "is_sweep_dir", "parse_objective",
           "parse_vary", "presets", "sweep", "to_json"]
