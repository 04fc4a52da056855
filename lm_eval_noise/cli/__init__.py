"""`lm-eval-noise`: the package's command line, one module per subcommand.

A subcommand module holds argument parsing only: `add_arguments(parser)` and
`run(args) -> exit code`, calling the library (tools/, harness/, demo/, bench/). It is
imported only when it runs, so `lm-eval-noise --help` stays fast. Conventions: kebab-case
flags; `--model` a hub id or local path; `-o/--output` the folder a command writes into;
a user error is one line on stderr and exit code 2 (`--debug` shows the traceback).
`run` is lm_eval itself and keeps lm_eval's own flags.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys

from ..errors import USER_ERRORS, InputError

# name -> (module, help)
COMMANDS = {
    "run": (".run", "run lm_eval (every lm_eval flag) with hf-noise and this package's tasks"),
    "tasks": (".tasks", "where the task YAMLs are (for lm_eval --include_path) and their names"),
    "sweep": (".sweep", "a grid of methods through the harness -> leaderboard, table, plots"),
    "score": (".score", "reference log-probs of the answers in --log_samples files"),
    "covariance": (".covariance", "residual covariance at a layer and its square root, for noise_cov_sqrt"),
    "norms": (".norms", "reference norm of the embedding and of every layer, to choose noise_norm"),
    "vectors": (".vectors", "export the per-sequence noise vector of every sample of a run"),
    "viz": (".viz", "one self-contained HTML page of the worst answers by reference log-prob"),
    "demo": (".demo", "the whole pipeline on a tiny model trained in seconds, offline"),
    "bench": (".bench", "hot paths against a baseline in the same run: noise, executor, selfbleu, scoring"),
}


class UsageError(InputError):
    """A bad argument or input file, reported as one line."""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = argv[:1] == ["--debug"]
    if debug:
        argv = argv[1:]
    top = argparse.ArgumentParser(
        prog="lm-eval-noise",
        description="Noise injection into frozen LMs, evaluated with lm-evaluation-harness.",
        epilog="--debug (before COMMAND, or after it for all but run): show the traceback of an error.",
    )
    commands = top.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        commands.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] not in COMMANDS:
        top.print_help()
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    name, rest = argv[0], argv[1:]
    module = importlib.import_module(COMMANDS[name][0], __package__)
    if name == "run":  # lm_eval parses its own flags
        return module.main(rest, debug=debug)
    parser = argparse.ArgumentParser(prog=f"lm-eval-noise {name}", description=module.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    module.add_arguments(parser)
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    try:
        args = parser.parse_args(rest)
    except SystemExit as exit_:  # --help, or a usage error argparse already printed
        return exit_.code or 0
    try:
        return module.run(args)
    except USER_ERRORS as error:
        if debug or args.debug:
            raise
        print(f"lm-eval-noise {name}: {one_line(error)} (--debug for the traceback)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lm-eval-noise {name}: interrupted", file=sys.stderr)
        return 130
    except OSError as error:
        if debug or args.debug or not cannot_write(error):
            raise
        print(f"lm-eval-noise {name}: {cannot_write(error)} (--debug for the traceback)", file=sys.stderr)
        return 1


def cannot_write(error: OSError) -> str | None:
    """One line for a write the machine refused (a full disk, a quota, a read-only file
    system), or None for any other OSError."""
    if error.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
        return None
    return f"cannot write {error.filename or 'a file'}: {error.strerror}; nothing half-written was left"


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if isinstance(error, InputError) else f"{type(error).__name__}: {text}"


if __name__ == "__main__":
    sys.exit(main())
