"""Surface checks of free-text answers (chat responses)."""

from __future__ import annotations

from collections import Counter

from .diversity import tokenize

DEGENERATE_NGRAM = 4
DEGENERATE_REPEATS = 4


def response_length(text: str) -> int:
    """Length in tokens (the diversity metrics' regex tokens)."""
    return len(tokenize(text))


def is_degenerate(text: str, n: int = DEGENERATE_NGRAM, repeats: int = DEGENERATE_REPEATS) -> bool:
    """Empty (or whitespace), or some n-gram of tokens occurs `repeats` times or more:
    the loops a model falls into when pushed too far."""
    tokens = tokenize(text)
    if not tokens:
        return True
    grams = Counter(zip(*(tokens[i:] for i in range(n))))
    return bool(grams) and max(grams.values()) >= repeats
