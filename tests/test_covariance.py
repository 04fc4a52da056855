"""Residual covariance: against a covariance computed by hand, and its square root."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lm_eval_noise.cli import main
from lm_eval_noise.noise import NoiseInjector, NoiseSpec
from lm_eval_noise.noise.sites import decoder_layers
from lm_eval_noise.tools.covariance import psd_sqrt, read_prompts, residual_covariance

PROMPTS = ["def add(a, b):\n    return a + b", "The quick brown fox", "Knowledge is power.",
           "for i in range(10):\n    print(i)", "Question: How many legs does a spider have?", "x"]


def by_hand(model, tokenizer, prompts, layer):
    rows = []
    block = decoder_layers(model)[layer]
    for prompt in prompts:  # one at a time: no padding at all
        captured = []
        handle = block.register_forward_hook(
            lambda m, i, o, captured=captured: captured.append(o[0] if isinstance(o, tuple) else o))
        with torch.no_grad():
            model(input_ids=tokenizer(prompt, return_tensors="pt")["input_ids"])
        handle.remove()
        rows.append(captured[0][0, 1:].double().numpy())
    return np.cov(np.concatenate(rows).T)


def test_covariance_equals_a_hand_computation_and_its_root_squares_back(toy_path):
    model = AutoModelForCausalLM.from_pretrained(toy_path).eval()
    tokenizer = AutoTokenizer.from_pretrained(toy_path)
    covariance, info = residual_covariance(model, tokenizer, PROMPTS, -1, batch_size=4)
    expected = by_hand(model, tokenizer, PROMPTS, 1)
    assert info["layer"] == 1 and info["vectors"] == sum(len(tokenizer(p)["input_ids"]) - 1 for p in PROMPTS)
    assert np.allclose(covariance, expected, rtol=1e-4, atol=1e-7)
    root = psd_sqrt(covariance)
    assert np.allclose(root, root.T) and np.all(np.linalg.eigvalsh(root) > -1e-9)
    assert np.allclose(root @ root, covariance, atol=1e-6 * np.abs(covariance).max())


def test_covariance_command_writes_files_usable_as_noise_cov_sqrt(toy_path, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(p.replace("\n", " ") for p in PROMPTS))
    out = tmp_path / "cov"
    assert main(["covariance", "--model", toy_path, "--layer", "0", "--prompts", str(prompts),
                 "--batch-size", "2", "--batches", "2", "-o", str(out)]) == 0
    info = json.loads((out / "covariance.json").read_text())
    assert (info["layer"], info["prompts"], info["batches"], info["model"]) == (0, 4, 2, toy_path)
    cov, root = np.load(out / "cov.npy"), np.load(out / "cov_sqrt.npy")
    assert cov.shape == root.shape == (64, 64)
    assert np.allclose(root.astype(np.float64) @ root, cov, atol=1e-4 * np.abs(cov).max())  # its square root
    model = AutoModelForCausalLM.from_pretrained(toy_path).eval()
    spec = NoiseSpec.from_model_args({"sigma_scale": 0.1, "noise_site": "layer:0",
                                      "noise_cov_sqrt": str(out / "cov_sqrt.npy")})
    assert NoiseInjector(model, spec, tokenizer=AutoTokenizer.from_pretrained(toy_path)).reference_norm > 0


def test_prompt_files_in_three_formats(tmp_path):
    (tmp_path / "a.txt").write_text("one\n\ntwo\n")
    (tmp_path / "b.jsonl").write_text('{"prompt": "p"}\n{"text": "t"}\n'
                                      '{"conversation": [{"role": "user", "content": "c"}]}\n')
    assert read_prompts(str(tmp_path / "a.txt")) == ["one", "two"]
    assert read_prompts(str(tmp_path / "b.jsonl")) == ["p", "t", "c"]
    assert len(read_prompts(None)) == 164
    (tmp_path / "bad.jsonl").write_text("{oops\n")
    with pytest.raises(ValueError, match="bad.jsonl:1: not JSON"):
        read_prompts(str(tmp_path / "bad.jsonl"))


def test_an_out_of_range_layer_is_refused(toy_path):
    model = AutoModelForCausalLM.from_pretrained(toy_path).eval()
    with pytest.raises(ValueError, match="--layer 5"):
        residual_covariance(model, AutoTokenizer.from_pretrained(toy_path), PROMPTS, 5)


def test_spectrum_shows_a_massive_dimension_and_shrinkage_spreads_it():
    from lm_eval_noise.tools.covariance import NEARLY_ONE_DIMENSIONAL, shrink, spectrum

    variances = np.full(64, 17.0)
    variances[7] = 1.1e6  # a massive-activation dimension, as on SmolLM2's layer 15
    massive = np.diag(variances)
    shape = spectrum(massive)
    assert shape["effective_rank"] < 1.01 < NEARLY_ONE_DIMENSIONAL
    assert shape["top1_share"] > 0.99
    assert shape["largest_variance_coordinates"][0]["index"] == 7
    assert spectrum(np.eye(64))["effective_rank"] == pytest.approx(64)
    half = shrink(massive, 0.5)
    assert np.trace(half) == pytest.approx(np.trace(massive))
    assert spectrum(half)["effective_rank"] > 3
    assert spectrum(shrink(massive, 1.0))["effective_rank"] == pytest.approx(64)
    with pytest.raises(ValueError, match="--shrinkage 1.5"):
        shrink(massive, 1.5)


def test_covariance_command_records_the_spectrum_and_applies_shrinkage(toy_path, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("def add(a, b):\n    return a + b\nfor i in range(10):\n    print(i)\n")
    output = tmp_path / "cov"
    assert main(["covariance", "--model", toy_path, "--layer", "0", "--prompts", str(prompts),
                 "--shrinkage", "1", "-o", str(output)]) == 0
    info = json.loads((output / "covariance.json").read_text())
    assert info["shrinkage"] == 1.0 and info["spectrum"]["effective_rank"] >= 1
    root = np.load(output / "cov_sqrt.npy").astype(np.float64)
    isotropic = np.trace(np.load(output / "cov.npy")) / root.shape[0]
    assert np.allclose(root @ root, isotropic * np.eye(root.shape[0]), rtol=1e-3, atol=1e-4 * isotropic)
    assert main(["covariance", "--model", toy_path, "--layer", "0", "--shrinkage", "2", "-o", str(output)]) == 2
