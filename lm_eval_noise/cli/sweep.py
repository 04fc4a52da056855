"""`lm-eval-noise sweep --config configs/NAME.yaml`: a grid of methods through the
harness, one leaderboard (leaderboard.json, leaderboard.md, plots/, and viz.html when
the config sets `viz: true`). A rerun skips finished runs made with the same settings,
redoes partial ones, and refuses in one line when a finished run was made otherwise
(tools/sweep/runner.py). Runs go one after another, N at a time on this machine
(`--parallel N`: a GPU each where there are GPUs), or as tasks of a Ray cluster
(`--ray ADDRESS`, `--ray local` starting one here; the `ray` extra). It first prints
its plan and an estimate of its duration from a timed probe (tools/sweep/plan.py);
`--dry-run` prints only that.
"""

from __future__ import annotations

import importlib.util
import signal
import sys
from pathlib import Path

from ..errors import InputError


def add_arguments(parser) -> None:
    parser.add_argument("--config", required=True, help="sweep YAML (see configs/)")
    parser.add_argument("-o", "--output", help="output folder (default: sweeps/NAME)")
    parser.add_argument("--quiet", action="store_true", help="keep the harness's output in the run logs only")
    parser.add_argument("--report-only", action="store_true", help="rebuild the leaderboard from finished runs")
    parser.add_argument("--parallel", type=int, default=1, metavar="N",
                        help="runs at once on this machine: each its own GPU(s) where there are GPUs, else the "
                             "cores over N each (default 1; the harness's output then stays in the run logs)")
    parser.add_argument("--ray", metavar="ADDRESS",
                        help="run each run as a task of this Ray cluster (`local`: start one on this machine; "
                             "`auto`: the one this machine belongs to); a run asks for the GPUs it needs, or "
                             "--cpus-per-run cores on a cluster without GPUs")
    parser.add_argument("--cpus-per-run", type=int, metavar="C",
                        help="with --ray: cores a run asks of a cluster without GPUs (default 1)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the plan (runs, problems x samples x new tokens, the estimate from a timed probe "
                             "of one run on two problems) and run nothing else")
    parser.add_argument("--no-probe", action="store_true", help="plan without the timed probe (no estimate)")


def run(args) -> int:
    from ..tools.sweep import (
        executor,
        finished_outcomes,
        gpus_per_run,
        load_sweep,
        pending_runs,
        plan_text,
        run_sweep,
        write_report,
        write_viewer,
    )

    sweep = load_sweep(args.config)
    output = Path(args.output or Path("sweeps") / sweep.name)
    output.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        if args.parallel != 1 or args.ray is not None or args.dry_run:
            raise InputError("--report-only runs nothing: --parallel, --ray and --dry-run do not apply")
        outcomes = finished_outcomes(sweep, output)
    else:
        pending_runs(sweep, output)  # a finished run made otherwise: refused before anything starts
        if sweep.engine == "vllm" and args.ray is None and importlib.util.find_spec("vllm") is None:
            raise InputError(f"{args.config}: engine: vllm needs vLLM here: pip install '.[vllm]' (GPU); on a CPU, "
                             "vLLM's CPU build (README, 'vLLM')")
        where = executor(args.parallel, args.ray, gpus_per_run(sweep, args.parallel > 1 or args.ray is not None),
                         args.cpus_per_run, echo=not args.quiet)
        signal.signal(signal.SIGTERM, _interrupt)  # the runs under way stop with the sweep, as on Ctrl-C
        try:
            print(plan_text(sweep, output, where, probe=not args.no_probe), file=sys.stderr, flush=True)
        except BaseException:
            where.close()
            raise
        if args.dry_run:
            where.close()
            return 0
        outcomes = run_sweep(sweep, output, executor=where)
    board = write_report(sweep, outcomes, output)
    if sweep.viz and write_viewer(output) is None:
        print("lm-eval-noise sweep: viz: no run scored its answers, so there is no viewer; run "
              "`lm-eval-noise score` on the samples, then `lm-eval-noise viz`", file=sys.stderr)
    failed = [o for o in outcomes if o.status == "failed"]
    print(f"\n{len(board['runs'])} runs in {output / 'leaderboard.md'}; {len(failed)} failed")
    for outcome in failed:
        print(f"  failed: {outcome.run.name}: {outcome.detail}", file=sys.stderr)
    return 1 if failed else 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")
