"""The package's dependency arrows (README "Layout"), checked on every import statement,
and what the hf-noise model and the .pth hook load."""

from __future__ import annotations

import ast
import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lm_eval_noise"
# Which of the package's parts each part may import (itself always).
ALLOWED = {
    "noise": set(),
    "metrics": set(),
    "execution": set(),
    "scoring": set(),
    "harness": {"noise", "metrics", "scoring"},
    "tasks": {"metrics", "execution", "scoring"},
    "tools": {"harness", "noise", "metrics", "scoring"},
    "demo": {"tools", "harness", "noise", "metrics"},
    "bench": {"demo", "harness", "noise", "metrics", "execution", "scoring"},
    "cli": {"tools", "harness", "noise", "metrics", "scoring", "demo", "bench"},
    "__main__": {"cli"},
    "__init__": set(),
    "errors": set(),
}
# Parts every part may import: the package root and its one error base class.
EVERYWHERE = {"__init__", "errors"}
NO_LM_EVAL = {"noise", "metrics", "execution", "scoring"}


def _part(module: str) -> str:
    """The top-level part a module belongs to; a name imported from the package itself
    (`from .. import __version__`) belongs to its __init__."""
    name = module.split(".")[1] if "." in module else "__init__"
    return name if (PACKAGE / name).is_dir() or (PACKAGE / f"{name}.py").is_file() else "__init__"


def _imports(path: Path) -> list[tuple[str, int]]:
    """(absolute module name, line) of every import in `path`."""
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    package = list(relative.parts if path.name == "__init__.py" else relative.parts[:-1])
    if path.name == "__init__.py":
        package = package[:-1] if package[-1] == "__init__" else package
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
                if node.module is None:  # from . import x: x may be a submodule
                    found += [(f"{name}.{alias.name}", node.lineno) for alias in node.names]
                    continue
            else:
                name = node.module
            found.append((name, node.lineno))
    return found


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        yield name, path


def test_every_import_follows_the_arrows():
    broken = []
    for name, path in _modules():
        part = _part(name) if name != "lm_eval_noise" else "__init__"
        if path.name == "__main__.py" and path.parent == PACKAGE:
            part = "__main__"
        for target, line in _imports(path):
            if target.split(".")[0] == "lm_eval" and part in NO_LM_EVAL:
                broken.append(f"{path.name}:{line} ({part}) imports {target}")
            if not target.startswith("lm_eval_noise."):
                continue
            other = _part(target)
            if other != part and other not in EVERYWHERE and other not in ALLOWED[part]:
                broken.append(f"{path.relative_to(PACKAGE)}:{line} ({part}) imports {target}")
    assert broken == []


def _private_names_from_other_modules(source: str, module: str, is_package: bool = False) -> list[str]:
    """(line, name) of each `from X import _name` where X is another module of this package."""
    package = module if is_package else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            parts = package.split(".")
            target = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        if not target.startswith("lm_eval_noise") or target == module:
            continue
        found += [f"{node.lineno}: {target}.{alias.name}" for alias in node.names
                  if alias.name.startswith("_") and not alias.name.startswith("__")
                  and not _is_module(f"{target}.{alias.name}")]  # the fork servers' own modules
    return found


def _is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def test_no_module_imports_another_modules_private_names():
    """vllm_model imported model's _in_parts, _prefixed and _unambiguous_passes: one engine
    reaching into the other. What both engines share lives in harness/requests.py."""
    broken = [f"{path.relative_to(PACKAGE)}:{found}" for name, path in _modules()
              for found in _private_names_from_other_modules(path.read_text(), name, path.name == "__init__.py")]
    assert broken == []


def test_the_private_import_check_sees_one():
    planted = "from .model import _FirstAnswers\nfrom .requests import in_parts\n"
    assert _private_names_from_other_modules(planted, "lm_eval_noise.harness.vllm_model") == [
        "1: lm_eval_noise.harness.model._FirstAnswers"]


def test_the_checker_sees_relative_imports():
    """The rule above is only as good as its import reader: it must resolve a file's
    relative imports to the parts they name."""
    imports = dict(_imports(PACKAGE / "harness" / "model.py"))
    assert "lm_eval_noise.noise" in imports and "lm_eval_noise.scoring.self_scoring" in imports
    assert "lm_eval_noise.harness.task_configs" in dict(_imports(PACKAGE / "tools" / "sweep" / "runner.py"))
    assert "lm_eval_noise.tools.covariance" in dict(_imports(PACKAGE / "cli" / "covariance.py"))


@functools.cache  # one interpreter per statement, however many tests ask
def _loaded_after(statement: str) -> list[str]:
    code = f"{statement}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize("part", ["cli", "tools", "demo", "bench", "tasks"])
def test_hf_noise_loads_no_tool_cli_demo_bench_or_task_code(part):
    loaded = _loaded_after("import lm_eval_noise.harness.model")
    assert not [m for m in loaded if m.startswith(f"lm_eval_noise.{part}")]


def test_the_pth_hook_imports_nothing_heavy():
    loaded = _loaded_after("import lm_eval_noise.harness.registration")
    assert not {"torch", "lm_eval", "transformers", "numpy"} & set(loaded)
    assert [m for m in loaded if m.startswith("lm_eval_noise")] == [
        "lm_eval_noise", "lm_eval_noise.harness", "lm_eval_noise.harness.registration"]
