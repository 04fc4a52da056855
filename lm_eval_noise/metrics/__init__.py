"""Correctness and diversity metrics: plain functions, no lm_eval import."""

from .code import compile_rate
from .diversity import distinct_n, edit_distance, pairwise_bleu, self_bleu, tokenize
from .passk import pass_at_k

__all__ = [
    "compile_rate", "distinct_n", "edit_distance", "pairwise_bleu", "pass_at_k", "self_bleu",
    "tokenize",
]
