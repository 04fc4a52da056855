"""`lm-eval-noise viz --samples S... [--scores C...]`: one self-contained HTML page
(viz.html in --output) of the worst answers by reference log-prob.

Per-token log-probs come from `--scores` (the output of `lm-eval-noise score`) or,
without it, from samples of a task that scores in the run (lmsys_chat_noise). The page
embeds everything (no network): answers sorted from the worst mean token log-prob,
`--top-n` per run, filters by run and noise scale, tokens coloured by log-prob.
"""

from __future__ import annotations

from pathlib import Path

from ..tools.files import write_text
from . import UsageError


def add_arguments(parser) -> None:
    parser.add_argument("--samples", nargs="+", required=True, help="samples_*.jsonl of one or more runs")
    parser.add_argument("--scores", nargs="*", default=[], help="output of lm-eval-noise score")
    parser.add_argument("--top-n", type=int, default=100, help="worst answers kept per run (default 100)")
    parser.add_argument("-o", "--output", default=".", help="output folder (default: the current one)")


def run(args) -> int:
    from ..tools.viz import collect_rows, render, worst

    try:
        rows = collect_rows([Path(p) for p in args.samples], [Path(p) for p in args.scores])
    except (KeyError, IndexError, TypeError, ValueError) as error:  # ValueError: not JSON
        raise UsageError(f"cannot read the inputs: {type(error).__name__}: {error}") from None
    if not rows:
        raise UsageError("no scored answers; pass --scores from `lm-eval-noise score`, "
                         "or samples of a task that scores (lmsys_chat_noise)")
    shown = worst(rows, args.top_n)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    write_text(output / "viz.html", render(shown))
    print(f"wrote {output / 'viz.html'}: the {len(shown)} worst of {len(rows)} scored answers "
          f"(at most {args.top_n} per run)")
    for run_name in sorted({row["run"] for row in rows}):
        total, kept = sum(r["run"] == run_name for r in rows), sum(r["run"] == run_name for r in shown)
        if kept < total:
            print(f"  {run_name}: {total - kept} better answers not shown")
    return 0
