"""Each metric against an independent reference implementation, on random inputs."""

from __future__ import annotations

import itertools
import math
import random
from fractions import Fraction

import pytest
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
from nltk.util import ngrams

from lm_eval_noise.metrics import (
    compile_rate,
    distinct_n,
    edit_distance,
    pairwise_bleu,
    pass_at_k,
    self_bleu,
    tokenize,
)

WORDS = ["x", "y", "=", "(", ")", "return", "if", "for", "in", "range", "1", "2", "+", ":", "def", "f"]


def random_samples(rng: random.Random, count: int) -> list[str]:
    samples = []
    for _ in range(count):
        length = rng.choice([0, 1, 2, 3, rng.randint(4, 40)])
        samples.append(" ".join(rng.choice(WORDS[: rng.randint(3, len(WORDS))]) for _ in range(length)))
    return samples


def nltk_self_bleu(samples, order):
    weights = (1 / order,) * order
    smoothing = SmoothingFunction().method1
    tokens = [tokenize(s) for s in samples]
    scores = [
        sentence_bleu(tokens[:i] + tokens[i + 1 :], tokens[i], weights, smoothing_function=smoothing)
        for i in range(len(tokens))
    ]
    return sum(scores) / len(scores)


@pytest.mark.parametrize("seed", range(25))
def test_self_bleu_equals_nltk_texygen_definition(seed):
    rng = random.Random(seed)
    samples = random_samples(rng, rng.randint(2, 12))
    order = rng.choice([2, 3, 4])
    assert abs(self_bleu(samples, order) - nltk_self_bleu(samples, order)) < 1e-9


@pytest.mark.parametrize("seed", range(15))
def test_pairwise_bleu_equals_mean_of_nltk_sentence_bleu_over_pairs(seed):
    rng = random.Random(100 + seed)
    samples = random_samples(rng, rng.randint(2, 7))
    smoothing = SmoothingFunction().method1
    tokens = [tokenize(s) for s in samples]
    pairs = [
        sentence_bleu([tokens[j]], tokens[i], (0.25,) * 4, smoothing_function=smoothing)
        for i, j in itertools.permutations(range(len(tokens)), 2)
    ]
    assert abs(pairwise_bleu(samples) - sum(pairs) / len(pairs)) < 1e-9


def test_self_bleu_and_pairwise_bleu_of_identical_and_disjoint_samples():
    same = ["def f ( x ) : return x + 1"] * 4
    assert self_bleu(same) == pytest.approx(1.0)
    assert pairwise_bleu(same) == pytest.approx(1.0)
    disjoint = ["a b c d e", "f g h i j", "k l m n o"]
    assert self_bleu(disjoint) == 0.0 and pairwise_bleu(disjoint) == 0.0
    assert math.isnan(self_bleu(["only one"])) and math.isnan(pairwise_bleu([]))


@pytest.mark.parametrize("seed", range(10))
def test_distinct_n_equals_set_over_pooled_ngrams(seed):
    rng = random.Random(200 + seed)
    samples = random_samples(rng, rng.randint(1, 10))
    for n in (1, 2, 3):
        grams = [g for s in samples for g in ngrams(tokenize(s), n)]
        expected = len(set(grams)) / len(grams) if grams else math.nan
        got = distinct_n(samples, n)
        assert (math.isnan(got) and math.isnan(expected)) or got == pytest.approx(expected)


def levenshtein_dp(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


@pytest.mark.parametrize("seed", range(10))
def test_edit_distance_equals_dynamic_programming_reference(seed):
    rng = random.Random(300 + seed)
    samples = ["".join(rng.choice("abcde ") for _ in range(rng.randint(0, 30))) for _ in range(rng.randint(2, 8))]
    pairs = [
        levenshtein_dp(a, b) / max(len(a), len(b)) if a or b else 0.0
        for a, b in itertools.combinations(samples, 2)
    ]
    assert edit_distance(samples) == pytest.approx(sum(pairs) / len(pairs))


def exact_pass_at_k(n, c, k):
    return float(1 - Fraction(math.comb(n - c, k), math.comb(n, k)))


@pytest.mark.parametrize("seed", range(20))
def test_pass_at_k_equals_exact_binomial_form(seed):
    rng = random.Random(400 + seed)
    n = rng.randint(1, 300)
    c = rng.randint(0, n)
    k = rng.randint(1, n)
    assert pass_at_k(n, c, k) == pytest.approx(exact_pass_at_k(n, c, k), abs=1e-12)


def test_pass_at_k_edge_cases():
    assert pass_at_k(10, 0, 1) == 0.0 and pass_at_k(10, 0, 10) == 0.0
    assert pass_at_k(10, 10, 1) == 1.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(10, 1, 10) == 1.0
    with pytest.raises(ValueError, match="pass@11 needs"):
        pass_at_k(10, 3, 11)
    with pytest.raises(ValueError, match="num_correct"):
        pass_at_k(5, 6, 1)


def test_compile_rate_matches_the_compile_builtin():
    programs = ["def f():\n    return 1\n", "def f(:\n", "x = (", "print('ok')", "    indented = 1", "", "lambda: (yield)"]

    def compiles(source):
        try:
            compile(source, "<test>", "exec")
            return True
        except SyntaxError:
            return False

    assert compile_rate(programs) == pytest.approx(sum(map(compiles, programs)) / len(programs))
    assert math.isnan(compile_rate([]))
