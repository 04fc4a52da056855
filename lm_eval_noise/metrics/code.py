"""Code-specific metrics: does a completion compile, is it empty, has it collapsed."""

from __future__ import annotations

import ast
import itertools
import math
import warnings
from collections.abc import Sequence

from .diversity import tokenize

REPEATED_LINES = 3  # the same non-blank line this many times in a row
REPEATED_TOKENS = 16  # the same token this many times in a row


def parses(source: str) -> bool:
    """Whether `source` parses as Python (ast.parse; nothing is executed)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            ast.parse(source)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return False
    return True


def is_empty_code(completion: str) -> bool:
    """No code of its own: only whitespace and comments."""
    return not any(line.strip() and not line.strip().startswith("#") for line in completion.splitlines())


def is_degenerate_code(completion: str) -> bool:
    """Empty, or collapsed into a loop: the same non-blank line REPEATED_LINES times in a
    row, or the same token REPEATED_TOKENS times in a row. (Repeated n-grams, the chat
    tasks' test, flag 7% of HumanEval's canonical solutions; these rules flag none.)"""
    if is_empty_code(completion):
        return True
    lines = [line.strip() for line in completion.splitlines() if line.strip()]
    tokens = tokenize(completion)
    return any(len(list(run)) >= REPEATED_LINES for _, run in itertools.groupby(lines)) or any(
        len(list(run)) >= REPEATED_TOKENS for _, run in itertools.groupby(tokens))


def compile_rate(completions: Sequence[str], prompt: str = "") -> float:
    """Fraction of completions that are code (not empty) and parse as Python after
    `prompt`: a function left as only its prompt's docstring does not count as compiled.
    NaN for no completions."""
    if not completions:
        return math.nan
    return sum(not is_empty_code(c) and parses(prompt + c) for c in completions) / len(completions)
