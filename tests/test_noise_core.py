"""The noise core on bare transformers models: scale, scope, positions, shaping, memory."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import replace

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lm_eval_noise.noise import NoiseArgumentError, NoiseInjector, NoiseSampler, NoiseSpec, chi_mean, inject_noise
from lm_eval_noise.noise import hooks as hooks_module
from lm_eval_noise.noise import sampler as sampler_module
from lm_eval_noise.noise.sites import decoder_layers


@pytest.fixture
def toy(toy_path):
    model = AutoModelForCausalLM.from_pretrained(toy_path).eval()
    tokenizer = AutoTokenizer.from_pretrained(toy_path)
    return model, tokenizer


def _spec(**args) -> NoiseSpec:
    return NoiseSpec.from_model_args(dict(args))


def added_noise(model, injector, input_ids, seeds, **batch):
    """The tensor the hook added at its site, [B, T, d], for one plain forward (given
    `attention_mask`, the model gets it too: positions come from the model's call)."""
    outputs = []

    def capture(module, inputs, output):
        outputs.append((output[0] if isinstance(output, tuple) else output).detach().clone())

    with torch.no_grad():
        for noisy in (False, True):
            with inject_noise(model, injector.spec, seeds, injector=injector, **batch) if noisy else nullcontext():
                handle = injector.module.register_forward_hook(capture)  # after the noise hook
                try:
                    model(input_ids=input_ids, attention_mask=batch.get("attention_mask"))
                finally:
                    handle.remove()
    clean, noised = outputs
    return noised - clean


def _ids(tokenizer, rows=4, length=40):
    ids = tokenizer(["The quick brown fox jumps over the lazy dog. " * 6], return_tensors="pt")["input_ids"]
    return ids[:, :length].repeat(rows, 1)


@pytest.mark.parametrize("site", ["embed", "layer:0", "layer:-1"])
def test_noise_norm_matches_sigma_times_reference(toy, site):
    model, tokenizer = toy
    injector = NoiseInjector(model, _spec(sigma_scale=0.3, noise_site=site), tokenizer=tokenizer)
    noise = added_noise(model, injector, _ids(tokenizer, rows=8), seeds=range(8))
    norms = noise.norm(dim=-1).flatten()
    expected = 0.3 * injector.reference_norm
    # 320 vectors in d=64: the mean of chi-distributed norms is within 2% of its expectation.
    assert norms.mean().item() == pytest.approx(expected, rel=0.02)
    assert injector.sampler.expected_norm == pytest.approx(expected)


def test_embed_reference_is_mean_row_norm_of_embedding_output(toy):
    model, tokenizer = toy
    injector = NoiseInjector(model, _spec(sigma_scale=0.1), tokenizer=tokenizer)
    rows = model.get_input_embeddings().weight.detach().norm(dim=-1)
    assert injector.reference_norm == pytest.approx(rows.mean().item(), rel=1e-5)


def test_layer_reference_is_mean_residual_norm_on_calibration_text(toy):
    model, tokenizer = toy
    from lm_eval_noise.noise.sites import CALIBRATION_TEXT

    injector = NoiseInjector(model, _spec(sigma_scale=0.1, noise_site="layer:1"), tokenizer=tokenizer)
    ids = tokenizer(CALIBRATION_TEXT, return_tensors="pt")["input_ids"][:, :256]
    # The output of block 1, caught by a hook: the model's last hidden state (block 1 is
    # the last of two) has the final norm applied.
    captured = []
    handle = decoder_layers(model)[1].register_forward_hook(
        lambda m, i, o: captured.append(o[0] if isinstance(o, tuple) else o)
    )
    with torch.no_grad():
        model(input_ids=ids)
    handle.remove()
    hidden = captured[0]
    assert injector.reference_norm == pytest.approx(hidden[0, 1:].norm(dim=-1).mean().item(), rel=1e-5)


def test_coordinate_mode_has_per_coordinate_std_sigma_times_reference(toy):
    model, tokenizer = toy
    injector = NoiseInjector(model, _spec(sigma_scale=0.05, sigma_mode="coordinate"), tokenizer=tokenizer)
    noise = added_noise(model, injector, _ids(tokenizer, rows=8), seeds=range(8))
    assert noise.std().item() == pytest.approx(0.05 * injector.reference_norm, rel=0.03)
    dim = noise.shape[-1]
    assert injector.sampler.expected_norm == pytest.approx(0.05 * injector.reference_norm * chi_mean(dim))


@pytest.mark.parametrize("shape", ["isotropic", "cov_sqrt", "vectors"])
def test_noise_norm_is_exact_for_every_vector(toy, tmp_path, shape):
    """Recipe B: a unit direction times noise_norm, whatever shapes the direction."""
    model, tokenizer = toy
    dim = model.get_input_embeddings().embedding_dim
    files = {}
    if shape == "cov_sqrt":
        np.save(tmp_path / "a.npy", np.random.default_rng(0).normal(size=(dim, dim)).astype(np.float32))
        files["noise_cov_sqrt"] = str(tmp_path / "a.npy")
    elif shape == "vectors":
        np.save(tmp_path / "v.npy", np.random.default_rng(0).normal(size=(5, dim)).astype(np.float32))
        files["noise_vectors"] = str(tmp_path / "v.npy")
    injector = NoiseInjector(model, _spec(noise_norm=2.5, sigma_scale=0.9, **files), tokenizer=tokenizer)
    norms = added_noise(model, injector, _ids(tokenizer, rows=8), seeds=range(8)).norm(dim=-1)
    assert torch.allclose(norms, torch.full_like(norms, 2.5), rtol=1e-3)


def test_sigma_scale_noise_is_gaussian_with_the_stated_expected_norm(toy):
    model, tokenizer = toy
    injector = NoiseInjector(model, _spec(sigma_scale=0.4), tokenizer=tokenizer)
    noise = added_noise(model, injector, _ids(tokenizer, rows=8), seeds=range(8))
    norms = noise.norm(dim=-1).flatten()
    assert norms.mean().item() == pytest.approx(0.4 * injector.reference_norm, rel=0.02)
    assert norms.std().item() > 0.03 * norms.mean().item()  # chi spread, not one fixed length
    coordinates = (noise.flatten() / (0.4 * injector.reference_norm / chi_mean(noise.shape[-1]))).numpy()
    assert np.std(coordinates) == pytest.approx(1.0, rel=0.03)
    assert abs(float(np.mean(coordinates ** 4)) - 3.0) < 0.15  # Gaussian kurtosis


@pytest.mark.parametrize("args", [{"noise_norm": 1.0}, {"sigma_scale": 0.2}])
def test_a_norm_sweep_keeps_each_samples_directions(toy, args):
    model, tokenizer = toy
    key = next(iter(args))
    noises = []
    for factor in (1.0, 3.0):
        injector = NoiseInjector(model, _spec(**{key: args[key] * factor}), tokenizer=tokenizer)
        noises.append(added_noise(model, injector, _ids(tokenizer, rows=2, length=6), seeds=[7, 8]))
    assert torch.allclose(noises[1], 3.0 * noises[0], rtol=1e-4, atol=1e-6)


def test_per_token_noise_differs_across_positions_and_rows(toy):
    model, tokenizer = toy
    injector = NoiseInjector(model, _spec(sigma_scale=0.5), tokenizer=tokenizer)
    noise = added_noise(model, injector, _ids(tokenizer, rows=2), seeds=[5, 6])
    flat = noise.reshape(-1, noise.shape[-1])
    cosine = torch.nn.functional.cosine_similarity(flat[:, None], flat[None], dim=-1)
    off_diagonal = cosine[~torch.eye(len(flat), dtype=torch.bool)]
    assert off_diagonal.abs().max() < 0.6  # independent 64-d Gaussians are far from parallel


def test_per_sequence_noise_is_one_vector_per_sample(toy):
    model, tokenizer = toy
    injector = NoiseInjector(model, _spec(sigma_scale=0.5, noise_scope="per_sequence"), tokenizer=tokenizer)
    noise = added_noise(model, injector, _ids(tokenizer, rows=2), seeds=[5, 6])
    assert torch.allclose(noise[0], noise[0, :1].expand_as(noise[0]), atol=1e-6)
    assert not torch.allclose(noise[0, 0], noise[1, 0])


@pytest.mark.parametrize("scope", ["per_token", "per_sequence"])
@pytest.mark.parametrize("site", ["embed", "layer:1"])
def test_cached_decoding_gets_the_same_noise_as_a_full_forward(toy, scope, site):
    """Position p's noise is the same in the prefill and in a cached step: greedy decoding
    with the KV cache equals teacher forcing the finished sequences in one noisy forward."""
    model, tokenizer = toy
    spec = _spec(sigma_scale=1.5, noise_scope=scope, noise_site=site)
    injector = NoiseInjector(model, spec, tokenizer=tokenizer)
    tokenizer.padding_side = "left"
    batch = tokenizer(["def add(a, b):", "The quick brown fox jumps"], return_tensors="pt", padding=True)
    seeds = [11, 12]
    with inject_noise(model, spec, seeds, attention_mask=batch["attention_mask"], injector=injector):
        out = model.generate(
            **batch, max_new_tokens=8, do_sample=False, output_scores=True, return_dict_in_generate=True,
            pad_token_id=tokenizer.pad_token_id,
        )
    steps = torch.stack(out.scores, dim=1)  # [B, new, vocab]
    full_mask = torch.cat([batch["attention_mask"], torch.ones_like(out.sequences[:, batch["input_ids"].shape[1]:])], 1)
    with torch.no_grad(), inject_noise(model, spec, seeds, attention_mask=batch["attention_mask"], injector=injector):
        positions = (full_mask.cumsum(dim=1) - 1).clamp_min(0)  # as generate() computes them
        logits = model(input_ids=out.sequences, attention_mask=full_mask, position_ids=positions).logits
    prompt_width = batch["input_ids"].shape[1]
    teacher = logits[:, prompt_width - 1 : -1]
    assert torch.allclose(teacher, steps, atol=1e-4)


@pytest.mark.parametrize("positions", ["prompt", "generated"])
def test_noise_positions_limit_where_noise_lands(toy, positions):
    model, tokenizer = toy
    injector = NoiseInjector(model, _spec(sigma_scale=0.5, noise_positions=positions), tokenizer=tokenizer)
    ids = _ids(tokenizer, rows=2, length=12)
    noise = added_noise(model, injector, ids, seeds=[1, 2], prompt_lengths=[5, 8])
    has_noise = noise.norm(dim=-1) > 0
    prompt = torch.arange(12)[None] < torch.tensor([5, 8])[:, None]
    assert torch.equal(has_noise, prompt if positions == "prompt" else ~prompt)


def test_left_padding_gets_no_noise_and_positions_start_at_first_real_token(toy):
    model, tokenizer = toy
    injector = NoiseInjector(model, _spec(sigma_scale=0.5), tokenizer=tokenizer)
    ids = _ids(tokenizer, rows=1, length=10)
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), ids], dim=1)
    mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 10, dtype=torch.long)], dim=1)
    unpadded_noise = added_noise(model, injector, ids, seeds=[9])
    padded_noise = added_noise(model, injector, padded, seeds=[9], attention_mask=mask)
    assert torch.all(padded_noise[0, :3] == 0)
    assert torch.allclose(padded_noise[0, 3:], unpadded_noise[0], atol=1e-6)


def test_decoder_layers_returning_tuples_get_the_same_noise_as_tensors(toy):
    model, tokenizer = toy
    injector = NoiseInjector(model, _spec(sigma_scale=0.3, noise_site="layer:0"), tokenizer=tokenizer)
    hidden = torch.randn(2, 5, model.get_input_embeddings().embedding_dim)
    extra = object()
    results = []
    for output in (hidden, (hidden, extra)):
        hook = hooks_module._NoiseHook(injector, hooks_module.NoiseBatch.build([1, 2]))
        hook.read_positions(injector.body, (), {"input_ids": torch.zeros(2, 5, dtype=torch.int64)})
        results.append(hook(injector.module, (hidden,), output))
    as_tensor, as_tuple = results
    assert isinstance(as_tuple, tuple) and as_tuple[1] is extra
    assert torch.equal(as_tuple[0], as_tensor)
    assert not torch.equal(as_tensor, hidden)


def test_cov_sqrt_shapes_the_noise_directions(toy, tmp_path):
    model, tokenizer = toy
    dim = model.get_input_embeddings().embedding_dim
    direction = torch.randn(dim, generator=torch.Generator().manual_seed(0))
    direction /= direction.norm()
    rank_one = torch.outer(direction, direction).numpy()  # C^1/2 of a rank-1 covariance
    np.save(tmp_path / "cov_sqrt.npy", rank_one)
    spec = _spec(sigma_scale=0.4, noise_cov_sqrt=str(tmp_path / "cov_sqrt.npy"))
    injector = NoiseInjector(model, spec, tokenizer=tokenizer)
    noise = added_noise(model, injector, _ids(tokenizer, rows=8), seeds=range(8)).reshape(-1, dim)
    cosine = (noise @ direction).abs() / noise.norm(dim=-1)
    assert torch.all(cosine > 0.999)  # every draw lies along the one direction
    assert noise.norm(dim=-1).mean().item() == pytest.approx(0.4 * injector.reference_norm, rel=0.02)


def test_cov_sqrt_is_applied_as_a_times_u_not_its_transpose(toy, tmp_path):
    """Recipe B computes v = cov_sqrt @ u. For A = e0 w^T (not symmetric), A u = (w.u) e0
    lies along e0, while A^T u = u0 w would lie along w."""
    model, tokenizer = toy
    dim = model.get_input_embeddings().embedding_dim
    w = torch.randn(dim, generator=torch.Generator().manual_seed(1))
    factor = torch.zeros(dim, dim)
    factor[0] = w
    np.save(tmp_path / "factor.npy", factor.numpy())
    spec = _spec(sigma_scale=0.4, noise_cov_sqrt=str(tmp_path / "factor.npy"))
    injector = NoiseInjector(model, spec, tokenizer=tokenizer)
    noise = added_noise(model, injector, _ids(tokenizer, rows=4), seeds=range(4)).reshape(-1, dim)
    assert torch.all(noise[:, 0].abs() / noise.norm(dim=-1) > 0.999)


@pytest.mark.parametrize("matrix, message", [
    (np.zeros((4, 4)), "not all zero"),
    (np.full((4, 4), np.nan), "finite"),
])
def test_degenerate_cov_sqrt_files_are_refused(tmp_path, matrix, message):
    np.save(tmp_path / "bad.npy", matrix)
    with pytest.raises(NoiseArgumentError, match=message):
        _spec(sigma_scale=0.1, noise_cov_sqrt=str(tmp_path / "bad.npy"))


def test_suspicious_cov_sqrt_files_are_warned_about(tmp_path):
    rank_one = np.outer(np.arange(1.0, 9.0), np.arange(1.0, 9.0))
    np.save(tmp_path / "flat.npy", rank_one)
    with pytest.warns(UserWarning, match="effective rank 1.00"):
        spec = _spec(sigma_scale=0.1, noise_cov_sqrt=str(tmp_path / "flat.npy"))
    assert spec.to_record()["cov_sqrt_effective_rank"] == pytest.approx(1.0)
    np.save(tmp_path / "indefinite.npy", np.diag([1.0, -1.0, 2.0, 3.0]))
    with pytest.warns(UserWarning, match="not positive semi-definite"):
        _spec(sigma_scale=0.1, noise_cov_sqrt=str(tmp_path / "indefinite.npy"))


def test_noise_vectors_per_sequence_use_row_repeat_mod_k(toy, tmp_path):
    model, tokenizer = toy
    dim = model.get_input_embeddings().embedding_dim
    vectors = np.random.default_rng(0).normal(size=(3, dim)).astype(np.float32)
    np.save(tmp_path / "vectors.npy", vectors)
    spec = _spec(noise_norm=2.0, noise_scope="per_sequence", noise_vectors=str(tmp_path / "vectors.npy"))
    injector = NoiseInjector(model, spec, tokenizer=tokenizer)
    noise = added_noise(model, injector, _ids(tokenizer, rows=4), seeds=[1, 2, 3, 4], repeats=[0, 1, 2, 3])
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    for row, vector_index in enumerate([0, 1, 2, 0]):
        expected = torch.from_numpy(unit[vector_index] * 2.0).expand_as(noise[row])
        assert torch.allclose(noise[row], expected, atol=1e-5)


def test_noise_vectors_per_token_pick_a_row_per_position_from_the_seed(toy, tmp_path):
    """Per token, each position adds one of the file's rows at exactly noise_norm: rows
    vary across positions, and the choice is a function of (seed, position)."""
    model, tokenizer = toy
    dim = model.get_input_embeddings().embedding_dim
    vectors = np.random.default_rng(0).normal(size=(4, dim)).astype(np.float32)
    np.save(tmp_path / "vectors.npy", vectors)
    spec = _spec(noise_norm=2.0, noise_scope="per_token", noise_vectors=str(tmp_path / "vectors.npy"))
    injector = NoiseInjector(model, spec, tokenizer=tokenizer)
    ids = _ids(tokenizer, rows=2)
    noise = added_noise(model, injector, ids, seeds=[5, 6])
    unit = torch.from_numpy(vectors / np.linalg.norm(vectors, axis=1, keepdims=True)) * 2.0
    distance = (noise[:, :, None, :] - unit[None, None]).norm(dim=-1)  # [B, T, K]
    chosen = distance.argmin(dim=-1)
    assert distance.min(dim=-1).values.max() < 1e-4  # every position is exactly one scaled row
    assert all(len(set(row.tolist())) >= 3 for row in chosen)  # rows vary along the sequence
    assert not torch.equal(chosen[0], chosen[1])  # and with the seed
    again = added_noise(model, injector, ids[:1], seeds=[5])
    assert torch.allclose(again[0], noise[0], atol=1e-6)  # same seed, same rows


def test_noise_is_drawn_in_bounded_chunks_and_once_per_block_of_decoding_steps(toy, monkeypatch):
    """The prefill's noise in chunks of at most MAX_DRAW_ELEMENTS; the decoding steps'
    in one block of _BLOCK positions per row (in the same chunks), drawn at the first step
    and served from there: no draw per step."""
    model, tokenizer = toy
    spec = _spec(sigma_scale=0.5)
    injector = NoiseInjector(model, spec, tokenizer=tokenizer)
    monkeypatch.setattr(sampler_module, "MAX_DRAW_ELEMENTS", 4 * 64 * 8)  # 8 positions of 4 rows
    monkeypatch.setattr(hooks_module, "_BLOCK", 16)
    shapes = []
    sample = injector.sampler.sample

    def recording_sample(seeds, repeats, positions, norms=None, **options):
        out = sample(seeds, repeats, positions, norms, **options)
        shapes.append(tuple(out.shape))
        return out

    monkeypatch.setattr(injector.sampler, "sample", recording_sample)
    ids = _ids(tokenizer, rows=4, length=20)
    with inject_noise(model, spec, range(4), attention_mask=torch.ones_like(ids), injector=injector):
        model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=20,
                       min_new_tokens=20, do_sample=False, pad_token_id=0)
    dim = model.get_input_embeddings().embedding_dim
    assert shapes[:3] == [(4, 8, dim), (4, 8, dim), (4, 4, dim)]  # prefill of 20, in chunks
    # 19 decoding steps: a block of 16 (two chunks) at the first, the next at the 17th.
    assert shapes[3:] == [(4, 8, dim)] * 4


def test_embedding_scaled_inside_the_module_is_measured_after_the_scale():
    """Gemma 3 multiplies by sqrt(d) inside its embedding module; the reference is the
    module's output, the tensor the noise is added to."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from lm_eval_noise.demo.toymodels import build_tokenizer

    config = Gemma3TextConfig(
        vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, head_dim=16, max_position_embeddings=512,
    )
    model = Gemma3ForCausalLM(config).eval()
    embedding = model.get_input_embeddings()
    injector = NoiseInjector(model, _spec(sigma_scale=0.2), tokenizer=build_tokenizer())
    table_norm = embedding.weight.detach().norm(dim=-1).mean().item()
    assert injector.reference_norm == pytest.approx(table_norm * embedding.embed_scale.item(), rel=1e-5)
    ids = torch.randint(3, 512, (4, 16), generator=torch.Generator().manual_seed(0))
    noise = added_noise(model, injector, ids, seeds=range(4))
    assert noise.norm(dim=-1).mean().item() == pytest.approx(0.2 * injector.reference_norm, rel=0.03)


def test_noise_is_regenerated_from_the_sample_seed_alone(toy):
    model, tokenizer = toy
    spec = _spec(sigma_scale=0.5, noise_site="layer:1")
    injector = NoiseInjector(model, spec, tokenizer=tokenizer)
    noise = added_noise(model, injector, _ids(tokenizer, rows=2, length=10), seeds=[123, 456])
    fresh = NoiseSampler(spec, injector.reference_norm, noise.shape[-1], torch.device("cpu"))
    again = fresh.sample(torch.tensor([456]), torch.tensor([0]), torch.arange(10)[None])
    assert torch.allclose(again[0], noise[1], atol=1e-6)


@pytest.mark.parametrize("site", ["embed", "layer:1"])
def test_generation_without_cache_gets_the_same_noise_as_with_it(toy, site):
    """Positions come from the forward call, not a per-hook counter: without a KV cache
    every step recomputes positions 0..p, and each gets the noise it got the first time."""
    model, tokenizer = toy
    spec = _spec(sigma_scale=1.5, noise_site=site, noise_positions="generated")
    injector = NoiseInjector(model, spec, tokenizer=tokenizer)
    tokenizer.padding_side = "left"
    batch = tokenizer(["def add(a, b):", "The quick brown fox jumps"], return_tensors="pt", padding=True)
    outputs = []
    for use_cache in (True, False):
        with inject_noise(model, spec, [3, 4], attention_mask=batch["attention_mask"], injector=injector):
            outputs.append(model.generate(**batch, max_new_tokens=8, do_sample=False, use_cache=use_cache,
                                          pad_token_id=tokenizer.pad_token_id))
    clean = model.generate(**batch, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert torch.equal(outputs[0], outputs[1])
    assert not torch.equal(outputs[0], clean)


def test_a_second_forward_in_one_block_gets_the_same_noise(toy):
    model, tokenizer = toy
    injector = NoiseInjector(model, _spec(sigma_scale=0.5, noise_positions="generated"), tokenizer=tokenizer)
    ids = _ids(tokenizer, rows=2, length=12)
    with torch.no_grad(), inject_noise(model, injector.spec, [1, 2], prompt_lengths=[5, 8], injector=injector):
        first = model(input_ids=ids).logits
        second = model(input_ids=ids).logits
    clean = model(input_ids=ids).logits.detach()
    assert torch.equal(first, second)
    # The prompt stays clean: logits at prompt positions equal the noiseless ones.
    assert torch.allclose(first[0, :5], clean[0, :5]) and torch.allclose(first[1, :8], clean[1, :8])
    assert not torch.allclose(first[0, 5:], clean[0, 5:])


@pytest.mark.parametrize("mode", ["norm", "coordinate"])
def test_prompt_reference_scales_each_row_by_its_own_prompt(toy, mode):
    """Recipe A: sigma = sigma_scale x mean_i ||E(x_i)|| over the row's prompt tokens
    (padding excluded), in place of the vocabulary mean; the directions stay the same."""
    model, tokenizer = toy
    ids = torch.tensor([[0, 0, 5, 17, 99, 230, 301, 7], [11, 12, 13, 14, 15, 16, 17, 18]])
    mask = (torch.arange(8)[None] >= torch.tensor([[2], [0]])).long()
    prompt_lengths = [4, 5]  # real prompt tokens: 4 after 2 pads, and the first 5
    noises = {}
    for reference in ("vocab", "prompt"):
        spec = _spec(sigma_scale=0.3, sigma_mode=mode, noise_reference=reference)
        injector = NoiseInjector(model, spec, tokenizer=tokenizer)
        noises[reference] = added_noise(model, injector, ids, seeds=[1, 2], attention_mask=mask,
                                        prompt_lengths=prompt_lengths)
    table = model.get_input_embeddings().weight.detach().norm(dim=-1)
    for row, prompt in enumerate([ids[0, 2:6], ids[1, :5]]):
        ratio = table[prompt].mean() / injector.reference_norm
        real = mask[row].bool()
        assert torch.allclose(noises["prompt"][row, real], ratio * noises["vocab"][row, real], rtol=1e-4, atol=1e-6)
        assert torch.all(noises["prompt"][row, ~real] == 0)


def test_prompt_reference_with_an_absolute_norm_is_refused():
    with pytest.raises(NoiseArgumentError, match="noise_reference"):
        _spec(noise_norm=1.0, noise_reference="prompt")


@pytest.mark.parametrize("schedule, factors", [
    ("linear:4", [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]),
    ("exp:2", [1.0, 2 ** -0.5, 0.5, 2 ** -1.5, 0.25, 2 ** -2.5]),
    ("first:2", [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]),
])
def test_schedules_scale_generated_positions_only(toy, schedule, factors):
    model, tokenizer = toy
    ids = _ids(tokenizer, rows=1, length=10)
    noise = {}
    for name in ("constant", schedule):
        injector = NoiseInjector(model, _spec(sigma_scale=0.5, noise_schedule=name), tokenizer=tokenizer)
        noise[name] = added_noise(model, injector, ids, seeds=[4], prompt_lengths=[4])
    assert torch.equal(noise[schedule][0, :4], noise["constant"][0, :4])  # the prompt: full noise
    want = torch.tensor(factors)[:, None] * noise["constant"][0, 4:]
    assert torch.allclose(noise[schedule][0, 4:], want, atol=1e-6)


@pytest.mark.parametrize("bad", ["linear", "linear:0", "linear:2.5", "exp:-1", "first:x", "cosine:3", "constant:1"])
def test_malformed_schedules_are_refused(bad):
    with pytest.raises(NoiseArgumentError, match="noise_schedule"):
        _spec(sigma_scale=0.1, noise_schedule=bad)


def test_noise_below_bf16_rounding_is_warned_about_at_load(toy_path):
    import warnings

    tokenizer = AutoTokenizer.from_pretrained(toy_path)
    half = AutoModelForCausalLM.from_pretrained(toy_path, dtype=torch.bfloat16).eval()
    with pytest.warns(UserWarning, match="rounded away"):
        NoiseInjector(half, _spec(sigma_scale=0.001), tokenizer=tokenizer)
    full = AutoModelForCausalLM.from_pretrained(toy_path).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        NoiseInjector(half, _spec(sigma_scale=0.05), tokenizer=tokenizer)
        NoiseInjector(full, _spec(sigma_scale=0.001), tokenizer=tokenizer)
    # The warning is right: in bf16 most of that small noise really does vanish.
    ids = _ids(tokenizer, rows=2, length=16)
    with pytest.warns(UserWarning):
        small = NoiseInjector(half, _spec(sigma_scale=0.001), tokenizer=tokenizer)
    added = added_noise(half, small, ids, seeds=[1, 2]).float()
    assert (added == 0).float().mean() > 0.5


@pytest.mark.parametrize("args, argument", [
    ({"noise_norm": 1.0, "reference": "prompt"}, "noise_reference"),
    ({"sigma_scale": -1.0}, "sigma_scale"),
    ({"sigma_scale": 0.1, "scope": "per_seq"}, "noise_scope"),
    ({"sigma_scale": 0.1, "site": "layer"}, "noise_site"),
    ({"sigma_scale": 0.1, "schedule": "cosine:2"}, "noise_schedule"),
])
def test_a_spec_built_directly_is_validated_too(args, argument):
    with pytest.raises(NoiseArgumentError, match=argument):
        NoiseSpec(**args)


def _one_axis_files(tmp_path, dim):
    """A cov_sqrt that allows coordinate 3 only, and one noise vector along coordinate 3."""
    factor = np.zeros((dim, dim), dtype=np.float32)
    factor[3, 3] = 1.0
    np.save(tmp_path / "cov_sqrt.npy", factor)
    np.save(tmp_path / "vectors.npy", factor[3:4])
    return {"noise_cov_sqrt": str(tmp_path / "cov_sqrt.npy"), "noise_vectors": str(tmp_path / "vectors.npy")}


@pytest.mark.parametrize("argument, field", [("noise_cov_sqrt", "cov_sqrt_path"), ("noise_vectors", "vectors_path")])
def test_a_spec_built_directly_uses_its_file_as_one_from_model_args_does(toy, tmp_path, argument, field):
    model, tokenizer = toy
    dim = model.get_input_embeddings().embedding_dim
    path = _one_axis_files(tmp_path, dim)[argument]
    ids = _ids(tokenizer, rows=2, length=6)
    noise = {}
    for name, spec in (("direct", NoiseSpec(sigma_scale=0.5, **{field: path})),
                       ("model_args", _spec(sigma_scale=0.5, **{argument: path}))):
        noise[name] = added_noise(model, NoiseInjector(model, spec, tokenizer=tokenizer), ids, seeds=[1, 2])
    assert torch.equal(noise["direct"], noise["model_args"])
    energy = noise["direct"][..., 3].pow(2).sum() / noise["direct"].pow(2).sum()
    assert energy.item() == pytest.approx(1.0)  # all of it on the one allowed coordinate


def test_a_matrix_cannot_be_given_apart_from_its_file(tmp_path):
    with pytest.raises(TypeError, match="cov_sqrt"):
        NoiseSpec(sigma_scale=0.5, cov_sqrt=np.eye(4, dtype=np.float32))
    first, second = tmp_path / "a.npy", tmp_path / "b.npy"
    np.save(first, np.eye(4, dtype=np.float32))
    np.save(second, np.diag([1.0, 2.0, 3.0, 4.0]).astype(np.float32))
    spec = NoiseSpec(sigma_scale=0.5, cov_sqrt_path=str(first))
    moved = replace(spec, cov_sqrt_path=str(second))  # the record and the noise move together
    # (held scaled to a largest entry of 1: only A u's direction counts)
    assert np.array_equal(moved.cov_sqrt, np.diag([0.25, 0.5, 0.75, 1.0])) and np.array_equal(spec.cov_sqrt, np.eye(4))


@pytest.mark.parametrize("schedule", ["exp:1.2345678", "linear:1234567", "first:3", "exp:0.1"])
def test_a_schedule_name_parses_back_to_the_same_schedule(schedule):
    spec = _spec(sigma_scale=0.1, noise_schedule=schedule)
    assert NoiseSpec.from_record(spec.to_record()).schedule == spec.schedule


def test_a_fractional_seed_is_refused_however_the_spec_is_built():
    with pytest.raises(NoiseArgumentError, match="noise_seed"):
        NoiseSpec(sigma_scale=0.1, seed=1.7)


@pytest.mark.parametrize("args", [
    {"sigma_scale": 0.3},
    {"noise_norm": 2.0, "noise_site": "layer:-1", "noise_scope": "per_sequence", "noise_seed": 7},
    {"sigma_scale": 0.1, "sigma_mode": "coordinate", "noise_positions": "generated", "noise_schedule": "exp:4"},
    {"sigma_scale": 0.2, "noise_reference": "prompt", "noise_schedule": "first:3"},
    {"sigma_scale": 0.2, "cov": "noise_cov_sqrt"},
    {"noise_norm": 1.5, "cov": "noise_vectors", "noise_scope": "per_sequence"},
])
def test_a_record_reads_back_as_the_spec_that_wrote_it(toy, tmp_path, args):
    model, tokenizer = toy
    dim = model.get_input_embeddings().embedding_dim
    args = dict(args)
    if "cov" in args:
        argument = args.pop("cov")
        args[argument] = _one_axis_files(tmp_path, dim)[argument]
    spec = NoiseInjector(model, _spec(**args), tokenizer=tokenizer).spec  # layer resolved, as recorded
    again = NoiseSpec.from_record(spec.to_record())
    assert again == spec and again.to_record() == spec.to_record()
    seeds, repeats, positions = torch.tensor([5, 6]), torch.tensor([0, 1]), torch.arange(4).expand(2, 4)
    assert torch.equal(NoiseSampler(again, 3.0, dim, torch.device("cpu")).sample(seeds, repeats, positions),
                       NoiseSampler(spec, 3.0, dim, torch.device("cpu")).sample(seeds, repeats, positions))


def test_a_record_whose_file_changed_is_refused(tmp_path):
    path = _one_axis_files(tmp_path, 8)["noise_vectors"]
    record = _spec(noise_norm=1.0, noise_vectors=path).to_record()
    np.save(path, np.ones((1, 8), dtype=np.float32))
    with pytest.raises(ValueError, match="changed since the run"):
        NoiseSpec.from_record(record)
