"""`lm-eval-noise`: the package's command line. Each subcommand's module is imported only
when it runs, so `lm-eval-noise --help` stays fast."""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module with main(argv), help)
COMMANDS = {
    "run": (".run_cli", "run lm_eval (every lm_eval flag) with hf-noise and this package's tasks"),
    "sweep": (".sweep", "a grid of methods through the harness -> leaderboard, table, plots"),
    "score": (".score_cli", "reference log-probs of the answers in --log_samples files"),
    "covariance": (".covariance", "residual covariance at a layer and its square root, for noise_cov_sqrt"),
    "norms": (".norms", "reference norm of the embedding and of every layer, to choose noise_norm"),
    "vectors": (".vectors", "export the per-sequence noise vector of every sample of a run"),
    "viz": (".viz", "one self-contained HTML page of the worst answers by reference log-prob"),
    "demo": (".demo", "the whole pipeline on a tiny model trained in seconds, offline"),
    "bench": (".bench", "hot paths against a baseline in the same run: noise, executor, selfbleu, scoring"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="lm-eval-noise",
        description="Noise injection into frozen LMs, evaluated with lm-evaluation-harness.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        commands.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] not in COMMANDS:
        parser.print_help()
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    module, _ = COMMANDS[argv[0]]
    return importlib.import_module(module, __package__).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
