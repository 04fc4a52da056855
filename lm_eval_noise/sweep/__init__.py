"""`lm-eval-noise sweep --config configs/NAME.yaml`: a grid of methods, one leaderboard.

grid.py reads the config into runs, runner.py runs them through the harness
(resumably), report.py turns the results into leaderboard.json, leaderboard.md and
plots with bootstrap confidence intervals and paired comparisons with a baseline.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .grid import Run, Sweep, SweepConfigError, load_sweep
from .report import write_report
from .runner import run_sweep

__all__ = ["Run", "Sweep", "SweepConfigError", "load_sweep", "main", "run_sweep", "write_report"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lm-eval-noise sweep", description=__doc__)
    parser.add_argument("--config", required=True, help="sweep YAML (see configs/)")
    parser.add_argument("-o", "--output", help="output folder (default: sweeps/NAME)")
    parser.add_argument("--quiet", action="store_true", help="keep the harness's output in the run logs only")
    parser.add_argument("--report-only", action="store_true", help="rebuild the leaderboard from finished runs")
    args = parser.parse_args(argv)
    try:
        sweep = load_sweep(args.config)
    except SweepConfigError as error:
        print(f"lm-eval-noise sweep: {error}", file=sys.stderr)
        return 2
    output = Path(args.output or Path("sweeps") / sweep.name)
    output.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        from .runner import RunOutcome

        outcomes = [RunOutcome(run, "skipped", output / "runs" / run.run_id) for run in sweep.runs
                    if (output / "runs" / run.run_id / "DONE.json").exists()]
    else:
        outcomes = run_sweep(sweep, output, echo=not args.quiet)
    board = write_report(sweep, outcomes, output)
    if sweep.viz:
        _viewer(output)
    failed = [o for o in outcomes if o.status == "failed"]
    print(f"\n{len(board['runs'])} runs in {output / 'leaderboard.md'}; {len(failed)} failed")
    for outcome in failed:
        print(f"  failed: {outcome.run.name}: {outcome.detail}", file=sys.stderr)
    return 1 if failed else 0


def _viewer(output: Path) -> None:
    from ..viz import collect_rows, render, worst

    samples = sorted(output.glob("runs/*/*/samples_*.jsonl"))
    rows = collect_rows(samples, [])
    if rows:
        (output / "viz.html").write_text(render(worst(rows, 100)), encoding="utf-8")
