"""Diversity of the samples of ONE prompt (compute per prompt at a fixed n, then average).

Tokens: `tokenize`, the regex `\\w+|[^\\w\\s]` (identifiers/numbers and single
punctuation characters; whitespace dropped), the same for every metric here.

- distinct_n: distinct n-grams / total n-grams, pooled over the prompt's samples
  (Li et al. 2016 use the same ratio; the denominator is n-grams, not tokens). A
  sample shorter than n (an empty one included) counts as one n-gram, its whole token
  sequence: otherwise empty answers would vanish from the ratio and a set of four
  empty answers and one real one would score as perfectly diverse.
- self_bleu: Texygen's Self-BLEU (Zhu et al. 2018): mean over samples of the BLEU of
  the sample against ALL the others as references at once (multi-reference BLEU:
  n-gram counts clipped by the max over references, closest reference length),
  nltk's sentence_bleu with uniform weights up to `order` (default 4) and smoothing
  method1. Computed in O(n*L), not nltk's O(n^2*L), with identical values. It grows
  with n (more references, more matches): compare at equal n only.
- pairwise_bleu: mean BLEU over ordered pairs (i, j), i != j, each a single-reference
  sentence_bleu (same order and smoothing). A U-statistic, so stable in n.
Neither is the "average max BLEU" (mean over i of max_j BLEU(s_i, s_j)), a nearest-
neighbour similarity that is 1.0 as soon as any two samples are equal.
- edit_distance: mean over unordered pairs of Levenshtein(a, b) / max(|a|, |b|), on
  characters (0 for two empty strings).
- edit_distance_matched: the same at matched length, pooled: each pair compared over
  the length of the shorter (both cut to it), the distances summed over pairs and
  divided by the summed lengths. Answers that differ only by what one adds at its end
  (greedy's answer plus appended words) score 0, and a pair with a short stub ("Sure!")
  weighs as little as it is long (a mean of per-pair ratios let one stub among four
  copies of greedy's answer score 0.36). For chat answers, whose lengths vary with the
  method, this is the diversity length cannot fake.
Higher distinct_n / edit_distance and lower BLEU mean more diverse.

Degenerate sets never look diverse: identical samples, empty ones included, have BLEU 1
with each other (so Self-BLEU and pairwise BLEU 1) and edit distance 0, where nltk
would give two identical samples shorter than the BLEU order, or two empty ones, a
BLEU below 1; k identical samples have distinct_n 1/k of one sample's (k empty ones:
1/k, the least a set of k can have). Elsewhere the values are nltk's and Li et al.'s.
With fewer than two samples, diversity between samples is undefined: self_bleu,
pairwise_bleu and edit_distance return NaN there, and the task code leaves the metric
out rather than report NaN.
"""

from __future__ import annotations

import bisect
import itertools
import math
import re
from collections import Counter
from collections.abc import Sequence

import Levenshtein

_TOKEN = re.compile(r"\w+|[^\w\s]")
_EPSILON = 0.1  # nltk SmoothingFunction().method1


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text)


def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(zip(*(tokens[i:] for i in range(n)))) if len(tokens) >= n else Counter()


def _ngram_counts(samples: Sequence[str], order: int) -> tuple[list[list[Counter]], list[int]]:
    """Per sample, per order 1..order, a Counter of n-grams keyed by integers, and the
    token counts. Integer keys (token ids in base `vocabulary size`) instead of tuples
    keep the garbage collector out of the hot loop: ints are not GC-tracked."""
    vocabulary: dict[str, int] = {}
    ids = [[vocabulary.setdefault(token, len(vocabulary)) for token in tokenize(s)] for s in samples]
    base = len(vocabulary) + 1
    counts = []
    for sample in ids:
        keys, per_order = sample, []
        for n in range(1, order + 1):
            if n > 1:
                keys = [key * base + token for key, token in zip(keys, sample[n - 1 :])]
            per_order.append(Counter(keys))
        counts.append(per_order)
    return counts, [len(sample) for sample in ids]


def distinct_n(samples: Sequence[str], n: int) -> float:
    """Distinct n-grams / all n-grams of the samples (a sample shorter than n is one
    n-gram); 0 for no samples."""
    counts = Counter()
    for sample in samples:
        tokens = tokenize(sample)
        counts.update(_ngrams(tokens, n) if len(tokens) >= n else [tuple(tokens)])
    total = sum(counts.values())
    return len(counts) / total if total else 0.0


def _bleu(matches: list[int], totals: list[int], hyp_len: int, ref_len: int) -> float:
    """nltk's sentence_bleu arithmetic from clipped matches and totals per order."""
    if matches[0] == 0:
        return 0.0
    if hyp_len > ref_len:
        penalty = 1.0
    elif hyp_len == 0:
        return 0.0
    else:
        penalty = math.exp(1 - ref_len / hyp_len)
    weight = 1.0 / len(matches)
    logs = [
        weight * math.log((match if match else _EPSILON) / max(1, total))
        for match, total in zip(matches, totals)
    ]
    return penalty * math.exp(math.fsum(logs))


def _closest_length(lengths: list[int], own: int) -> int:
    """nltk's closest reference length, among `lengths` minus one copy of `own`:
    smallest |len - own|, ties to the shorter."""
    position = bisect.bisect_left(lengths, own)
    if position + 1 < len(lengths) and lengths[position + 1] == own:
        return own  # another sample has the same length
    below = lengths[position - 1] if position > 0 else None
    above = lengths[position + 1] if position + 1 < len(lengths) else None
    candidates = [length for length in (below, above) if length is not None]
    return min(candidates, key=lambda length: (abs(length - own), length))


def self_bleu(samples: Sequence[str], order: int = 4) -> float:
    if len(samples) < 2:
        return math.nan
    counts, lengths = _ngram_counts(samples, order)
    matches = [[0] * order for _ in samples]
    totals = [[sum(c.values()) for c in per_order] for per_order in counts]
    for n in range(order):
        # For each n-gram: the largest count, one sample holding it, and the runner-up
        # (equal to the largest on a tie). "Max over the other samples" is then the
        # largest unless sample i is the holder, in which case it is the runner-up.
        best: dict[int, list[int]] = {}
        for index, per_order in enumerate(counts):
            for gram, count in per_order[n].items():
                top = best.get(gram)
                if top is None:
                    best[gram] = [count, index, 0]
                elif count > top[0]:
                    best[gram] = [count, index, top[0]]
                elif count > top[2]:
                    top[2] = count
        for index, per_order in enumerate(counts):
            clipped = 0
            for gram, count in per_order[n].items():
                top, holder, runner_up = best[gram]
                clipped += min(count, runner_up if holder == index else top)
            matches[index][n] = clipped
    ordered = sorted(lengths)
    repeated = _repeated_samples(samples)
    scores = [
        1.0 if i in repeated else _bleu(matches[i], totals[i], lengths[i], _closest_length(ordered, lengths[i]))
        for i in range(len(samples))
    ]
    return sum(scores) / len(scores)


def _repeated_samples(samples: Sequence[str]) -> set[int]:
    """Indices of samples whose tokens equal another sample's: BLEU 1 against it."""
    seen = Counter(tuple(tokenize(sample)) for sample in samples)
    return {i for i, sample in enumerate(samples) if seen[tuple(tokenize(sample))] > 1}


def pairwise_bleu(samples: Sequence[str], order: int = 4) -> float:
    if len(samples) < 2:
        return math.nan
    counts, lengths = _ngram_counts(samples, order)
    totals = [[sum(c.values()) for c in per_order] for per_order in counts]
    tokens = [tokenize(sample) for sample in samples]
    scores = []
    for i, j in itertools.permutations(range(len(samples)), 2):
        if tokens[i] == tokens[j]:
            scores.append(1.0)
            continue
        matches = [
            sum(min(count, reference[gram]) for gram, count in hypothesis.items() if gram in reference)
            for hypothesis, reference in zip(counts[i], counts[j])
        ]
        scores.append(_bleu(matches, totals[i], lengths[i], lengths[j]))
    return sum(scores) / len(scores)


def edit_distance(samples: Sequence[str]) -> float:
    if len(samples) < 2:
        return math.nan
    distances = [
        Levenshtein.distance(a, b) / max(len(a), len(b)) if a or b else 0.0
        for a, b in itertools.combinations(samples, 2)
    ]
    return sum(distances) / len(distances)


def edit_distance_matched(samples: Sequence[str]) -> float:
    if len(samples) < 2:
        return math.nan
    distance = length = 0
    for a, b in itertools.combinations(samples, 2):
        shorter = min(len(a), len(b))
        distance += Levenshtein.distance(a[:shorter], b[:shorter])
        length += shorter
    return distance / length if length else 0.0
