"""End to end through the stock `lm_eval` CLI and `lm-eval-noise run`, as a user runs them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from lm_eval_noise.harness.task_configs import tasks_dir

DOCS = [
    {"prompt": "def add(a, b):", "target": " return a + b"},
    {"prompt": "The quick brown", "target": " fox"},
    {"prompt": "Question: How many legs does a spider have?\nAnswer:", "target": " eight"},
]
COMMON = """dataset_path: json
dataset_kwargs:
  data_files: {data}
test_split: train
metadata:
  version: 1.0
"""
TASKS = {
    "toy_gen": """output_type: generate_until
doc_to_text: "{{prompt}}"
doc_to_target: "{{target}}"
repeats: 3
generation_kwargs:
  until: ["\\n\\n"]
  max_gen_toks: 8
  do_sample: false
metric_list:
  - metric: exact_match
""",
    "toy_mc": """output_type: multiple_choice
doc_to_text: "{{prompt}}"
doc_to_choice: ["{{target}}", " banana", " seven"]
doc_to_target: 0
metric_list:
  - metric: acc
""",
    "toy_ppl": """output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{prompt}}{{target}}"
metric_list:
  - metric: word_perplexity
""",
}


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tasks")
    data = root / "docs.jsonl"
    data.write_text("".join(json.dumps(doc) + "\n" for doc in DOCS))
    for name, body in TASKS.items():
        (root / f"{name}.yaml").write_text(f"task: {name}\n" + COMMON.format(data=data) + body)
    return root


def _command(name: str) -> str:
    """The console script installed next to this interpreter."""
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else shutil.which(name)


def run_cli(program, model, model_args, task_dir, out_dir, tasks="toy_gen,toy_mc,toy_ppl"):
    command = [
        _command(program), *(["run"] if program == "lm-eval-noise" else []),
        "--model", model, "--model_args", model_args, "--tasks", tasks,
        "--include_path", str(task_dir), "--device", "cpu", "--batch_size", "2",
        "--output_path", str(out_dir), "--log_samples",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(next(out_dir.rglob("results_*.json")).read_text())
    samples = {
        task: [json.loads(line) for line in next(out_dir.rglob(f"samples_{task}_*.jsonl")).open()]
        for task in tasks.split(",")
    }
    return results, samples


def _responses(samples):
    return {task: [s["resps"] for s in rows] for task, rows in samples.items()}


@pytest.fixture(scope="module")
def noisy_run(toy_paths, task_dir, tmp_path_factory):
    args = f"pretrained={toy_paths['llama']},sigma_scale=0.5,noise_site=layer:-1,noise_seed=-1"
    return run_cli("lm_eval", "hf-noise", args, task_dir, tmp_path_factory.mktemp("noisy"))


def test_stock_lm_eval_runs_hf_noise_on_all_request_types(noisy_run):
    results, samples = noisy_run
    assert set(results["results"]) == {"toy_gen", "toy_mc", "toy_ppl"}
    assert results["config"]["model"] == "hf-noise"
    generations = samples["toy_gen"]
    assert all(len(s["resps"][0]) == 3 for s in generations)  # repeats: 3
    assert any(len(set(s["resps"][0])) > 1 for s in generations)  # distinct draws


def test_results_json_records_every_noise_setting(noisy_run, toy_paths):
    results, _ = noisy_run
    noise = results["config"]["noise"]
    assert noise["active"] is True
    assert (noise["sigma_scale"], noise["site"], noise["seed"]) == (0.5, "layer:1", -1)
    assert (noise["scope"], noise["positions"], noise["sigma_mode"]) == ("per_token", "all", "norm")
    assert noise["reference_norm"] > 0
    assert noise["expected_noise_norm"] == pytest.approx(0.5 * noise["reference_norm"])
    for package in ("lm-eval-noise", "lm_eval", "transformers", "torch", "accelerate"):
        assert noise["versions"][package] == metadata.version(package)
    assert noise["engine"] == "hf-noise" and "vllm" in noise["versions"]  # None where vLLM is absent
    assert noise["quantization"] == "none" and noise["hidden_size"] == 64


def test_sigma_zero_run_equals_hf_run_and_hf_still_works(toy_paths, task_dir, tmp_path):
    path = toy_paths["llama"]
    _, hf_samples = run_cli("lm_eval", "hf", f"pretrained={path}", task_dir, tmp_path / "hf")
    results, zero_samples = run_cli(
        "lm-eval-noise", "hf-noise", f"pretrained={path},sigma_scale=0", task_dir, tmp_path / "zero"
    )
    assert results["config"]["noise"]["active"] is False
    assert _responses(zero_samples) == _responses(hf_samples)


def test_both_engines_are_entry_points_for_later_harness_releases():
    from lm_eval_noise.harness.registration import PLACEHOLDERS

    entry_points = {ep.name: ep.value for ep in metadata.entry_points(group="lm_eval.models")}
    assert {name: entry_points.get(name) for name in PLACEHOLDERS} == PLACEHOLDERS  # as 0.4.13's hook


def test_run_checks_vllm_noise_arguments_early_and_names_that_engine(capsys):
    from lm_eval_noise.cli import main

    argv = ["run", "--model", "vllm-noise", "--model_args", "pretrained=/nonexistent,sigma_scale=-1",
            "--tasks", "humaneval_noise"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["lm-eval-noise run: vllm-noise: invalid sigma_scale=-1; valid values: a number >= 0 and at "
                   "most 3.403e+38 (float32's largest) (--debug before run for the traceback)"], err


def test_registration_hook_is_installed_and_keeps_builtin_models():
    files = metadata.distribution("lm-eval-noise").files
    assert any(str(f) == "lm_eval_noise.pth" for f in files)
    code = (
        "import sys; from lm_eval.api.registry import get_model;"
        "assert 'torch' not in sys.modules;"  # the hook itself imports nothing heavy
        "print(get_model('hf-noise').__name__, get_model('hf').__name__, get_model('steered').__name__)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["HFNoiseLM", "HFLM", "SteeredModel"]


def test_package_tasks_dir_is_found_in_a_checkout_and_in_a_wheel(tmp_path, monkeypatch):
    from lm_eval_noise.harness import task_configs

    assert {p.name for p in tasks_dir().glob("*.yaml")} >= {"humaneval_noise.yaml", "lmsys_chat_noise.yaml"}
    wheel = tmp_path / "site-packages" / "lm_eval_noise"
    (wheel / "task_configs").mkdir(parents=True)
    monkeypatch.setattr(task_configs, "_PACKAGE", wheel)
    assert tasks_dir() == wheel / "task_configs"  # where pyproject puts them in a wheel
    (wheel / "task_configs").rmdir()
    with pytest.raises(FileNotFoundError, match="task YAMLs not found"):
        tasks_dir()


@pytest.mark.parametrize("extra", [{}, {"noise_reference": "prompt", "noise_schedule": "exp:3"}])
def test_per_sequence_vectors_are_exported_and_reproduce_each_sample(toy_paths, task_dir, tmp_path, extra):
    import numpy as np
    from helpers import make_lm
    from lm_eval.api.instance import Instance

    from lm_eval_noise.cli import main

    path = toy_paths["gpt2"]
    args = f"pretrained={path},sigma_scale=2.0,noise_scope=per_sequence,noise_seed=7"
    args += "".join(f",{key}={value}" for key, value in extra.items())
    out = tmp_path / "run"
    _, samples = run_cli("lm_eval", "hf-noise", args, task_dir, out, tasks="toy_gen")
    results_file = next(out.rglob("results_*.json"))
    samples_file = next(out.rglob("samples_toy_gen_*.jsonl"))
    folder = tmp_path / "vectors"
    assert main(["vectors", "--results", str(results_file), "--samples", str(samples_file), "-o", str(folder)]) == 0
    vectors = np.load(folder / "noise_vectors.npy")
    index = json.loads((folder / "noise_vectors.json").read_text())
    assert vectors.shape == (9, 64) and len(index) == 9  # 3 docs x 3 repeats
    logged = {s["doc_id"]: s for s in samples["toy_gen"]}
    for row, vector in list(zip(index, vectors))[:4]:
        sample = logged[row["doc_id"]]
        np.save(tmp_path / "one.npy", vector[None])
        lm = make_lm(path, noise_norm=float(np.linalg.norm(vector)), noise_scope="per_sequence",
                     noise_vectors=str(tmp_path / "one.npy"), noise_schedule=extra.get("noise_schedule", "constant"))
        prompt, gen_kwargs = sample["arguments"]["gen_args_0"]["arg_0"], sample["arguments"]["gen_args_0"]["arg_1"]
        request = Instance("generate_until", {}, (prompt, gen_kwargs), 0, ("toy_gen", row["doc_id"], 1))
        assert lm.generate_until([request]) == [sample["resps"][0][row["repeat"]]]


def test_vectors_refuses_a_per_token_run(noisy_run, tmp_path, capsys):
    from lm_eval_noise.cli import main

    results, _ = noisy_run
    (tmp_path / "results.json").write_text(json.dumps(results))
    (tmp_path / "samples.jsonl").write_text("")
    assert main(["vectors", "--results", str(tmp_path / "results.json"),
                 "--samples", str(tmp_path / "samples.jsonl")]) == 2
    assert "only per_sequence runs" in capsys.readouterr().err


def test_norms_prints_the_reference_norm_of_every_site(toy_paths, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lm_eval_noise.cli import main
    from lm_eval_noise.noise import NoiseInjector, NoiseSpec

    path = toy_paths["llama"]
    assert main(["norms", "--model", path, "--device", "cpu", "--json"]) == 0
    norms = json.loads(capsys.readouterr().out)
    assert list(norms) == ["embed", "layer:0", "layer:1"]
    model, tokenizer = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    for site, norm in norms.items():  # the very norm a run at that site records
        spec = NoiseSpec.from_model_args({"sigma_scale": 0.1, "noise_site": site})
        assert NoiseInjector(model, spec, tokenizer=tokenizer).reference_norm == pytest.approx(norm, rel=1e-5)
    assert main(["norms", "--model", path, "--device", "cpu"]) == 0
    assert "layer:1" in capsys.readouterr().out
    assert main(["norms", "--model", str(Path(path) / "missing"), "--device", "cpu"]) == 2


@pytest.mark.parametrize("argv, problem", [
    (["norms", "--model", "/nonexistent/model"], "/nonexistent/model"),
    (["covariance", "--model", "m", "--layer", "0", "--shrinkage", "2"], "--shrinkage 2.0: valid values are 0 to 1"),
    (["score", "--samples", "/nonexistent/samples.jsonl", "--model", "m"], "No such file"),
    (["sweep", "--config", "/nonexistent/sweep.yaml"], "cannot read sweep config"),
])
def test_a_user_error_is_one_line_and_debug_shows_the_traceback(argv, problem, capsys):
    from lm_eval_noise.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"lm-eval-noise {argv[0]}: ") and problem in err
    assert "\n" not in err and "Traceback" not in err and err.endswith("(--debug for the traceback)")
    with pytest.raises((ValueError, OSError)):
        main(["--debug", *argv])
    with pytest.raises((ValueError, OSError)):
        main([*argv, "--debug"])


def test_run_reports_a_bad_noise_argument_in_one_line_before_lm_eval_starts(capsys):
    from lm_eval_noise.cli import main

    argv = ["run", "--model", "hf-noise", "--model_args", "pretrained=/nonexistent,noise_scope=per_sequnce",
            "--tasks", "humaneval_noise"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["lm-eval-noise run: hf-noise: invalid noise_scope='per_sequnce'; valid values: per_token, "
                   "per_sequence (--debug before run for the traceback)"]
    with pytest.raises(ValueError, match="per_sequnce"):
        main(["--debug", *argv])
    device_twice = ["run", "--model", "hf-noise", "--model_args", "pretrained=/nonexistent,device=cpu",
                    "--device", "cpu", "--tasks", "humaneval_noise"]
    assert main(device_twice) == 2
    assert "`device` is given twice" in capsys.readouterr().err


def test_stock_lm_eval_names_the_problem_on_the_first_line_of_the_error(toy_paths, task_dir, tmp_path):
    command = [_command("lm_eval"), "--model", "hf-noise", "--model_args",
               f"pretrained={toy_paths['llama']},device=cpu", "--device", "cpu", "--tasks", "toy_gen",
               "--include_path", str(task_dir), "--limit", "1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    assert done.returncode != 0
    before_traceback = done.stderr.split("Traceback")[0].strip().splitlines()
    assert before_traceback[-1].startswith("hf-noise: `device` is given twice"), done.stderr[-2000:]


def test_tasks_prints_where_the_yamls_are(capsys):
    from lm_eval_noise.cli import main
    from lm_eval_noise.harness.task_configs import tasks_dir

    assert main(["tasks", "--path"]) == 0
    assert capsys.readouterr().out.strip() == str(tasks_dir())
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert "humaneval_noise_n100" in out and "lmsys_chat_noise" in out


def test_a_missing_optional_package_names_its_extra(monkeypatch):
    import importlib.util

    from lm_eval_noise.errors import InputError
    from lm_eval_noise.harness.quantization import bitsandbytes_config
    from lm_eval_noise.scoring.reference import load_reference

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *rest: None if name in ("bitsandbytes", "gguf") else real(name, *rest))
    with pytest.raises(InputError, match=r"quantization=int8 needs the `bitsandbytes` package: "
                                         r"pip install 'bitsandbytes>=0.45' \(the `quantization` extra\)"):
        bitsandbytes_config("int8")
    with pytest.raises(InputError, match=r"gguf_file needs the `gguf` package: pip install 'gguf>=0.10'"):
        load_reference("some/model", gguf_file="model.gguf")
