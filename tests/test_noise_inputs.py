"""Every noise input is finite and representable end to end, or refused in one line before
a model loads (issue 28, item 5)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lm_eval_noise.noise import NoiseSpec
from lm_eval_noise.noise.sampler import NoiseSampler
from lm_eval_noise.noise.spec import NoiseArgumentError

DIM = 16


def _unit_noise(spec: NoiseSpec, seeds=(11, 12, 13), positions=4) -> torch.Tensor:
    sampler = NoiseSampler(spec, reference_norm=1.0, dim=DIM, device=torch.device("cpu"))
    seeds = torch.tensor(seeds, dtype=torch.int64)
    grid = torch.arange(positions, dtype=torch.int64).expand(len(seeds), positions)
    return sampler.sample(seeds, torch.zeros_like(seeds), grid)


def _save(tmp_path, name, matrix) -> str:
    path = tmp_path / f"{name}.npy"
    np.save(path, matrix)
    return str(path)


@pytest.mark.parametrize("scale", [1e20, 1e-30, 3.0])
def test_a_cov_sqrts_scale_changes_nothing(tmp_path, scale):
    """1e20 * I overflowed the norm of A u in float32 (zero noise: sigma 0.5 gave sigma 0's
    outputs, rank NaN); 1e-30 * I raised ZeroDivisionError."""
    base = np.random.default_rng(0).normal(size=(DIM, DIM))
    reference = _unit_noise(NoiseSpec(sigma_scale=0.5, cov_sqrt_path=_save(tmp_path, "base", base)))
    spec = NoiseSpec(sigma_scale=0.5, cov_sqrt_path=_save(tmp_path, "scaled", base * scale))
    noise = _unit_noise(spec)
    assert torch.isfinite(noise).all() and noise.norm(dim=-1).min() > 0
    assert torch.allclose(noise, reference, rtol=1e-5, atol=0)
    assert np.isfinite(spec.cov_sqrt_effective_rank)
    json.dumps(spec.to_record(), allow_nan=False)  # strict JSON


@pytest.mark.parametrize("scale", [1e20, 1e-22])
def test_vector_rows_of_any_scale_give_exact_norms(tmp_path, scale):
    """Rows of 1e20 overflowed to zero noise, rows of 1e-22 gave norm 1.0097, not 1."""
    rows = np.random.default_rng(1).normal(size=(3, DIM)) * scale
    spec = NoiseSpec(noise_norm=2.0, vectors_path=_save(tmp_path, "vectors", rows))
    norms = _unit_noise(spec).norm(dim=-1)
    assert torch.allclose(norms, torch.full_like(norms, 2.0), rtol=1e-6, atol=0)


def test_a_complex_matrix_is_refused_not_truncated(tmp_path):
    matrix = np.eye(DIM) * (1 + 1j)
    with pytest.raises(NoiseArgumentError, match="real \\(not complex\\)"):
        NoiseSpec(sigma_scale=0.1, cov_sqrt_path=_save(tmp_path, "complex", matrix))


@pytest.mark.parametrize("given, seed", [
    (2**53 + 1, 2**53 + 1),  # as lm_eval's parser gives it: an int, kept exact
    ("9007199254740993", 2**53 + 1),
    (-1.0, -1),  # an integral float, where it is exact
    ("7", 7),
])
def test_integer_seeds_are_parsed_as_integers(given, seed):
    assert NoiseSpec.from_model_args({"noise_seed": given}).seed == seed


@pytest.mark.parametrize("given", [2.0**53 + 2, 1.5, "seven", True])
def test_seeds_that_are_not_exact_integers_are_refused(given):
    with pytest.raises(NoiseArgumentError, match="noise_seed"):
        NoiseSpec.from_model_args({"noise_seed": given})


def test_the_two_seed_values_a_float_confused_now_differ():
    first = _unit_noise(NoiseSpec(sigma_scale=1.0, seed=2**53))
    assert NoiseSpec.from_model_args({"noise_seed": 2**53 + 1}).seed != NoiseSpec(seed=2**53).seed
    assert first.shape[-1] == DIM


@pytest.mark.parametrize("args", [{"sigma_scale": 1e308}, {"noise_norm": 1e39}, {"sigma_scale": "inf"},
                                  {"sigma_scale": "nan"}, {"noise_norm": -1}])
def test_sizes_beyond_float32_are_refused_before_loading(args):
    with pytest.raises(NoiseArgumentError, match="float32's largest"):
        NoiseSpec.from_model_args(dict(args))


def test_a_scale_whose_noise_overflows_for_this_model_is_refused_when_the_model_is_known():
    spec = NoiseSpec(sigma_scale=1e37)
    with pytest.raises(NoiseArgumentError, match="finite in float32"):
        NoiseSampler(spec, reference_norm=1e3, dim=DIM, device=torch.device("cpu"))
    NoiseSampler(spec, reference_norm=1.0, dim=DIM, device=torch.device("cpu"))  # 1e37: finite


def test_noise_in_the_models_dtype_must_be_finite_there(toy_paths):
    from transformers import AutoModelForCausalLM

    from lm_eval_noise.noise.hooks import NoiseInjector

    model = AutoModelForCausalLM.from_pretrained(toy_paths["llama"]).to(torch.float16)
    with pytest.raises(NoiseArgumentError, match="finite in float16"):
        NoiseInjector(model, NoiseSpec(noise_norm=1e6))
    NoiseInjector(model, NoiseSpec(noise_norm=1e3))  # well inside float16's 65504


def test_cov_sqrt_noise_is_bit_identical_in_any_batch_and_step(tmp_path):
    """A u was one product over all rows drawn together: a row's noise differed by up to
    1e-7 between batch sizes and between a prefill and a cached step."""
    matrix = np.random.default_rng(2).normal(size=(DIM, DIM))
    spec = NoiseSpec(sigma_scale=1.0, cov_sqrt_path=_save(tmp_path, "cov", matrix))
    sampler = NoiseSampler(spec, reference_norm=1.0, dim=DIM, device=torch.device("cpu"))
    seeds = torch.arange(100, 108, dtype=torch.int64)
    repeats = torch.zeros_like(seeds)
    positions = torch.arange(6, dtype=torch.int64)
    prefill = sampler.sample(seeds, repeats, positions.expand(8, 6))  # batch 8, all positions at once
    for batch in (1, 2, 8):
        drawn = sampler.sample(seeds[:batch], repeats[:batch], positions.expand(batch, 6))
        assert torch.equal(drawn, prefill[:batch])
    for step in range(6):  # one decoding step at a time, batch 2
        drawn = sampler.sample(seeds[:2], repeats[:2], positions[step:step + 1].expand(2, 1))
        assert torch.equal(drawn[:, 0], prefill[:2, step])
