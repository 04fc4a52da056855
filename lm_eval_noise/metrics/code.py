"""Code-specific metrics."""

from __future__ import annotations

import ast
import math
import warnings
from collections.abc import Sequence


def parses(source: str) -> bool:
    """Whether `source` parses as Python (ast.parse; nothing is executed)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            ast.parse(source)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return False
    return True


def compile_rate(programs: Sequence[str]) -> float:
    """Fraction of programs that parse as Python; NaN for no programs."""
    if not programs:
        return math.nan
    return sum(parses(program) for program in programs) / len(programs)
