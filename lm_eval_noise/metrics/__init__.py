"""Correctness and diversity metrics: plain functions, no lm_eval import."""

from .code import compile_rate, is_degenerate_code, is_empty_code
from .diversity import distinct_n, edit_distance, edit_distance_matched, pairwise_bleu, self_bleu, tokenize
from .passk import pass_at_k
from .text import is_degenerate, response_length

__all__ = [
    "compile_rate", "distinct_n", "edit_distance", "edit_distance_matched", "is_degenerate", "is_degenerate_code",
    "is_empty_code",
    "pairwise_bleu", "pass_at_k",
    "response_length", "self_bleu", "tokenize",
]
