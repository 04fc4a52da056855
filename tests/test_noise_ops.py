"""What the noise costs per decoding step, counted in torch operations dispatched (the
GPU kernels of a step, visible on a CPU), and that the decoding blocks that make it
cheap add exactly the noise drawing step by step adds (issue 20)."""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import pytest
import torch
from test_positions import Recorder
from torch.utils._python_dispatch import TorchDispatchMode

from lm_eval_noise.demo.toymodels import build_model, build_tokenizer
from lm_eval_noise.noise import NoiseInjector, NoiseSpec, hooks, inject_noise
from lm_eval_noise.noise import rng as noise_rng
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


@pytest.fixture(scope="module")
def matrix_files(tmp_path_factory) -> dict[str, str]:
    """A cov_sqrt (d x d) and a noise_vectors (K x d) file for the toy model (d = 64)."""
    root = tmp_path_factory.mktemp("matrices")
    rng = np.random.default_rng(0)
    factor = rng.standard_normal((64, 64)).astype(np.float32)
    np.save(root / "cov_sqrt.npy", factor @ factor.T / 64 + np.eye(64, dtype=np.float32))
    np.save(root / "vectors.npy", rng.standard_normal((5, 64)).astype(np.float32))
    return {"cov_sqrt": str(root / "cov_sqrt.npy"), "vectors": str(root / "vectors.npy")}


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
    # A matrix product's rounding depends on how many rows it multiplies at once (on a
    # CPU, below 4 rows a step takes another kernel than a block of 2 x 64 rows).
    "cov_sqrt": ({"sigma_scale": 0.5, "noise_cov_sqrt": "{cov_sqrt}"}, {"rows": 2}),
    "cov_sqrt, 4 rows": ({"sigma_scale": 0.5, "noise_cov_sqrt": "{cov_sqrt}"}, {}),
    "cov_sqrt per sequence": ({"sigma_scale": 0.5, "noise_cov_sqrt": "{cov_sqrt}", "noise_scope": "per_sequence"}, {}),
    "vectors": ({"noise_norm": 2.0, "noise_vectors": "{vectors}"}, {}),
}


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("block", [5, 64])
def test_blocks_add_exactly_the_noise_drawn_step_by_step(model, matrix_files, scenario, block):
    """Bit for bit, at every model call: the noise each call added with blocks (of 5, so
    that steps cross block boundaries, and the default) and with the noise drawn step by
    step (today's rule of seed, position and coordinate), and the tokens generated."""
    args, generate = SCENARIOS[scenario]
    generate = dict(generate)
    rows = generate.pop("rows", 4)
    spec = NoiseSpec.from_model_args({k: v.format(**matrix_files) if isinstance(v, str) else v
                                      for k, v in args.items()})
    injector = NoiseInjector(model, spec, tokenizer=build_tokenizer())
    ids, mask = (part[:rows] for part in _padded_batch())
    added, tokens = {}, {}
    for size in (0, block):
        torch.manual_seed(0)  # the sampling of return sequences
        recorder = Recorder(injector, block=size)
        tokens[size] = recorder.run(model, range(rows), lambda: model.generate(
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


# Recorded from the generator before the decoding blocks existed (commit aae1299): the
# 24-bit uniforms behind `gaussian` and its first normals, for two seeds (one using the
# high 32 bits) at positions including per-sequence (-1) and a far one.
PINNED_SEEDS = [0, 2**62 + 12345]
PINNED_POSITIONS = [[0, 1, 4097], [-1, 7, 100000]]
PINNED_UNIFORMS = [
    [[7064687, 8132887, 14680955], [1157290, 9534450, 10358752], [9076916, 8594425, 13924920]],
    [[5950493, 12948819, 5792042], [16646709, 3728768, 5516365], [15096356, 6732949, 11955451]],
]
PINNED_NORMALS = [  # [row][position][coordinate], coordinates 0 and 3 of 5
    [["0x1.48ab5ep+0", "-0x1.245d38p-2"], ["-0x1.76539cp-1", "0x1.18d2f4p+1"], ["-0x1.100a5cp-4", "-0x1.1b3e48p+0"]],
    [["-0x1.6bf93p+0", "-0x1.d17f18p-3"], ["0x1.038b4ap-4", "-0x1.b936a8p-4"], ["0x1.9d14a8p-2", "0x1.c2964p-3"]],
]


def test_the_generator_draws_what_it_drew_before_the_blocks():
    """The hash is pinned exactly; the normals go through log and cos, whose last bit a
    different CPU's vector code may round otherwise, so they are held to a few ulp."""
    seeds = torch.tensor(PINNED_SEEDS, dtype=torch.int64)
    positions = torch.tensor(PINNED_POSITIONS, dtype=torch.int64)
    keys = noise_rng._position_keys(seeds, positions, noise_rng._STREAM_A)
    coords = noise_rng._coordinate_keys(3, seeds.device, noise_rng._COORD_SALT)
    assert noise_rng._uniform24(keys, coords).tolist() == PINNED_UNIFORMS
    normals = noise_rng.gaussian(seeds, positions, 5)[..., [0, 3]]
    pinned = torch.tensor([[[float.fromhex(x) for x in pair] for pair in row] for row in PINNED_NORMALS])
    torch.testing.assert_close(normals, pinned, rtol=4 * 2.0**-23, atol=0)
