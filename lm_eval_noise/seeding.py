"""Per-request sample seeds for lm-eval requests (the seeding rule lives in noise.rng).

lm-eval hands a task's `repeats: n` to the model as the same Instance object n times,
so the repeat index is the occurrence count of that object in the request list. Two
different requests with equal content get the same noise, as the contract says.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .noise.rng import sample_seed


def repeat_indices(requests: Sequence) -> list[int]:
    seen: dict[int, int] = {}
    indices = []
    for request in requests:
        index = seen.get(id(request), 0)
        seen[id(request)] = index + 1
        indices.append(index)
    return indices


def request_seeds(
    requests: Sequence, noise_seed: int, content: Callable[[object], tuple]
) -> list[tuple[int, int]]:
    """(sample seed, repeat index) for each request, in order."""
    return [
        (sample_seed(noise_seed, content(request), repeat), repeat)
        for request, repeat in zip(requests, repeat_indices(requests))
    ]
