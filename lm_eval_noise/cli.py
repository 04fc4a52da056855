"""`lm-eval-noise`: the package's command line."""

from __future__ import annotations

import argparse
import sys


def _run(argv: list[str]) -> int:
    """lm_eval with hf-noise registered and this package's tasks on the include path."""
    import inspect

    from lm_eval.__main__ import cli_evaluate
    from lm_eval.tasks.manager import TaskManager

    from . import model  # noqa: F401  (registers hf-noise)
    from .resources import tasks_dir

    original_init = TaskManager.__init__
    signature = inspect.signature(original_init)

    def init_with_package_tasks(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        user_paths = bound.arguments.get("include_path")
        if user_paths is None:
            user_paths = []
        elif not isinstance(user_paths, (list, tuple)):
            user_paths = [user_paths]
        # Ours first, so a user's --include_path can override a task of the same name.
        bound.arguments["include_path"] = [str(tasks_dir()), *user_paths]
        original_init(*bound.args, **bound.kwargs)

    TaskManager.__init__ = init_with_package_tasks
    sys.argv = ["lm_eval", *argv]
    try:
        cli_evaluate()
    finally:
        TaskManager.__init__ = original_init
    return 0


def _bench(argv: list[str]) -> int:
    from .bench import main

    return main(argv)


def _score(argv: list[str]) -> int:
    from .score_cli import main

    return main(argv)


def _covariance(argv: list[str]) -> int:
    from .covariance import main

    return main(argv)


def _vectors(argv: list[str]) -> int:
    from .vectors import main

    return main(argv)


def _viz(argv: list[str]) -> int:
    from .viz import main

    return main(argv)


def _sweep(argv: list[str]) -> int:
    from .sweep import main

    return main(argv)


def _demo(argv: list[str]) -> int:
    from .demo import main

    return main(argv)


COMMANDS = {
    "run": (_run, "run lm_eval (every lm_eval flag) with hf-noise and this package's tasks"),
    "sweep": (_sweep, "a grid of methods through the harness -> leaderboard, table, plots"),
    "score": (_score, "reference log-probs of the answers in --log_samples files"),
    "covariance": (_covariance, "residual covariance at a layer and its square root, for noise_cov_sqrt"),
    "vectors": (_vectors, "export the per-sequence noise vector of every sample of a run"),
    "viz": (_viz, "one self-contained HTML page of the worst answers by reference log-prob"),
    "demo": (_demo, "the whole pipeline on a tiny model trained in seconds, offline"),
    "bench": (_bench, "hot paths against a baseline in the same run: noise, executor, selfbleu"),
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
    handler, _ = COMMANDS[argv[0]]
    return handler(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
