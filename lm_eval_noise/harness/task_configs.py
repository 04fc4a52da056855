"""Where the package's task YAMLs are, in a wheel install or a source checkout."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[1]


def tasks_dir() -> Path:
    """The directory of this package's task YAMLs (the repository's `tasks/`)."""
    for candidate in (
        _PACKAGE / "task_configs",  # wheel: pyproject force-includes tasks/ here
        _PACKAGE.parent / "tasks",  # editable install or source checkout
    ):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"lm-eval-noise task YAMLs not found next to {_PACKAGE}")
