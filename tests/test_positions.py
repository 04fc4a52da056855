"""Noise positions at batch size 1 and for unpadded batches, step by step, on the
transformers release installed (transformers 5.2x passes the cache as `cache=` and no
attention mask when no row is padded; 4.x passes `past_key_values=` and the mask)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lm_eval_noise.noise import NoiseInjector, NoiseSpec, hooks, inject_noise
from lm_eval_noise.noise.positions import PositionsUnknown, call_positions

NEW_TOKENS = 5
PROMPT = "def add(a, b):"


@pytest.fixture
def toy(toy_path):
    model = AutoModelForCausalLM.from_pretrained(toy_path).eval()
    tokenizer = AutoTokenizer.from_pretrained(toy_path)
    return model, tokenizer


class Recorder:
    """Per model call: the positions the sampler was asked for, and the tensor the hook
    added at its site (noised output minus clean output), [B, T, d]. Decoding steps draw
    their noise one at a time (`block` 0) unless `block` says otherwise, so the sampler
    sees each call's own positions (tests/test_noise_ops.py holds the blocks to that)."""

    def __init__(self, injector: NoiseInjector, block: int = 0):
        self.injector = injector
        self.block = block
        self.positions: list[list[list[int]]] = []
        self.added: list[torch.Tensor] = []
        self._clean: list[torch.Tensor] = []

    def run(self, model, seeds, call, **batch):
        sample = self.injector.sampler.sample

        def spy(seeds_, repeats, positions, norms=None, **options):
            self.positions.append(positions.tolist())
            return sample(seeds_, repeats, positions, norms, **options)

        def clean(module, inputs, output):
            self._clean.append(_hidden(output).detach().clone())

        def noised(module, inputs, output):
            self.added.append(_hidden(output).detach() - self._clean[len(self.added)])

        self.injector.sampler.sample = spy
        before = self.injector.module.register_forward_hook(clean)
        block, hooks._BLOCK = hooks._BLOCK, self.block
        try:
            with inject_noise(model, self.injector.spec, seeds, injector=self.injector, **batch):
                after = self.injector.module.register_forward_hook(noised)  # runs after the noise hook
                try:
                    with torch.no_grad():
                        return call()
                finally:
                    after.remove()
        finally:
            hooks._BLOCK = block
            before.remove()
            del self.injector.sampler.sample


def _hidden(output):
    return output[0] if isinstance(output, tuple) else output


def _generate(model, tokenizer, ids, mask, **kwargs):
    args = {"input_ids": ids, "max_new_tokens": NEW_TOKENS, "do_sample": False,
            "pad_token_id": tokenizer.pad_token_id or tokenizer.eos_token_id, **kwargs}
    if mask is not None:
        args["attention_mask"] = mask
    return lambda: model.generate(**args)


def _unpadded(tokenizer, rows):
    ids = tokenizer([PROMPT], return_tensors="pt")["input_ids"].repeat(rows, 1)
    return ids, torch.ones_like(ids)


@pytest.mark.parametrize("rows, with_mask", [(1, True), (1, False), (3, True)],
                         ids=["batch1", "batch1-no-mask", "equal-length-batch"])
@pytest.mark.parametrize("site", ["embed", "layer:1"])
def test_every_decoding_step_gets_its_true_position(toy, rows, with_mask, site):
    model, tokenizer = toy
    injector = NoiseInjector(model, NoiseSpec.from_model_args({"sigma_scale": 0.5, "noise_site": site}),
                             tokenizer=tokenizer)
    ids, mask = _unpadded(tokenizer, rows)
    length = ids.shape[1]
    recorder = Recorder(injector)
    out = recorder.run(model, list(range(rows)), _generate(model, tokenizer, ids, mask if with_mask else None),
                       attention_mask=mask)
    steps = out.shape[1] - length
    want = [[list(range(length))] * rows] + [[[length + k]] * rows for k in range(steps - 1)]
    assert recorder.positions == want
    # Per-token noise: a fresh vector at every step, different from step to step.
    step_noise = torch.stack([added[0, -1] for added in recorder.added[1:]])
    assert step_noise.norm(dim=-1).min() > 0
    assert torch.cdist(step_noise, step_noise).add(torch.eye(len(step_noise))).min() > 0


@pytest.mark.parametrize("positions, prefill_noised, steps_noised",
                         [("generated", False, True), ("prompt", True, False)])
def test_noise_positions_act_on_the_right_calls_at_batch_size_1(toy, positions, prefill_noised, steps_noised):
    model, tokenizer = toy
    injector = NoiseInjector(model, NoiseSpec.from_model_args({"sigma_scale": 0.5, "noise_positions": positions}),
                             tokenizer=tokenizer)
    ids, mask = _unpadded(tokenizer, 1)
    recorder = Recorder(injector)
    recorder.run(model, [7], _generate(model, tokenizer, ids, mask), attention_mask=mask)
    prefill, *steps = recorder.added
    assert bool(torch.all(prefill.norm(dim=-1) > 0)) is prefill_noised
    assert bool(torch.all(prefill == 0)) is not prefill_noised
    assert all(bool(torch.all(step.norm(dim=-1) > 0)) is steps_noised for step in steps)
    assert all(bool(torch.all(step == 0)) is not steps_noised for step in steps)


@pytest.mark.parametrize("schedule, factors", [("first:2", [1, 1, 0, 0]), ("linear:4", [1, 0.75, 0.5, 0.25])])
def test_schedules_scale_each_decoding_step_at_batch_size_1(toy, schedule, factors):
    model, tokenizer = toy
    ids, mask = _unpadded(tokenizer, 1)
    added = {}
    for name in ("constant", schedule):
        injector = NoiseInjector(model, NoiseSpec.from_model_args({"sigma_scale": 0.5, "noise_schedule": name}),
                                 tokenizer=tokenizer)
        recorder = Recorder(injector)
        # Noise this small leaves the greedy tokens unchanged, so both runs see the same inputs.
        recorder.run(model, [7], _generate(model, tokenizer, ids, mask), attention_mask=mask)
        added[name] = recorder.added
    assert torch.equal(added[schedule][0], added["constant"][0])  # the prompt: full noise
    for step, factor in enumerate(factors, start=1):
        assert torch.allclose(added[schedule][step], factor * added["constant"][step], atol=1e-6)


@pytest.mark.parametrize("kwargs", [{}, {"num_beams": 2}, {"num_beams": 2, "num_return_sequences": 2}],
                         ids=["greedy", "beams", "beams-return-2"])
@pytest.mark.parametrize("rows", [1, 2])
def test_generate_with_and_without_cache_agree(toy, kwargs, rows):
    """Without a cache every step recomputes positions 0..p; with it, one position per
    step. Both must add the same noise at every position, so the outputs agree."""
    model, tokenizer = toy
    spec = NoiseSpec.from_model_args({"sigma_scale": 1.5})
    injector = NoiseInjector(model, spec, tokenizer=tokenizer)
    ids, mask = _unpadded(tokenizer, rows)
    seeds = [3, 4][:rows]
    outputs, positions = {}, {}
    for use_cache in (True, False):
        recorder = Recorder(injector)
        outputs[use_cache] = recorder.run(
            model, seeds, _generate(model, tokenizer, ids, mask, use_cache=use_cache, **kwargs), attention_mask=mask)
        positions[use_cache] = recorder.positions
    clean = _generate(model, tokenizer, ids, mask, **kwargs)()
    assert torch.equal(outputs[True], outputs[False])
    assert not torch.equal(outputs[True], clean)
    length = ids.shape[1]
    assert [call[0] for call in positions[False]] == [list(range(length + k)) for k in range(len(positions[False]))]
    assert [call[0] for call in positions[True]][1:] == [[length + k] for k in range(len(positions[True]) - 1)]


@pytest.mark.parametrize("block", [0, 64])
def test_the_hook_used_the_true_positions_through_hf_noise_at_batch_size_1(toy_path, block, monkeypatch):
    """lm-eval's default --batch_size 1, through HFNoiseLM.generate_until: drawn step by
    step, or (the default) the decoding steps' positions in one block from the first."""
    from helpers import generation_requests, make_lm

    monkeypatch.setattr(hooks, "_BLOCK", block)
    lm = make_lm(toy_path, batch_size=1, sigma_scale=0.5)
    sample = lm.injector.sampler.sample
    used = []

    def spy(seeds, repeats, positions, norms=None, **options):
        used.append(positions[0].tolist())
        return sample(seeds, repeats, positions, norms, **options)

    lm.injector.sampler.sample = spy
    lm.generate_until(generation_requests(prompts=[PROMPT], max_gen_toks=3))
    length = len(used[0])
    decoding = [[length], [length + 1]] if block == 0 else [list(range(length, length + block))]
    assert used == [list(range(length)), *decoding]


# --- the position reader on each release's call shapes ------------------------------


class _Cache:
    def __init__(self, length):
        self.length = length

    def get_seq_length(self):
        return self.length


def _positions(**kwargs):
    return call_positions((), kwargs, 2, 3, "cpu")[0].tolist()


@pytest.mark.parametrize("kwargs", [
    {"past_key_values": _Cache(4), "cache_position": torch.arange(4, 7)},  # transformers 4.5x
    {"cache": _Cache(4), "position_ids": torch.arange(4, 7)[None]},  # 5.2x, no mask when unpadded
    {"kv": _Cache(4)},  # a cache under a name no release used yet
    {"position_ids": torch.arange(4, 7).expand(2, 3)},
    {"cache": _Cache(9), "position_ids": torch.arange(4, 7)[None]},  # what the model computes with wins
    {"attention_mask": torch.ones(2, 7, dtype=torch.int64), "cache": _Cache(4)},
    # a static cache's mask runs on past the call's tokens (Bloom)
    {"attention_mask": torch.tensor([[1] * 7 + [0] * 5] * 2), "cache": _Cache(4)},
    {"attention_mask": torch.tensor([[1] * 7 + [0] * 5] * 2), "cache_position": torch.arange(4, 7)},
    # explicit position_ids are what the model computes with, mask or not
    {"attention_mask": torch.ones(2, 3, dtype=torch.int64), "position_ids": torch.arange(4, 7)[None]},
], ids=["4.x", "5.x", "renamed-cache", "position-ids", "position-ids-over-cache", "mask", "static-mask-5.x",
        "static-mask-4.x", "position-ids-over-mask"])
def test_positions_are_read_from_what_each_release_passes(kwargs):
    assert _positions(**kwargs) == [[4, 5, 6], [4, 5, 6]]


def test_padding_is_marked_from_the_mask_whatever_gives_the_positions():
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    positions, visible = call_positions((), {"attention_mask": mask, "position_ids": torch.tensor(
        [[1, 0, 1, 2], [0, 1, 2, 3]])}, 2, 4, "cpu")
    assert visible and positions.tolist() == [[-1, 0, 1, 2], [0, 1, 2, 3]]
    assert call_positions((), {"position_ids": torch.arange(4)[None]}, 2, 4, "cpu")[1] is False


def test_a_call_without_cache_or_positions_holds_the_whole_sequence():
    assert _positions(cache=None, use_cache=True) == [[0, 1, 2], [0, 1, 2]]


@pytest.mark.parametrize("kwargs, why", [
    ({"past_key_values": ((torch.zeros(1, 1, 4, 2),),)}, "no get_seq_length"),
    ({"position_ids": torch.arange(3).expand(3, 2, 3)}, "position_ids of shape"),  # 3-D (multimodal RoPE)
    ({"position_ids": torch.arange(4)[None]}, "position_ids of shape"),
    ({"cache_position": torch.arange(4, 6)}, "cache_position of shape"),
    # a mask for the new tokens only, after a past of 4: it cannot say which are padding
    ({"attention_mask": torch.ones(2, 3, dtype=torch.int64), "cache": _Cache(4)}, "does not cover"),
])
def test_positions_that_cannot_be_determined_are_an_error(kwargs, why):
    with pytest.raises(PositionsUnknown, match=f"{why}.*transformers [0-9]"):
        _positions(**kwargs)


def test_positional_arguments_beyond_the_tokens_are_an_error():
    with pytest.raises(PositionsUnknown, match="positional"):
        call_positions((torch.zeros(2, 3), torch.ones(2, 3)), {}, 2, 3, "cpu")


def test_the_site_called_outside_the_model_is_an_error(toy):
    model, tokenizer = toy
    spec = NoiseSpec.from_model_args({"sigma_scale": 0.5})
    ids = tokenizer([PROMPT], return_tensors="pt")["input_ids"]
    with inject_noise(model, spec, [1], tokenizer=tokenizer), pytest.raises(RuntimeError, match="outside a forward"):
        model.get_input_embeddings()(ids)


def test_embed_noise_with_inputs_embeds_is_an_error_not_silently_skipped(toy):
    model, tokenizer = toy
    spec = NoiseSpec.from_model_args({"sigma_scale": 0.5})
    embeds = model.get_input_embeddings()(tokenizer([PROMPT], return_tensors="pt")["input_ids"])
    with inject_noise(model, spec, [1], tokenizer=tokenizer), pytest.raises(ValueError, match="inputs_embeds"):
        model(inputs_embeds=embeds)


def _bloom(tokenizer):
    """A model without position embeddings whose static-cache mask runs past the call."""
    from transformers import BloomConfig

    torch.manual_seed(0)
    config = BloomConfig(hidden_size=64, n_layer=2, n_head=4, vocab_size=len(tokenizer), bos_token_id=1,
                         eos_token_id=2, pad_token_id=0)
    return AutoModelForCausalLM.from_config(config).eval()


@pytest.mark.parametrize("rows", [1, 2])
def test_a_static_cache_gets_the_noise_of_the_dynamic_one(toy_paths, rows):
    tokenizer = AutoTokenizer.from_pretrained(toy_paths["llama"])
    tokenizer.padding_side = "left"
    model = _bloom(tokenizer)
    injector = NoiseInjector(model, NoiseSpec.from_model_args({"sigma_scale": 1.0}), tokenizer=tokenizer)
    batch = tokenizer([PROMPT, "x = 1"][:rows], return_tensors="pt", padding=True)
    outputs, positions = {}, {}
    for cache in (None, "static"):
        recorder = Recorder(injector)
        outputs[cache] = recorder.run(model, [1, 2][:rows], _generate(
            model, tokenizer, batch["input_ids"], batch["attention_mask"], cache_implementation=cache,
            min_new_tokens=NEW_TOKENS), attention_mask=batch["attention_mask"])
        positions[cache] = recorder.positions
    assert positions["static"] == positions[None]
    assert torch.equal(outputs["static"], outputs[None])


def test_a_left_padded_batch_without_a_2d_mask_is_an_error(toy):
    """Llama's static cache gets a 4-D mask: padding cannot be told from it."""
    model, tokenizer = toy
    tokenizer.padding_side = "left"
    batch = tokenizer([PROMPT, "x = 1"], return_tensors="pt", padding=True)
    if not torch.any(batch["attention_mask"] == 0):
        pytest.skip("the two prompts tokenize to the same length")
    spec = NoiseSpec.from_model_args({"sigma_scale": 0.5})
    with inject_noise(model, spec, [1, 2], attention_mask=batch["attention_mask"], tokenizer=tokenizer), \
            pytest.raises(PositionsUnknown, match="left-padded"):
        model.generate(**batch, max_new_tokens=2, do_sample=False, cache_implementation="static",
                       pad_token_id=tokenizer.pad_token_id)


def _tiny(family: str, vocab: int):
    import transformers

    small = {"vocab_size": vocab, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
    configs = {
        "opt": lambda: transformers.OPTConfig(hidden_size=64, ffn_dim=128, num_hidden_layers=2,
                                              num_attention_heads=4, word_embed_proj_dim=64, **small),
        "gpt_neox": lambda: transformers.GPTNeoXConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                                       num_attention_heads=4, **small),
        "qwen2": lambda: transformers.Qwen2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                                  num_attention_heads=4, num_key_value_heads=2, **small),
    }
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(configs[family]()).eval()


@pytest.mark.parametrize("family", ["opt", "gpt_neox", "qwen2"])
@pytest.mark.parametrize("site", ["embed", "layer:1"])
def test_other_architectures_get_true_positions_at_batch_size_1(toy_paths, family, site):
    """OPT's head calls its decoder directly, not the model that wraps it: the positions
    are read on the module that really runs."""
    tokenizer = AutoTokenizer.from_pretrained(toy_paths["llama"])
    model = _tiny(family, len(tokenizer))
    for parameter in model.parameters():  # larger weights, so that noise changes tokens
        parameter.data.normal_(0, 0.5)
    injector = NoiseInjector(model, NoiseSpec.from_model_args({"sigma_scale": 1.0, "noise_site": site}),
                             tokenizer=tokenizer)
    ids, mask = _unpadded(tokenizer, 1)
    outputs = {}
    for use_cache in (True, False):
        recorder = Recorder(injector)
        outputs[use_cache] = recorder.run(model, [5], _generate(model, tokenizer, ids, mask, use_cache=use_cache,
                                                                min_new_tokens=NEW_TOKENS), attention_mask=mask)
        if use_cache:
            length = ids.shape[1]
            assert recorder.positions == [[list(range(length))]] + [[[length + k]] for k in range(NEW_TOKENS - 1)]
    assert torch.equal(outputs[True], outputs[False])
