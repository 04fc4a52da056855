"""The determinism contract, through HFNoiseLM's lm-eval entry points."""

from __future__ import annotations

import random

import pytest
from helpers import PROMPTS, generation_requests, loglikelihood_requests, make_lm, rolling_requests
from lm_eval.models.huggingface import HFLM

NOISY = {"sigma_scale": 0.5}


def _by_request(requests, outputs):
    """Outputs keyed by (doc, args, repeat index), independent of request order."""
    seen: dict[int, int] = {}
    keyed = {}
    for request, output in zip(requests, outputs):
        repeat = seen.get(id(request), 0)
        seen[id(request)] = repeat + 1
        text_args = tuple(arg for arg in request.args if isinstance(arg, str))
        keyed[(request.doc_id, text_args, repeat)] = output
    return keyed


@pytest.mark.parametrize("site", ["embed", "layer:1"])
def test_generation_is_the_same_for_batch_sizes_1_4_and_auto(toy_path, site):
    requests = generation_requests(repeats=2)
    outputs = {
        batch_size: make_lm(toy_path, batch_size=batch_size, noise_site=site, **NOISY).generate_until(
            requests
        )
        for batch_size in (1, 4, "auto")
    }
    assert outputs[1] == outputs[4] == outputs["auto"]


def test_scoring_is_the_same_for_batch_sizes_1_4_and_auto(toy_path):
    lls = {}
    for batch_size in (1, 4, "auto"):
        lm = make_lm(toy_path, batch_size=batch_size, **NOISY)
        lls[batch_size] = [ll for ll, _ in lm.loglikelihood(loglikelihood_requests(repeats=2))]
        lls[batch_size] += lm.loglikelihood_rolling(rolling_requests())
    for batch_size in (4, "auto"):
        assert lls[batch_size] == pytest.approx(lls[1], rel=1e-5)


def test_request_order_does_not_change_any_output(toy_path):
    lm = make_lm(toy_path, batch_size=3, **NOISY)
    requests = generation_requests(repeats=3)
    shuffled = list(requests)
    random.Random(7).shuffle(shuffled)
    assert _by_request(shuffled, lm.generate_until(shuffled)) == _by_request(
        requests, lm.generate_until(requests)
    )

    scoring = loglikelihood_requests(repeats=2)
    shuffled = list(scoring)
    random.Random(7).shuffle(shuffled)
    got = _by_request(shuffled, [ll for ll, _ in lm.loglikelihood(shuffled)])
    want = _by_request(scoring, [ll for ll, _ in lm.loglikelihood(scoring)])
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-5)


def test_repeats_get_distinct_noise_draws(toy_path):
    lm = make_lm(toy_path, batch_size=4, sigma_scale=2.0)
    outputs = lm.generate_until(generation_requests(repeats=4, max_gen_toks=8))
    per_prompt = [outputs[i : i + 4] for i in range(0, len(outputs), 4)]
    # Every prompt's four samples are not all identical, and most prompts have 4 distinct ones.
    assert all(len(set(samples)) > 1 for samples in per_prompt)
    assert sum(len(set(samples)) == 4 for samples in per_prompt) > len(per_prompt) / 2
    scores = [ll for ll, _ in lm.loglikelihood(loglikelihood_requests(repeats=3))]
    assert all(len(set(scores[i : i + 3])) == 3 for i in range(0, len(scores), 3))


def test_noise_changes_outputs_and_is_reproducible(toy_path):
    requests = generation_requests(max_gen_toks=8)
    clean = make_lm(toy_path).generate_until(requests)
    first = make_lm(toy_path, sigma_scale=2.0).generate_until(requests)
    again = make_lm(toy_path, sigma_scale=2.0).generate_until(requests)
    other_seed = make_lm(toy_path, sigma_scale=2.0, noise_seed=1).generate_until(requests)
    assert first == again
    assert first != clean
    assert first != other_seed


def test_sigma_zero_equals_plain_hf(toy_path):
    plain = HFLM(pretrained=toy_path, device="cpu", batch_size=2)
    zero = make_lm(toy_path, batch_size=2, sigma_scale=0.0, noise_seed=3)
    assert zero.noise is None and zero.logits_cache == plain.logits_cache
    requests = generation_requests(repeats=2)
    assert zero.generate_until(requests) == plain.generate_until(requests)
    scoring = loglikelihood_requests()
    assert zero.loglikelihood(scoring) == plain.loglikelihood(scoring)
    assert zero.loglikelihood_rolling(rolling_requests()) == plain.loglikelihood_rolling(
        rolling_requests()
    )


# Continuations that are one token under the toy tokenizer: their model inputs are equal.
SINGLE_TOKEN_CHOICES = (" a", " b", " A", " 2")
QUESTION = "Question: How many legs does a spider have?\nAnswer:"


def _choices(choices, context=QUESTION, task="toy", doc_id=0):
    from lm_eval.api.instance import Instance

    return [Instance("loglikelihood", {}, (context, c), i, (task, doc_id, 1)) for i, c in enumerate(choices)]


def _scores(lm, requests) -> dict[str, float]:
    return {r.args[1]: ll for r, (ll, _) in zip(requests, lm.loglikelihood(requests))}


@pytest.mark.parametrize("logits_cache", [True, False])
def test_single_token_choices_score_the_same_alone_and_in_any_order(toy_path, logits_cache):
    """Choices whose model inputs are equal used to swap seeds with each other, so a
    choice's score depended on which other choices were in the run."""
    lm = make_lm(toy_path, batch_size=3, sigma_scale=1.0, logits_cache=logits_cache)
    assert all(len(lm.tok_encode(c)) == 1 for c in SINGLE_TOKEN_CHOICES)
    alone = {c: _scores(lm, _choices([c]))[c] for c in SINGLE_TOKEN_CHOICES}
    assert len(set(alone.values())) == len(alone)  # the choices really differ
    for order in (SINGLE_TOKEN_CHOICES, SINGLE_TOKEN_CHOICES[::-1], (" 2", " a", " A", " b"), (" b", " 2")):
        together = _scores(lm, _choices(order))
        assert together == pytest.approx({c: alone[c] for c in order}, rel=1e-5)


def test_choices_of_one_question_share_their_noise(toy_path):
    """Seed from the context alone: every choice's row gets the noise of
    sample_seed(noise_seed, ("loglikelihood", context tokens), 0), position by
    position, so each score equals a direct forward with that seed (rebuilt from the
    seed rule)."""
    import torch

    from lm_eval_noise.noise import inject_noise, sample_seed

    lm = make_lm(toy_path, batch_size=4, sigma_scale=1.0, noise_seed=5)
    choices = (" a", " yes", " no thanks")
    scores = _scores(lm, _choices(choices))
    for choice in choices:
        context, continuation = lm._encode_pair(QUESTION, choice)
        seed = sample_seed(5, ("loglikelihood", context), 0)
        tokens = torch.tensor([context + continuation])
        with torch.no_grad(), inject_noise(lm.model, lm.noise_spec, [seed], injector=lm.noise,
                                           prompt_lengths=[len(context)]):
            logprobs = torch.log_softmax(lm.model(tokens[:, :-1]).logits.float(), dim=-1)
        targets = tokens[0, len(context):]
        direct = logprobs[0, len(context) - 1 :].gather(1, targets[:, None]).sum().item()
        assert scores[choice] == pytest.approx(direct, abs=1e-4)


def test_equal_content_in_different_tasks_scores_the_same(toy_path):
    lm = make_lm(toy_path, batch_size=2, sigma_scale=1.0)
    first = _choices((" a", " yes"), task="task_one", doc_id=3)
    second = _choices((" a", " yes"), task="task_two", doc_id=8)
    scores = [ll for ll, _ in lm.loglikelihood(first + second)]
    assert scores[:2] == pytest.approx(scores[2:], rel=1e-6)
    assert scores[:2] == pytest.approx([ll for ll, _ in lm.loglikelihood(first)], rel=1e-5)


def test_logits_cache_stays_as_asked_under_noise(toy_path):
    assert make_lm(toy_path, sigma_scale=0.1).logits_cache is True
    assert make_lm(toy_path, sigma_scale=0.1, logits_cache=False).logits_cache is False


def test_identical_content_gets_identical_noise(toy_path):
    """Two requests with equal content (different Instances) share the sample seed."""
    lm = make_lm(toy_path, batch_size=2, sigma_scale=2.0)
    twice = generation_requests(prompts=[PROMPTS[0], PROMPTS[0]], max_gen_toks=8)
    first, second = lm.generate_until(twice)
    assert first == second


def test_prompt_reference_is_recorded_per_sample_and_independent_of_batching(toy_path):
    from lm_eval_noise.harness.seeding import generation_seed

    requests = generation_requests(repeats=2, max_gen_toks=6)
    args = {"sigma_scale": 0.5, "noise_reference": "prompt", "sigma_mode": "coordinate"}
    runs = {bs: make_lm(toy_path, batch_size=bs, **args) for bs in (1, 3)}
    outputs = {bs: lm.generate_until(requests) for bs, lm in runs.items()}
    assert outputs[1] == outputs[3]
    lm = runs[3]
    recorded = lm.get_model_info()["noise"]["prompt_reference_norms"]
    table = lm.model.get_input_embeddings().weight.detach().norm(dim=-1)
    for prompt in PROMPTS:
        tokens = lm.tok_encode(prompt)
        for repeat in range(2):
            seed = generation_seed(0, prompt, repeat)
            assert recorded[str(seed)] == pytest.approx(table[tokens].mean().item(), rel=1e-5)


@pytest.mark.parametrize("site", ["embed", "layer:-1"])
def test_a_run_without_noise_records_its_sites_reference_norm(toy_path, site):
    quiet = make_lm(toy_path, sigma_scale=0, noise_site=site).get_model_info()["noise"]
    noisy = make_lm(toy_path, sigma_scale=0.3, noise_site=site).get_model_info()["noise"]
    assert quiet["active"] is False and noisy["active"] is True
    assert quiet["reference_norm"] == pytest.approx(noisy["reference_norm"]) and quiet["reference_norm"] > 0


def test_generated_noise_cannot_change_a_one_token_continuation(toy_path):
    """README, "What noise cannot change": the first continuation token is predicted
    from the context, so noise on continuation positions leaves it as without noise."""
    requests = _choices(SINGLE_TOKEN_CHOICES + (" yes",))
    plain = _scores(HFLM(pretrained=toy_path, device="cpu", batch_size=2), requests)
    noisy = _scores(make_lm(toy_path, batch_size=2, sigma_scale=8.0, noise_positions="generated"), requests)
    everywhere = _scores(make_lm(toy_path, batch_size=2, sigma_scale=8.0), requests)
    for choice in SINGLE_TOKEN_CHOICES:
        assert noisy[choice] == pytest.approx(plain[choice], rel=1e-6)
        assert abs(everywhere[choice] - plain[choice]) > 1e-3  # noise on the context does change it
    assert abs(noisy[" yes"] - plain[" yes"]) > 1e-3  # its second token is affected


def _generation(prompt, doc_id, repeats=1, **gen_kwargs):
    from lm_eval.api.instance import Instance

    kwargs = {"until": ["\n\n"], "max_gen_toks": 8, "do_sample": False, **gen_kwargs}
    return Instance("generate_until", {}, (prompt, kwargs), 0, ("toy", doc_id, repeats))


def test_repeats_keep_their_noise_beside_equal_prompts_with_other_gen_kwargs(toy_path):
    """HFLM runs gen_kwargs groups one after another; a seed queue shared between the
    groups swapped a prompt's repeats when the same prompt came in another group first."""
    lm = make_lm(toy_path, batch_size=1, sigma_scale=2.0)
    first, second, third = (_generation("The quick brown fox", i, repeats=2 if i == 1 else 1,
                                        max_gen_toks=9 if i == 1 else 8) for i in range(3))
    alone = lm.generate_until([second, second])
    mixed = lm.generate_until([first, second, second, third])
    assert alone[0] != alone[1]
    assert mixed[1:3] == alone


def test_batch_size_auto_n_scores_calls_shorter_than_n(toy_path):
    """batch_size=auto:N divided by len(requests) // N inside HFLM: zero for a short
    scoring pass (repeats make one pass per repeat index)."""
    requests = loglikelihood_requests(prompts=PROMPTS[:1], repeats=2)  # passes of 2 requests
    scores = [ll for ll, _ in make_lm(toy_path, batch_size="auto:3", sigma_scale=0.5).loglikelihood(requests)]
    assert scores == pytest.approx([ll for ll, _ in make_lm(toy_path, sigma_scale=0.5).loglikelihood(requests)],
                                   rel=1e-5)


def test_lm_evals_response_cache_is_refused_under_noise(toy_path, tmp_path):
    from lm_eval.api.model import CachingLM

    with pytest.raises(ValueError, match="use_cache"):
        CachingLM(make_lm(toy_path, sigma_scale=0.5), str(tmp_path / "cache.db"))
    CachingLM(make_lm(toy_path, sigma_scale=0), str(tmp_path / "plain.db"))  # no noise: allowed


def test_beam_search_shares_each_prompts_noise_across_its_beams(toy_path):
    requests = [_generation(p, i, num_beams=2) for i, p in enumerate(PROMPTS)]
    plain = make_lm(toy_path, batch_size=3).generate_until(requests)
    noisy = {bs: make_lm(toy_path, batch_size=bs, sigma_scale=2.0).generate_until(requests) for bs in (1, 3)}
    assert noisy[1] == noisy[3] and noisy[1] != plain


def test_scoring_records_prompt_reference_norms(toy_path):
    lm = make_lm(toy_path, sigma_scale=0.5, noise_reference="prompt")
    lm.loglikelihood(_choices((" a", " yes")))
    recorded = lm.get_model_info()["noise"]["prompt_reference_norms"]
    context, _ = lm._encode_pair(QUESTION, " a")
    table = lm.model.get_input_embeddings().weight.detach().norm(dim=-1)
    assert list(recorded.values()) == pytest.approx([table[context].mean().item()], rel=1e-5)


def test_generation_progress_moves_every_step_and_changes_nothing(toy_path, monkeypatch):
    """The tokens bar (harness/progress.py) advances at each decoding step, several times
    per batch, and the answers are the same with it as without it."""
    from lm_eval_noise.harness import progress

    steps = []
    original = progress.TokenCounter.put
    monkeypatch.setattr(progress.TokenCounter, "put",
                        lambda self, value: steps.append(int(value.numel())) or original(self, value))
    lm = make_lm(toy_path, batch_size=4, sigma_scale=0.5)
    requests = generation_requests(repeats=2, max_gen_toks=6)
    with_bar = lm.generate_until(requests)
    batches = -(-len(requests) // 4)
    assert len(steps) > 2 * batches  # prompt + several steps per batch, not one tick per batch
    steps.clear()
    assert lm.generate_until(requests, disable_tqdm=True) == with_bar
    assert steps == []  # no bar, no streamer


def test_generation_seeds_follow_the_one_rule_that_vectors_rebuilds(toy_path):
    """HFNoiseLM seeds a generation sample with harness.seeding.generation_seed, the rule
    `lm-eval-noise vectors` uses to rebuild a logged sample's seed."""
    from lm_eval_noise.harness.seeding import generation_seed

    lm = make_lm(toy_path, batch_size=2, sigma_scale=0.5, noise_seed=9)
    used = []
    encode = lm.tok_batch_encode
    lm.tok_batch_encode = lambda strings, **kw: used.extend(
        (str(s), s.sample.seed, s.sample.repeat) for s in strings) or encode(strings, **kw)
    lm.generate_until(generation_requests(repeats=2))
    assert len(used) == 2 * len(PROMPTS)
    assert all(seed == generation_seed(9, context, repeat) for context, seed, repeat in used)
