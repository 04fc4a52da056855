"""Self-BLEU in O(n*L) against nltk's direct O(n^2*L) computation (Texygen's definition),
same samples, same run, at n = 100 and 200. nltk runs once (seconds); ours is the
median of 5 runs (milliseconds, so one run is at the mercy of the scheduler)."""

from __future__ import annotations

import random
import statistics
import time


def _samples(count: int, length: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    vocabulary = [f"t{i}" for i in range(200)] + list("()=:+-,[]")
    return [" ".join(rng.choice(vocabulary[: rng.randint(40, len(vocabulary))]) for _ in range(length))
            for _ in range(count)]


def nltk_self_bleu(samples: list[str], order: int = 4) -> float:
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    from ..metrics import tokenize

    tokens = [tokenize(s) for s in samples]
    smoothing = SmoothingFunction().method1
    weights = (1 / order,) * order
    scores = [sentence_bleu(tokens[:i] + tokens[i + 1 :], tokens[i], weights, smoothing_function=smoothing)
              for i in range(len(tokens))]
    return sum(scores) / len(scores)


def run(args) -> int:
    from ..metrics import self_bleu

    print(f"\nSelf-BLEU-4, {args.tokens} tokens per sample")
    print(f"{'n':>5}{'nltk s':>10}{'ours s':>10}{'speedup':>10}{'|difference|':>15}")
    for size in (int(s) for s in args.sizes.split(",")):
        samples = _samples(size, args.tokens, seed=size)
        start = time.perf_counter()
        reference = nltk_self_bleu(samples)
        nltk_seconds = time.perf_counter() - start
        runs = []
        for _ in range(5):
            start = time.perf_counter()
            ours = self_bleu(samples)
            runs.append(time.perf_counter() - start)
        our_seconds = statistics.median(runs)
        print(f"{size:>5}{nltk_seconds:>10.3f}{our_seconds:>10.4f}{nltk_seconds / our_seconds:>9.0f}x"
              f"{abs(ours - reference):>15.2e}")
    return 0
