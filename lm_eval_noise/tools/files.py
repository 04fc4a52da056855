"""Files written whole or not at all: a full disk or an interrupted write leaves the old
file (or none), never a truncated one that looks finished."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def replace_atomically(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call `write(temporary)` on a file beside `path` (same suffix, so writers that go
    by it still do), and rename it over `path` only once it is complete."""
    path = Path(path)
    temporary = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    replace_atomically(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))
