"""`lm-eval-noise sweep --config configs/NAME.yaml`: a grid of methods through the
harness, one leaderboard (leaderboard.json, leaderboard.md, plots/, and viz.html when
the config sets `viz: true`). A rerun skips finished runs made with the same settings,
redoes partial ones, and refuses in one line when a finished run was made otherwise
(tools/sweep/runner.py).
"""

from __future__ import annotations

import sys
from pathlib import Path


def add_arguments(parser) -> None:
    parser.add_argument("--config", required=True, help="sweep YAML (see configs/)")
    parser.add_argument("-o", "--output", help="output folder (default: sweeps/NAME)")
    parser.add_argument("--quiet", action="store_true", help="keep the harness's output in the run logs only")
    parser.add_argument("--report-only", action="store_true", help="rebuild the leaderboard from finished runs")


def run(args) -> int:
    from ..tools.sweep import finished_outcomes, load_sweep, run_sweep, write_report, write_viewer

    sweep = load_sweep(args.config)
    output = Path(args.output or Path("sweeps") / sweep.name)
    output.mkdir(parents=True, exist_ok=True)
    outcomes = finished_outcomes(sweep, output) if args.report_only else run_sweep(sweep, output, echo=not args.quiet)
    board = write_report(sweep, outcomes, output)
    if sweep.viz and write_viewer(output) is None:
        print("lm-eval-noise sweep: viz: no run scored its answers, so there is no viewer; run "
              "`lm-eval-noise score` on the samples, then `lm-eval-noise viz`", file=sys.stderr)
    failed = [o for o in outcomes if o.status == "failed"]
    print(f"\n{len(board['runs'])} runs in {output / 'leaderboard.md'}; {len(failed)} failed")
    for outcome in failed:
        print(f"  failed: {outcome.run.name}: {outcome.detail}", file=sys.stderr)
    return 1 if failed else 0
