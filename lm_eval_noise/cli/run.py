"""`lm-eval-noise run`: lm_eval with hf-noise registered and this package's tasks on the
include path (ahead of any --include_path of the user's, which can override them).

It adds to lm_eval: `--model hf-noise` (model_args: README, "Model arguments"), the
tasks humaneval_noise*, lmsys_chat_noise* (`lm-eval-noise tasks` lists them and prints
where their YAMLs are), and checks made in a second, before anything loads: the noise
engines' arguments, the output path (a folder that can be written), and the task names (a typo
gets the closest names). lm_eval's own thousands of task YAMLs are indexed only when a
requested task is not this package's or the user's (about a minute on two cores). A
result that could not be saved is exit code 1, not a warning; an input error is one line
with exit code 2 (`lm-eval-noise --debug run` for the traceback). Every other flag is
lm_eval's own: see below.
"""

from __future__ import annotations

import argparse
import difflib
import inspect
import logging
import sys
from pathlib import Path

from ..errors import USER_ERRORS, InputError

_INTERRUPTED = 130  # as a shell reports a process ended by Ctrl-C


def main(argv: list[str], debug: bool = False) -> int:
    if any(flag in argv for flag in ("-h", "--help")):
        print(__doc__)
        return _show_lm_eval_help()
    try:
        known = _known_arguments(argv)
        _check_output_path(known.output_path)
        _check_model_args(known)
        _check_unsafe_tasks(known)
        return _run_lm_eval(argv, known)
    except USER_ERRORS as error:
        if debug:
            raise
        from . import one_line

        print(f"lm-eval-noise run: {one_line(error)} (--debug before run for the traceback)", file=sys.stderr)
        return 2
    except OSError as error:
        from . import cannot_write

        if debug or not cannot_write(error):
            raise
        print(f"lm-eval-noise run: {cannot_write(error)} (--debug before run for the traceback)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if debug:
            raise
        print("lm-eval-noise run: interrupted; nothing was saved past the last task lm_eval finished",
              file=sys.stderr)
        return _INTERRUPTED


def _known_arguments(argv: list[str]) -> argparse.Namespace:
    """The few of lm_eval's flags this command checks before lm_eval runs."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--model", default=None)
    parser.add_argument("--model_args", "-a", nargs="+", default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--tasks", "-t", nargs="+", default=None)
    parser.add_argument("--output_path", "-o", default=None)
    parser.add_argument("--confirm_run_unsafe_code", action="store_true")
    known, _ = parser.parse_known_args(argv)
    known.tasks = None if known.tasks is None else [t for part in known.tasks for t in part.split(",") if t]
    return known


def _show_lm_eval_help() -> int:
    from lm_eval.__main__ import cli_evaluate

    sys.argv = ["lm_eval", "run", "--help"]
    try:
        cli_evaluate()
    except SystemExit as done:
        return done.code or 0
    return 0


def _check_output_path(output_path: str | None) -> None:
    """lm_eval writes results into `output_path` (a folder), or beside it when it names a
    .json file, creating folders as needed; it only warns when it cannot, after the
    whole evaluation. The folder it would write to must be one it can create or write."""
    if output_path is None:
        return
    path = Path(output_path).expanduser()
    folder = path.parent if path.suffix == ".json" else path
    existing = folder
    while not existing.exists():
        if existing.is_symlink():  # a link to nothing: mkdir would fail there
            raise InputError(f"--output_path {output_path}: {existing} is a broken link")
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"--output_path {output_path}: {existing} is a file, not a folder "
                         f"(results go into a folder, or beside a file ending in .json)")
    import os

    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"--output_path {output_path}: {existing} is not writable")


_ENGINES = ("hf-noise", "vllm-noise")


def _check_unsafe_tasks(known: argparse.Namespace) -> None:
    """lm_eval refuses a task that runs generated code without the flag, after loading."""
    from ..harness.task_configs import unsafe_tasks

    unsafe = sorted(set(known.tasks or []) & unsafe_tasks())
    if unsafe and not known.confirm_run_unsafe_code:
        raise InputError(f"{', '.join(unsafe)} runs the generated code (in this package's sandbox): add "
                         "--confirm_run_unsafe_code")


def _check_model_args(known: argparse.Namespace) -> None:
    """The noise engines' own arguments (and hf-noise's near misses of HFLM's), checked in
    a second instead of after minutes of model loading; noise arguments given to another
    model are refused rather than passed to it."""
    if not known.model_args:
        return
    from lm_eval.utils import simple_parse_args_string

    from ..noise import NoiseSpec
    from ..noise.spec import OWNED_ARGS

    args: dict = {}
    for part in known.model_args:
        args.update(simple_parse_args_string(part))
    if known.model not in _ENGINES:
        ours = [key for key in args if key in OWNED_ARGS]
        if ours:
            raise InputError(f"{ours[0]}={args[ours[0]]!r} is a noise argument, which --model {known.model} does "
                             f"not take: use --model hf-noise (or vllm-noise)")
        return
    if known.model == "hf-noise":
        _check_hflm_names(args)
    if "device" in args and known.device is not None:
        raise InputError(f"{known.model}: `device` is given twice, in --model_args ({args['device']!r}) and as "
                         f"--device ({known.device!r}); pass it once, as --device")
    NoiseSpec.from_model_args(args, engine=known.model)


def _check_hflm_names(args: dict) -> None:
    """A misspelt HFLM argument (`dtpye=`) reaches from_pretrained, which fails after
    loading with a TypeError; one this close to an HFLM parameter is a typo."""
    from lm_eval.models.huggingface import HFLM

    from ..noise.spec import OWNED_ARGS

    known = [name for name in inspect.signature(HFLM.__init__).parameters if name not in ("self", "kwargs")]
    for key in args:
        if key in known or key in OWNED_ARGS or key == "random_prefix":
            continue
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.8)
        if close:
            raise InputError(f"hf-noise: unknown model argument {key}={args[key]!r}: did you mean {close[0]}?")


class _SaveFailures(logging.Handler):
    """lm_eval's warnings that it could not save results or samples (it goes on, and
    would exit 0 with the results lost)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("Could not save"):
            self.messages.append(record.getMessage())


def _run_lm_eval(argv: list[str], known: argparse.Namespace) -> int:
    from lm_eval.__main__ import cli_evaluate
    from lm_eval.tasks.manager import TaskManager

    from ..harness import model  # registers hf-noise

    original_init = TaskManager.__init__
    TaskManager.__init__ = _with_package_tasks(original_init, known.tasks)
    model.ANNOUNCE_INPUT_ERRORS = False  # reported by main() as one line
    save_failures = _SaveFailures()
    tracker_log = logging.getLogger("lm_eval.loggers.evaluation_tracker")
    tracker_log.addHandler(save_failures)
    sys.argv = ["lm_eval", "run", *argv]
    try:
        cli_evaluate()
    finally:
        TaskManager.__init__ = original_init
        model.ANNOUNCE_INPUT_ERRORS = True
        tracker_log.removeHandler(save_failures)
    if save_failures.messages:
        print(f"lm-eval-noise run: lm_eval could not save what it computed ({'; '.join(save_failures.messages)}; "
              f"its log above says why): check --output_path and the disk", file=sys.stderr)
        return 1
    return 0


def _with_package_tasks(original_init, requested: list[str] | None):
    """TaskManager.__init__ with this package's tasks first on the include path, lm_eval's
    own indexed only when a requested task is not found without them, and a requested
    name found nowhere refused with the closest names."""
    from ..harness.task_configs import tasks_dir

    signature = inspect.signature(original_init)

    def init(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        user_paths = bound.arguments.get("include_path")
        if user_paths is None:
            user_paths = []
        elif not isinstance(user_paths, (list, tuple)):
            user_paths = [user_paths]
        bound.arguments["include_path"] = [str(tasks_dir()), *user_paths]
        names = [name for name in requested or [] if not _is_path(name)]
        if requested and names == requested and bound.arguments.get("include_defaults", True):
            bound.arguments["include_defaults"] = False
            original_init(*bound.args, **bound.kwargs)
            if not _missing(self, names):
                return
            bound.arguments["include_defaults"] = True
            print("lm-eval-noise run: lm_eval is indexing its own tasks (about a minute on two cores) ...",
                  file=sys.stderr, flush=True)
        original_init(*bound.args, **bound.kwargs)
        missing = _missing(self, names)
        if missing:
            raise InputError("; ".join(_unknown_task(self, name) for name in missing))

    return init


def _is_path(name: str) -> bool:
    """A task given as a YAML file, a glob of them or a folder (lm_eval loads those)."""
    return name.endswith((".yaml", ".yml")) or Path(name).exists()


def _missing(manager, names: list[str]) -> list[str]:
    return [name for name in names if not manager.match_tasks([name])]


def _unknown_task(manager, name: str) -> str:
    close = difflib.get_close_matches(name, manager.all_tasks, n=3, cutoff=0.6)
    if any(ch in name for ch in "*?["):
        return f"no task matches {name!r}"
    suggestion = f"; closest: {', '.join(close)}" if close else "; `lm_eval ls tasks` lists them"
    return f"unknown task {name!r}{suggestion}"

