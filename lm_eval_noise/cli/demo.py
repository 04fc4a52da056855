"""`lm-eval-noise demo [-o demo]`: the whole pipeline, offline, in a few minutes on two
CPU cores. Trains a tiny Llama-style model on four HumanEval problems, runs a small
sweep through the harness (greedy, temperature 1.5, per-sequence embedding noise),
scores every answer and builds the viewer. Output: leaderboard.md, plots/*.png,
viz.html in --output.
"""

from __future__ import annotations

from pathlib import Path


def add_arguments(parser) -> None:
    parser.add_argument("-o", "--output", default="demo", help="output folder (default: demo)")


def run(args) -> int:
    from ..demo import run_demo

    return run_demo(Path(args.output))
