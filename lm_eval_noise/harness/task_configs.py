"""Where the package's task YAMLs are, in a wheel install or a source checkout."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[1]


def unsafe_tasks() -> set[str]:
    """The names of this package's tasks that run generated code (`unsafe_code: true`,
    given or included), which lm_eval runs only with --confirm_run_unsafe_code."""
    import yaml

    class _Loader(yaml.SafeLoader):  # `!function` tags name code; their text is enough here
        pass

    _Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    configs = {path.name: yaml.load(path.read_text(), Loader=_Loader) or {} for path in tasks_dir().glob("*.yaml")}

    def unsafe(config: dict) -> bool:
        if "unsafe_code" in config:
            return bool(config["unsafe_code"])
        parent = configs.get(str(config.get("include", "")))
        return parent is not None and unsafe(parent)

    return {config["task"] for config in configs.values() if "task" in config and unsafe(config)}


def tasks_dir() -> Path:
    """The directory of this package's task YAMLs (the repository's `tasks/`)."""
    for candidate in (
        _PACKAGE / "task_configs",  # wheel: pyproject force-includes tasks/ here
        _PACKAGE.parent / "tasks",  # editable install or source checkout
    ):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"lm-eval-noise task YAMLs not found next to {_PACKAGE}")
