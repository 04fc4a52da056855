"""Sweeps: a grid of methods, one leaderboard.

grid.py reads the config into runs, runner.py runs them through the harness
(resumably), report.py turns the results into leaderboard.json, leaderboard.md and
plots with bootstrap confidence intervals and paired comparisons with a baseline.
"""

from __future__ import annotations

from pathlib import Path

from .grid import Run, Sweep, SweepConfigError, load_sweep
from .report import write_report
from .runner import RunOutcome, finished_outcomes, run_sweep

__all__ = ["Run", "RunOutcome", "Sweep", "SweepConfigError", "finished_outcomes", "load_sweep", "run_sweep",
           "write_report", "write_viewer"]


def write_viewer(output: Path) -> Path | None:
    """viz.html over the sweep's scored answers; None when no run scored its answers
    (only tasks that score in the run, such as lmsys_chat_noise, feed the viewer)."""
    from ..viz import collect_rows, render, worst

    rows = collect_rows(sorted(output.glob("runs/*/*/samples_*.jsonl")), [])
    if not rows:
        return None
    (output / "viz.html").write_text(render(worst(rows, 100)), encoding="utf-8")
    return output / "viz.html"
