"""`lm-eval-noise run`: lm_eval with hf-noise registered and this package's tasks on the
include path (ahead of any --include_path of the user's, which can override them)."""

from __future__ import annotations

import inspect
import sys


def main(argv: list[str]) -> int:
    from lm_eval.__main__ import cli_evaluate
    from lm_eval.tasks.manager import TaskManager

    from ..harness import model  # noqa: F401  (registers hf-noise)
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
    sys.argv = ["lm_eval", *argv]
    try:
        cli_evaluate()
    finally:
        TaskManager.__init__ = original_init
    return 0
