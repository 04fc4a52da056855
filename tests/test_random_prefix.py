"""random_prefix: training-free seed conditioning, a random string before each sample's
context, greedy decoding. A function of the sample seed: repeats differ, runs repeat."""

from __future__ import annotations

import pytest
from helpers import PROMPTS, generation_requests, make_lm
from lm_eval.models.huggingface import HFLM

from lm_eval_noise.harness.seeding import random_prefix
from lm_eval_noise.noise import NoiseArgumentError
from lm_eval_noise.noise.rng import sample_seed


def _contexts_seen(lm, requests, monkeypatch) -> list[str]:
    seen = []
    original = HFLM.tok_batch_encode

    def spy(self, strings, *args, **kwargs):
        seen.extend(strings)
        return original(self, strings, *args, **kwargs)

    monkeypatch.setattr(HFLM, "tok_batch_encode", spy)
    lm.generate_until(requests)
    return seen


@pytest.mark.parametrize("batch_size", [1, 4])
def test_each_repeat_sees_its_own_prefix_whatever_the_batch(toy_paths, monkeypatch, batch_size):
    lm = make_lm(toy_paths["llama"], random_prefix=12, batch_size=batch_size)
    requests = generation_requests(PROMPTS[:2], repeats=3)
    seen = _contexts_seen(lm, requests, monkeypatch)
    expected = {random_prefix(sample_seed(0, ("generate_until", prompt), repeat), 12) + prompt
                for prompt in PROMPTS[:2] for repeat in range(3)}
    assert set(seen) == expected and len(expected) == 6
    assert requests[0].args[0] == PROMPTS[0]  # the shared Instance is not changed
    assert lm.get_model_info()["noise"]["random_prefix"] == 12


def test_the_prefix_is_random_text_of_the_asked_length():
    prefixes = {random_prefix(seed, 16) for seed in range(50)}
    assert len(prefixes) == 50 and all(len(p) == 17 and p.endswith("\n") and p[:-1].isalnum() for p in prefixes)
    assert random_prefix(7, 16) == random_prefix(7, 16)


def test_without_a_prefix_the_contexts_are_untouched(toy_paths, monkeypatch):
    seen = _contexts_seen(make_lm(toy_paths["llama"]), generation_requests(PROMPTS[:2]), monkeypatch)
    assert sorted(seen) == sorted(PROMPTS[:2])  # HFLM orders the batch its own way


@pytest.mark.parametrize("value", [-1, "many"])
def test_a_bad_prefix_length_fails_before_loading(value):
    with pytest.raises(NoiseArgumentError, match="random_prefix"):
        make_lm("/nonexistent/model", random_prefix=value)


def test_a_prefix_and_noise_together_keep_the_noise_contract(toy_paths):
    requests = generation_requests(PROMPTS[:3], repeats=2)
    one = make_lm(toy_paths["llama"], random_prefix=8, sigma_scale=0.5, batch_size=1).generate_until(requests)
    many = make_lm(toy_paths["llama"], random_prefix=8, sigma_scale=0.5, batch_size=6).generate_until(requests)
    assert one == many  # the same outputs whatever the batch size


def test_a_carried_context_keeps_its_sample_when_copied_or_pickled():
    import copy
    import pickle

    from lm_eval_noise.harness.requests import CarriedContext, Sample

    context = CarriedContext("def f():", Sample(5, 2))
    for clone in (copy.copy(context), copy.deepcopy(context), pickle.loads(pickle.dumps(context))):
        assert clone == "def f():" and clone.sample == Sample(5, 2)
