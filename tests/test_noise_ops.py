"""What the noise costs per decoding step, counted in torch operations dispatched (the
GPU kernels of a step, visible on a CPU), and that the decoding blocks that make it
cheap add exactly the noise drawing step by step adds (issue 20)."""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch
from test_positions import Recorder
from torch.utils._python_dispatch import TorchDispatchMode

from lm_eval_noise.demo.toymodels import build_model, build_tokenizer
from lm_eval_noise.noise import NoiseInjector, NoiseSpec, hooks, inject_noise
from lm_eval_noise.noise.positions import PositionsUnknown

NEW_TOKENS = 128
MOST_OPS_PER_STEP = 8
VARIANTS = {
    "embed per token": {"sigma_scale": 0.1},
    "embed per sequence": {"sigma_scale": 0.1, "noise_scope": "per_sequence"},
    "layer per token": {"sigma_scale": 0.1, "noise_site": "layer:1"},
    "layer per sequence": {"sigma_scale": 0.1, "noise_site": "layer:1", "noise_scope": "per_sequence"},
    "schedule": {"sigma_scale": 0.1, "noise_schedule": "linear:16"},
    "generated positions only": {"sigma_scale": 0.1, "noise_positions": "generated"},
}


class _Counter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.fixture(scope="module")
def model():
    return build_model("llama", vocab_size=512, hidden_size=64, num_layers=2, num_heads=4)


def _padded_batch():
    ids = torch.randint(3, 500, (4, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, :3] = mask[1, :1] = 0  # left padding, as lm-eval batches prompts
    return ids, mask


def operations_per_step(model, spec: NoiseSpec | None, new_tokens: int = NEW_TOKENS) -> float:
    """Torch operations dispatched by a greedy generate, per new token."""
    ids, mask = _padded_batch()
    injector = NoiseInjector(model, spec, tokenizer=build_tokenizer()) if spec else None
    counter = _Counter()
    noise = inject_noise(model, spec, range(4), attention_mask=mask, injector=injector) if spec else nullcontext()
    with torch.no_grad(), counter, noise:
        model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens,
                       min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    return counter.count / new_tokens


@pytest.mark.parametrize("variant", VARIANTS)
def test_noise_adds_at_most_eight_operations_per_decoding_step(model, variant):
    plain = operations_per_step(model, None)
    noisy = operations_per_step(model, NoiseSpec.from_model_args(dict(VARIANTS[variant])))
    print(f"\n{variant}: {noisy - plain:.1f} operations per step added")
    assert noisy - plain <= MOST_OPS_PER_STEP


def test_drawing_step_by_step_costs_what_the_blocks_save(model, monkeypatch):
    """The counter sees the cost: drawing at every step (the blocks off) adds over a
    hundred operations per step."""
    monkeypatch.setattr(hooks, "_BLOCK", 0)
    plain = operations_per_step(model, None, new_tokens=16)
    assert operations_per_step(model, NoiseSpec(sigma_scale=0.1), new_tokens=16) - plain > 100


SCENARIOS = {
    **{name: (args, {}) for name, args in VARIANTS.items()},
    "two return sequences": ({"sigma_scale": 0.5}, {"num_return_sequences": 2, "do_sample": True}),
    "no cache": ({"sigma_scale": 0.5}, {"use_cache": False}),
}


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("block", [5, 64])
def test_blocks_add_exactly_the_noise_drawn_step_by_step(model, scenario, block):
    """Bit for bit, at every model call: the noise each call added with blocks (of 5, so
    that steps cross block boundaries, and the default) and with the noise drawn step by
    step (today's rule of seed, position and coordinate), and the tokens generated."""
    args, generate = SCENARIOS[scenario]
    spec = NoiseSpec.from_model_args(dict(args))
    injector = NoiseInjector(model, spec, tokenizer=build_tokenizer())
    ids, mask = _padded_batch()
    added, tokens = {}, {}
    for size in (0, block):
        torch.manual_seed(0)  # the sampling of return sequences
        recorder = Recorder(injector, block=size)
        tokens[size] = recorder.run(model, range(4), lambda: model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=12, min_new_tokens=12, pad_token_id=0,
            **{"do_sample": False, **generate}), attention_mask=mask)
        added[size] = recorder.added
    assert len(added[0]) == len(added[block]) == 12
    assert all(torch.equal(a, b) for a, b in zip(added[0], added[block]))
    assert torch.equal(tokens[0], tokens[block])


def test_a_call_that_does_not_advance_one_position_per_step_is_an_error(model):
    """A decoding loop of one's own whose position_ids stand still: the block's positions
    would be wrong, and closing the block says so."""
    from transformers import DynamicCache

    ids, mask = _padded_batch()
    spec = NoiseSpec(sigma_scale=0.1)
    with (pytest.raises(PositionsUnknown, match="did not advance one position per row"), torch.no_grad(),
          inject_noise(model, spec, range(4), attention_mask=mask)):
        cache = DynamicCache()
        positions = (mask.cumsum(1) - 1).clamp_min(0)
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache)
        for _ in range(3):
            mask = torch.cat([mask, torch.ones(4, 1, dtype=mask.dtype)], dim=1)
            step = out.logits[:, -1:].argmax(-1)
            out = model(input_ids=step, attention_mask=mask, position_ids=positions[:, -1:],  # stands still
                        past_key_values=cache)
