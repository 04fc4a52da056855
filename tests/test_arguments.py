"""Argument parsing and every error path: one clear message, before any weights load."""

from __future__ import annotations

import numpy as np
import pytest
import transformers
from helpers import make_lm

from lm_eval_noise.noise import NoiseArgumentError, NoiseSpec
from lm_eval_noise.noise.spec import OWNED_ARGS


def test_defaults_mean_no_noise():
    spec = NoiseSpec.from_model_args({})
    assert not spec.active
    assert (spec.site_name, spec.scope, spec.positions, spec.sigma_mode, spec.seed) == (
        "embed", "per_token", "all", "norm", 0,
    )


def test_cli_typed_values_are_coerced():
    # lm_eval's CLI parser turns "-1" into -1.0 and numbers into floats.
    spec = NoiseSpec.from_model_args(
        {"sigma_scale": 1, "noise_seed": -1.0, "noise_site": "layer:-2", "noise_norm": "0.5"}
    )
    assert (spec.sigma_scale, spec.seed, spec.layer, spec.noise_norm) == (1.0, -1, -2, 0.5)
    assert spec.active


def test_parsing_pops_only_owned_arguments():
    args = {"sigma_scale": 0.1, "noise_site": "embed", "dtype": "float32", "quantization": "none"}
    NoiseSpec.from_model_args(args)
    assert args == {"dtype": "float32", "quantization": "none"}


def test_an_argument_far_from_ours_is_left_for_hflm():
    args = {"sigma": 0.1, "revision": "main"}
    spec = NoiseSpec.from_model_args(args)
    assert args == {"sigma": 0.1, "revision": "main"} and not spec.active


@pytest.mark.parametrize(
    "args, argument, valid",
    [
        ({"sigma_scale": -0.1}, "sigma_scale", ">= 0"),
        ({"sigma_scale": "abc"}, "sigma_scale", ">= 0"),
        ({"sigma_scale": float("nan")}, "sigma_scale", ">= 0"),
        ({"noise_norm": -3}, "noise_norm", ">= 0"),
        ({"sigma_mode": "std"}, "sigma_mode", "norm, coordinate"),
        ({"noise_site": "layers:3"}, "noise_site", "layer:L"),
        ({"noise_site": "layer:x"}, "noise_site", "layer:L"),
        ({"noise_site": "layer:1.5"}, "noise_site", "layer:L"),
        ({"noise_scope": "token"}, "noise_scope", "per_token, per_sequence"),
        ({"noise_positions": "output"}, "noise_positions", "all, prompt, generated"),
        ({"noise_seed": 1.5}, "noise_seed", "an integer"),
        ({"noise_seed": "seven"}, "noise_seed", "an integer"),
        ({"noise_scop": "per_token"}, "noise_scop", "noise_scope"),
    ],
)
def test_bad_noise_arguments_name_argument_value_and_valid_values(args, argument, valid):
    with pytest.raises(NoiseArgumentError) as error:
        NoiseSpec.from_model_args(dict(args))
    message = str(error.value)
    assert error.value.argument == argument
    assert f"{argument}=" in message and valid in message
    assert repr(next(iter(args.values()))) in message


def test_unknown_sigma_prefixed_argument_is_rejected():
    with pytest.raises(NoiseArgumentError, match="sigma_scal="):
        NoiseSpec.from_model_args({"sigma_scal": 0.1})


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(NoiseArgumentError, match="noise_cov_sqrt=.*file not found"):
        NoiseSpec.from_model_args({"noise_cov_sqrt": str(tmp_path / "missing.npy")})
    (tmp_path / "garbage.npy").write_text("not numpy")
    with pytest.raises(NoiseArgumentError, match="noise_vectors=.*could not read"):
        NoiseSpec.from_model_args({"noise_vectors": str(tmp_path / "garbage.npy")})
    np.save(tmp_path / "cube.npy", np.ones((2, 2, 2)))
    with pytest.raises(NoiseArgumentError, match=r"noise_vectors=.*shape \(2, 2, 2\)"):
        NoiseSpec.from_model_args({"noise_vectors": str(tmp_path / "cube.npy")})
    np.save(tmp_path / "wide.npy", np.ones((3, 4)))
    with pytest.raises(NoiseArgumentError, match=r"noise_cov_sqrt=.*square"):
        NoiseSpec.from_model_args({"noise_cov_sqrt": str(tmp_path / "wide.npy")})
    np.save(tmp_path / "zero_row.npy", np.zeros((2, 4)))
    with pytest.raises(NoiseArgumentError, match="no all-zero row"):
        NoiseSpec.from_model_args({"noise_vectors": str(tmp_path / "zero_row.npy")})
    np.save(tmp_path / "nan.npy", np.full((2, 2), np.nan))
    with pytest.raises(NoiseArgumentError, match="finite"):
        NoiseSpec.from_model_args({"noise_cov_sqrt": str(tmp_path / "nan.npy")})
    with pytest.raises(NoiseArgumentError, match="not both"):
        NoiseSpec.from_model_args(
            {"noise_cov_sqrt": str(tmp_path / "wide.npy"), "noise_vectors": str(tmp_path / "wide.npy")}
        )


@pytest.fixture
def no_weight_loading(monkeypatch):
    """Fail the test if from_pretrained is reached; record what it would have been given."""
    calls = []

    def refuse(*args, **kwargs):
        calls.append(kwargs)
        raise AssertionError("from_pretrained was reached")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)
    return calls


@pytest.mark.parametrize(
    "args, match",
    [
        ({"noise_site": "layer:2"}, r"noise_site='layer:2'.*-2 <= L < 2"),
        ({"noise_site": "layer:-3"}, r"noise_site='layer:-3'"),
        ({"quantization": "int3"}, r"quantization='int3'.*none, int8, int4"),
        ({"noise_sites": "embed"}, r"noise_sites="),
    ],
)
def test_model_errors_come_before_weights_load(toy_path, no_weight_loading, args, match):
    with pytest.raises(NoiseArgumentError, match=match):
        make_lm(toy_path, sigma_scale=0.1, **args)
    assert no_weight_loading == []


def test_wrong_file_width_fails_before_weights_load(toy_path, no_weight_loading, tmp_path):
    np.save(tmp_path / "vectors.npy", np.ones((2, 7), dtype=np.float32))
    with pytest.raises(NoiseArgumentError, match=r"noise_vectors=.*shape \(2, 7\).*\(K, 64\)"):
        make_lm(toy_path, sigma_scale=0.1, noise_vectors=str(tmp_path / "vectors.npy"))
    np.save(tmp_path / "cov.npy", np.eye(5, dtype=np.float32))
    with pytest.raises(NoiseArgumentError, match=r"noise_cov_sqrt=.*\(64, 64\)"):
        make_lm(toy_path, sigma_scale=0.1, noise_cov_sqrt=str(tmp_path / "cov.npy"))
    assert no_weight_loading == []


def test_no_plugin_argument_reaches_from_pretrained(toy_path, monkeypatch, tmp_path):
    seen = []
    original = transformers.AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spy)
    np.save(tmp_path / "cov.npy", np.eye(64, dtype=np.float32))
    make_lm(
        toy_path, sigma_scale=0.1, noise_norm=1.0, sigma_mode="coordinate", noise_site="layer:-1",
        noise_scope="per_sequence", noise_positions="generated", noise_seed=4,
        noise_cov_sqrt=str(tmp_path / "cov.npy"), quantization="none",
    )
    assert len(seen) == 1
    assert not set(seen[0]) & set(OWNED_ARGS)


@pytest.mark.parametrize("typo, meant", [("sgma_scale", "sigma_scale"), ("noisescope", "noise_scope"),
                                         ("quantisation", "quantization"), ("random_prefx", "random_prefix")])
def test_a_near_miss_of_our_arguments_is_refused_before_loading(typo, meant):
    from lm_eval_noise.harness.model import HFNoiseLM
    from lm_eval_noise.noise import NoiseArgumentError

    with pytest.raises(NoiseArgumentError, match=f"did you mean {meant}"):
        HFNoiseLM(pretrained="/nonexistent/model", **{typo: "0.1"})


def test_no_harness_argument_is_mistaken_for_a_near_miss():
    import difflib
    import inspect

    from lm_eval.models.huggingface import HFLM

    from lm_eval_noise.noise.spec import _NEAR_MISS, OWNED_ARGS

    theirs = [name for name in inspect.signature(HFLM.__init__).parameters if name not in ("self", "kwargs")]
    assert len(theirs) > 20
    for name in theirs:
        assert not difflib.get_close_matches(name, OWNED_ARGS + ("random_prefix",), cutoff=_NEAR_MISS), name
