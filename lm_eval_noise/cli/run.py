"""`lm-eval-noise run`: lm_eval with hf-noise registered and this package's tasks on the
include path (ahead of any --include_path of the user's, which can override them).

It adds to lm_eval: `--model hf-noise` (model_args: README, "Model arguments"), the
tasks humaneval_noise*, lmsys_chat_noise* (`lm-eval-noise tasks` lists them and prints
where their YAMLs are), hf-noise's arguments checked before lm_eval indexes its tasks,
and an input error reported as one line with exit code 2 (`lm-eval-noise --debug run`
for the traceback). Every other flag is lm_eval's own: see below.
"""

from __future__ import annotations

import argparse
import inspect
import sys

from ..errors import USER_ERRORS, InputError


def main(argv: list[str], debug: bool = False) -> int:
    if any(flag in argv for flag in ("-h", "--help")):
        print(__doc__)
    try:
        _check_model_args(argv)
        return _run_lm_eval(argv)
    except USER_ERRORS as error:
        if debug:
            raise
        from . import one_line

        print(f"lm-eval-noise run: {one_line(error)} (--debug before run for the traceback)", file=sys.stderr)
        return 2


def _check_model_args(argv: list[str]) -> None:
    """hf-noise's own arguments, checked in a second instead of after minutes of lm_eval's
    task indexing and model loading."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--model", default=None)
    parser.add_argument("--model_args", "-a", nargs="+", default=None)
    parser.add_argument("--device", default=None)
    known, _ = parser.parse_known_args(argv)
    if known.model != "hf-noise" or not known.model_args:
        return
    from lm_eval.utils import simple_parse_args_string

    from ..noise import NoiseSpec

    args: dict = {}
    for part in known.model_args:
        args.update(simple_parse_args_string(part))
    if "device" in args and known.device is not None:
        raise InputError(f"hf-noise: `device` is given twice, in --model_args ({args['device']!r}) and as "
                         f"--device ({known.device!r}); pass it once, as --device")
    NoiseSpec.from_model_args(args)


def _run_lm_eval(argv: list[str]) -> int:
    from lm_eval.__main__ import cli_evaluate
    from lm_eval.tasks.manager import TaskManager

    from ..harness import model  # registers hf-noise
    from ..harness.task_configs import tasks_dir

    original_init = TaskManager.__init__
    signature = inspect.signature(original_init)

    def init_with_package_tasks(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        user_paths = bound.arguments.get("include_path")
        if user_paths is None:
            user_paths = []
        elif not isinstance(user_paths, (list, tuple)):
            user_paths = [user_paths]
        bound.arguments["include_path"] = [str(tasks_dir()), *user_paths]
        original_init(*bound.args, **bound.kwargs)

    TaskManager.__init__ = init_with_package_tasks
    model.ANNOUNCE_INPUT_ERRORS = False  # reported by main() as one line
    # lm_eval shows nothing while it indexes its thousands of task YAMLs.
    print("lm-eval-noise run: lm_eval is indexing its tasks (about a minute on two cores) ...", file=sys.stderr,
          flush=True)
    sys.argv = ["lm_eval", *argv]
    try:
        cli_evaluate()
    finally:
        TaskManager.__init__ = original_init
        model.ANNOUNCE_INPUT_ERRORS = True
    return 0
