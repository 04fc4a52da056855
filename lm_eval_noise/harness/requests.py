"""What both engines (hf-noise, vllm-noise) do with lm-eval's requests before their own
model calls. No engine code here, and no engine imports another's private names
(tests/test_layout.py).

A `Sample` is the noise identity of one model-input row: its sample seed, its repeat
index and how many of its positions are prompt. It travels with its request:
- generation (`generation_samples`): the seed comes from the request as the task made
  it (harness/seeding.py), then the random-prefix baseline, if on, is put in front of
  the context. Each engine carries the sample inside the request, where its own
  batching keeps it: hf-noise in the context string (`CarriedContext`; HFLM batches by
  gen_kwargs), vllm-noise in the gen_kwargs (they become per-request SamplingParams);
- scoring (`ScoringSamples`): lm-eval hands an engine token rows, not requests, so rows
  are named by their tokens, one pass per repeat index, and rows with equal tokens but
  different noise in different passes.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass

from ..noise.spec import NoiseArgumentError
from .seeding import generation_seed, random_prefix, repeat_indices, scoring_seed


@dataclass(frozen=True)
class Sample:
    """seed: the sample seed; repeat: the repeat index; prompt_length: how many of the
    row's first positions are prompt (for scoring, the context's; None for generation,
    where the whole context is prompt)."""

    seed: int
    repeat: int
    prompt_length: int | None = None

    def to_wire(self) -> dict:
        """As plain data, for a request crossing into another process (vLLM's workers)."""
        return {key: value for key, value in asdict(self).items() if value is not None}

    @classmethod
    def from_wire(cls, data: dict) -> Sample:
        return cls(int(data["seed"]), int(data["repeat"]), data.get("prompt_length"))


class CarriedContext(str):
    """A generation context that carries its Sample through an engine's batching (HFLM
    groups, sorts and batches the context strings themselves, unchanged)."""

    sample: Sample

    def __new__(cls, text: str, sample: Sample):
        context = super().__new__(cls, text)
        context.sample = sample
        return context

    def __reduce__(self):  # copies and pickles keep the sample
        return CarriedContext, (str(self), self.sample)


def random_prefix_length(value, engine: str) -> int:
    """The `random_prefix` model argument: characters, 0 = off."""
    try:
        length = int(value)
    except (TypeError, ValueError):
        length = -1
    if length < 0:
        raise NoiseArgumentError("random_prefix", value, "an integer >= 0 (characters; 0 = off)", engine)
    return length


def generation_samples(requests: Sequence, noise_seed: int, prefix_length: int) -> list[tuple[object, Sample]]:
    """(the request to run, its sample) for each generation request, in order. With a
    random prefix the request is a copy whose context starts with it (the repeats of a
    prompt are one Instance object, so none is changed in place)."""
    samples = []
    for request, repeat in zip(requests, repeat_indices(requests)):
        sample = Sample(generation_seed(noise_seed, request.args[0], repeat), repeat)
        if prefix_length:
            request = with_arguments(request, random_prefix(sample.seed, prefix_length) + request.args[0])
        samples.append((request, sample))
    return samples


def with_arguments(request, context: str, gen_kwargs: dict | None = None):
    """A copy of a generation request with another context (and gen_kwargs)."""
    clone = copy.copy(request)
    clone.arguments = (context, request.args[1] if gen_kwargs is None else gen_kwargs, *request.args[2:])
    return clone


class ScoringSamples:
    """The Sample of each token row an engine scores under noise.

    `row_span(length)` is the engine's model row for a (context + continuation) of
    `length` tokens: the (start, end) slice it feeds the model after its own truncation.
    Rows are looked up by their tokens without trailing zeros (HFLM pads with 0).
    """

    def __init__(self, engine: str, noise_seed: int, row_span: Callable[[int], tuple[int, int]]):
        self.engine = engine
        self.noise_seed = noise_seed
        self.row_span = row_span
        self._repeat = 0
        self._table: dict[tuple, Sample] | None = None

    @property
    def active(self) -> bool:
        """Inside a pass of `by_rows`."""
        return self._table is not None

    def by_repeat(self, requests: Sequence, score: Callable[[list], list]) -> list:
        """`score` called once per repeat index (the seed's third part) on the requests
        of that index, so that within a call every row's tokens name its noise."""
        passes: dict[int, list[int]] = defaultdict(list)
        for index, repeat in enumerate(repeat_indices(requests)):
            passes[repeat].append(index)

        def score_pass(repeat, indices):
            self._repeat = repeat
            return score([requests[i] for i in indices])

        try:
            return in_parts(len(requests), passes.items(), score_pass)
        finally:
            self._repeat = 0

    def by_rows(self, token_requests: Sequence, score: Callable[[list], list]) -> list:
        """`score` called on lm-eval's token requests (key, context, continuation) in as
        few passes as keep each row's tokens naming one sample; `of` answers inside."""
        keyed = [self._row(*request) for request in token_requests]

        def score_pass(table, indices):
            self._table = table
            return score([token_requests[i] for i in indices])

        try:
            return in_parts(len(token_requests), unambiguous_passes(keyed), score_pass)
        finally:
            self._table = None

    def of(self, tokens: Sequence[int]) -> Sample:
        sample = (self._table or {}).get(rstrip_zeros(tokens))
        if sample is None:
            raise RuntimeError(f"{self.engine}: a scoring row arrived that no request registered")
        return sample

    def _row(self, key, context: list[int], continuation: list[int]) -> tuple[tuple, Sample]:
        tokens = [*context, *continuation]
        start, end = self.row_span(len(tokens))
        seed = scoring_seed(self.noise_seed, key, context, continuation, self._repeat)
        return rstrip_zeros(tokens[start:end]), Sample(seed, self._repeat, max(0, len(context) - start))


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


def rstrip_zeros(tokens: Sequence[int]) -> tuple:
    end = len(tokens)
    while end and tokens[end - 1] == 0:
        end -= 1
    return tuple(tokens[:end])
