"""What both engines (hf-noise, vllm-noise) do with lm-eval's requests before their own
model calls: the random-prefix baseline's argument and its application, scoring passes
in which a row's tokens name its noise, and answers put back in request order. No engine
code here, and no engine imports another's private names (tests/test_layout.py)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable

from ..noise.spec import NoiseArgumentError


def random_prefix_length(value, engine: str) -> int:
    """The `random_prefix` model argument: characters, 0 = off."""
    try:
        length = int(value)
    except (TypeError, ValueError):
        length = -1
    if length < 0:
        raise NoiseArgumentError("random_prefix", value, "an integer >= 0 (characters; 0 = off)", engine)
    return length


def prefixed(request, prefix: str):
    """A copy of a generation request whose context starts with `prefix` (the repeats of
    a prompt are one Instance object, so it is never changed in place)."""
    clone = copy.copy(request)
    clone.arguments = (prefix + request.args[0], *request.args[1:])
    return clone


def unambiguous_passes(keyed: list[tuple[tuple, object]]) -> list[tuple[dict, list[int]]]:
    """Split requests into passes in which a row's tokens name its noise: requests with
    the same tokens but different noise (the same tokens split differently into context
    and continuation, or one ending in token 0 beside its padded twin) go to different
    passes. Returns ({tokens: row}, request indices) per pass; one unless such pairs exist."""
    passes: list[tuple[dict, list[int]]] = []
    for index, (tokens, row) in enumerate(keyed):
        for table, indices in passes:
            if table.setdefault(tokens, row) == row:
                indices.append(index)
                break
        else:
            passes.append(({tokens: row}, [index]))
    return passes


def in_parts(count: int, parts: Iterable[tuple[object, list[int]]], call: Callable) -> list:
    """Results of `count` requests computed part by part: `call(key, indices)` answers
    the requests at `indices` for each (key, indices) of `parts`; back in request order."""
    results = [None] * count
    for key, indices in parts:
        for index, result in zip(indices, call(key, indices), strict=True):
            results[index] = result
    return results
