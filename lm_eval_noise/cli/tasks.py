"""`lm-eval-noise tasks`: where this package's task YAMLs are, and their names.

Stock lm_eval finds them with `--include_path "$(lm-eval-noise tasks --path)"`;
`lm-eval-noise run` puts them on the include path itself."""

from __future__ import annotations

import re

_TASK = re.compile(r"^task:\s*(\S+)", re.MULTILINE)  # the YAMLs hold !function tags yaml cannot load


def add_arguments(parser) -> None:
    parser.add_argument("--path", action="store_true", help="print only the directory (for --include_path)")


def run(args) -> int:
    from ..harness.task_configs import tasks_dir

    folder = tasks_dir()
    if args.path:
        print(folder)
        return 0
    print(f"task YAMLs: {folder}")
    for path in sorted(folder.glob("*.yaml")):
        found = _TASK.search(path.read_text())
        if found:
            print(f"  {found.group(1)}")
    return 0
