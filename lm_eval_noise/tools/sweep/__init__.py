"""Sweeps: a grid of methods, one leaderboard.

grid.py reads the config into runs, plan.py says what they will cost, runner.py runs
them through the harness (resumably; executors.py: where they execute), report.py
turns the results into leaderboard.json, leaderboard.md and plots with bootstrap
confidence intervals and paired comparisons with a baseline.
"""

from __future__ import annotations

from pathlib import Path

from ..files import write_text
from .executors import executor
from .grid import Run, Sweep, SweepConfigError, load_sweep
from .plan import plan_text
from .report import write_report
from .runner import RunOutcome, finished_outcomes, gpus_per_run, pending_runs, run_sweep

__all__ = ["Run", "RunOutcome", "Sweep", "SweepConfigError", "executor", "finished_outcomes", "gpus_per_run",
           "load_sweep", "pending_runs", "plan_text", "run_sweep", "sample_files", "write_report", "write_viewer"]


def sample_files(output: Path) -> list[Path]:
    """The samples files of every run of the sweep in `output`."""
    return sorted(output.glob("runs/*/*/samples_*.jsonl"))


def write_viewer(output: Path, score_files: list[Path] = ()) -> Path | None:
    """viz.html over the sweep's scored answers: scored in the run (tasks such as
    lmsys_chat_noise) or in `score_files` (`lm-eval-noise score`); None when there are none."""
    from ..viz import collect_rows, render, worst

    rows = collect_rows(sample_files(output), list(score_files))
    if not rows:
        return None
    write_text(output / "viz.html", render(worst(rows, 100)))
    return output / "viz.html"
