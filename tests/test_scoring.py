"""Reference log-prob scoring, checked against a direct computation with the model."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lm_eval_noise.scoring import score_responses

PAIRS = [
    ("<s>user: hello\nassistant:", " Hi there, how can I help?"),
    ("Question: How many legs does a spider have?\nAnswer:", " eight"),
    ("def add(a, b):", "\n    return a + b\n"),
    ("The quick brown fox", ""),
    ("x", " jumps over the lazy dog. " * 5),
]


def direct_logprobs(model, tokenizer, prompt, response):
    bos = prompt.startswith(tokenizer.bos_token)
    prompt_ids = tokenizer(prompt, add_special_tokens=not bos)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + response_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()
    logprobs = torch.log_softmax(logits, dim=-1)
    return [logprobs[len(prompt_ids) - 1 + i, token].item() for i, token in enumerate(response_ids)]


def test_batched_scores_equal_a_direct_computation(toy_path):
    model = AutoModelForCausalLM.from_pretrained(toy_path).eval()
    tokenizer = AutoTokenizer.from_pretrained(toy_path)
    prompts, responses = zip(*PAIRS)
    scored = score_responses(model, tokenizer, list(prompts), list(responses), batch_size=3)
    for (prompt, response), result in zip(PAIRS, scored):
        expected = direct_logprobs(model, tokenizer, prompt, response)
        assert result.token_logprobs == pytest.approx(expected, abs=1e-4)
        assert result.total == pytest.approx(sum(expected), abs=1e-3)
        assert "".join(tokenizer.convert_tokens_to_string(result.tokens)) == response
    assert scored[3].tokens == [] and math.isnan(scored[3].mean)


def test_batch_size_does_not_change_scores(toy_path):
    model = AutoModelForCausalLM.from_pretrained(toy_path).eval()
    tokenizer = AutoTokenizer.from_pretrained(toy_path)
    prompts, responses = map(list, zip(*PAIRS))
    one = score_responses(model, tokenizer, prompts, responses, batch_size=1)
    many = score_responses(model, tokenizer, prompts, responses, batch_size=5)
    for a, b in zip(one, many):
        assert a.token_logprobs == pytest.approx(b.token_logprobs, abs=1e-4)


def test_mismatched_inputs_are_refused(toy_path):
    model = AutoModelForCausalLM.from_pretrained(toy_path).eval()
    tokenizer = AutoTokenizer.from_pretrained(toy_path)
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        score_responses(model, tokenizer, ["a", "b"], ["c"])
