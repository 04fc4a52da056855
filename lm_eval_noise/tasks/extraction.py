"""The solution code in an instruct model's answer, found by what the code defines, not
by the shape of its fences (as evalplus's sanitizer does).

Answers wrap code in many ways: ```python3 / ```PYTHON / ~~~ fences, CRLF line endings,
a ```bash block (pip install ...) or a usage example before the solution, a fence
indented inside a numbered list item, or no fence at all. The rule:
1. line endings normalised; every fenced block collected, with its fence's indentation
   removed and its language tag read (blocks tagged with a language other than Python
   are skipped);
2. the first block that parses and defines the entry point (`def NAME` at top level);
   else the first block that defines it textually (it will fail to compile: an honest
   failure of the answer, not of the extraction); the imports, classes and other
   functions of the other Python blocks go before it (a helper or the imports in a
   block of their own; a usage example's calls are left out);
3. no fenced block defines it: the answer's own lines from the first top-level `import`,
   `from`, `def` or `class` before `def NAME` through the end of that function, if that
   parses;
4. nothing defines it: None, recorded as `extraction_failed` (never the prose run as code).
"""

from __future__ import annotations

import ast
import re
import textwrap

_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*\{?\.?(?P<tag>[\w+-]*)[^`]*$")
_PYTHON_TAGS = {"", "python", "python3", "py", "py3", "pycon", "ipython", "sage"}
_CODE_START = re.compile(r"^(import |from \S+ import |def |class |@)")


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language tag, code) of every fenced block, in order; an unterminated last block
    runs to the end of the answer."""
    blocks, lines, i = [], text.split("\n"), 0
    while i < len(lines):
        opening = _OPEN.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        close = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        body, i = [], i + 1
        while i < len(lines) and not close.match(lines[i]):
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i].lstrip())
            i += 1
        blocks.append((opening["tag"].lower(), textwrap.dedent("\n".join(body)).rstrip("\n") + "\n"))
        i += 1
    return blocks


def _parse(code: str) -> ast.Module | None:
    try:
        return ast.parse(code)
    except (SyntaxError, ValueError):  # ValueError: null bytes
        return None


def _defines(tree: ast.Module, entry_point: str) -> bool:
    """Whether `entry_point` is a function defined at the top level."""
    return any(isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == entry_point
               for node in tree.body)


def _unfenced(lines: list[str], entry_point: str) -> str | None:
    """The answer's code around `def entry_point` when no fence holds it."""
    definition = next((i for i, line in enumerate(lines) if re.match(rf"(async )?def {entry_point}\b", line)), None)
    if definition is None:
        return None
    start = definition
    while start > 0 and (_CODE_START.match(lines[start - 1]) or not lines[start - 1].strip()
                         or lines[start - 1].startswith((" ", "\t", "#"))):
        start -= 1
    end = definition + 1
    while end < len(lines) and (not lines[end].strip() or lines[end].startswith((" ", "\t"))):
        end += 1
    for first in range(start, definition + 1):  # prose caught above the code: drop it line by line
        code = "\n".join(lines[first:end]).strip("\n") + "\n"
        tree = _parse(code)
        if tree is not None and _defines(tree, entry_point):
            return code
    return None


def _definitions(code: str, tree: ast.Module | None, entry_point: str) -> str:
    """The imports, classes and functions (other than the entry point, decorators
    included) of a block that parses: what a solution in another block may use; calls
    and prints left out."""
    if tree is None:
        return ""
    lines = code.split("\n")
    kept = (ast.Import, ast.ImportFrom, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return "".join("\n".join(lines[min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))]) - 1:
                                   node.end_lineno]) + "\n"
                   for node in tree.body if isinstance(node, kept) and getattr(node, "name", None) != entry_point)


def extract_solution(answer: str, entry_point: str) -> str | None:
    """The code of `answer` that defines `entry_point`, or None (module docstring)."""
    text = answer.replace("\r\n", "\n").replace("\r", "\n")
    blocks = [(code, _parse(code)) for tag, code in fenced_blocks(text) if tag in _PYTHON_TAGS]
    parsing = [i for i, (_, tree) in enumerate(blocks) if tree is not None and _defines(tree, entry_point)]
    broken = [i for i, (code, tree) in enumerate(blocks)  # defines it, but does not parse: run, and fail
              if tree is None and re.search(rf"^\s*def {entry_point}\b", code, re.M)]
    if parsing or broken:
        chosen = (parsing or broken)[0]
        others = "".join(_definitions(code, tree, entry_point) for i, (code, tree) in enumerate(blocks) if i != chosen)
        return others + blocks[chosen][0]
    return _unfenced(text.split("\n"), entry_point)
