"""Sweeps: config expansion, confidence intervals, and a real resumable run end to end."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from lm_eval_noise.tools.sweep import SweepConfigError, load_sweep
from lm_eval_noise.tools.sweep.executors import run_logged as REAL_RUN_LOGGED  # the fixtures stand in for it


def write_config(folder: Path, text: str) -> Path:
    path = folder / "sweep.yaml"
    path.write_text(text)
    return path


def test_methods_expand_to_named_runs(tmp_path):
    sweep = load_sweep(write_config(tmp_path, """
name: grid
models: [{pretrained: some/model, dtype: bfloat16}]
tasks: [humaneval_noise]
samples: 4
baseline: temperature-0.8
gen_kwargs: {max_gen_toks: 64}
methods:
  greedy: {}
  temperature: {temperature: [0.2, 0.8]}
  nucleus: {temperature: 1.0, top_p: [0.9, 0.95]}
  min_p: {temperature: 1.0, min_p: [0.05, 0.1]}
  top_k: {temperature: [0.7, 1.0], top_k: 20}
  random_prefix: {length: [8, 32]}
  noise: {sigma_scale: [0.05, 0.1], site: [embed, "layer:-2"], scope: [per_token, per_sequence],
          schedule: [constant, "exp:16"]}
  residual: {layer: 3, noise_norm: [4, 8], vectors: [1, 5]}
  custom: [{name: prompt-only, model_args: {sigma_scale: 0.1, noise_positions: prompt}}]
"""))
    names = [run.name for run in sweep.runs]
    assert len(names) == 1 + 2 + 2 + 2 + 2 + 2 + 16 + 4 + 1
    assert {"greedy", "temperature-0.2", "nucleus-t1-p0.95", "noise-layer-2-per_sequence-sigma0.05",
            "residual-layer3-norm8-k5", "prompt-only"} <= set(names)
    by_name = {run.name: run for run in sweep.runs}
    assert by_name["temperature-0.8"].gen_kwargs == {"max_gen_toks": 64, "do_sample": True, "temperature": 0.8,
                                                     "top_p": 1.0}
    assert by_name["greedy"].model_args == {"pretrained": "some/model", "dtype": "bfloat16"}
    assert by_name["minp-t1-0.05"].gen_kwargs == {"max_gen_toks": 64, "do_sample": True, "temperature": 1.0,
                                                  "top_p": 1.0, "min_p": 0.05}
    assert by_name["topk-t0.7-20"].gen_kwargs["top_k"] == 20
    assert by_name["prefix-32"].model_args["random_prefix"] == 32 and not by_name["prefix-32"].gen_kwargs["do_sample"]
    assert by_name["noise-embed-per_token-sigma0.1"].model_args["sigma_scale"] == 0.1
    assert "noise_schedule" not in by_name["noise-embed-per_token-sigma0.1"].model_args
    assert by_name["noise-embed-per_token-sigma0.1-exp16"].model_args["noise_schedule"] == "exp:16"
    residual = by_name["residual-layer3-norm4-k1"].model_args
    assert (residual["noise_site"], residual["noise_scope"], residual["noise_norm"]) == ("layer:3", "per_sequence", 4.0)
    assert len({run.run_id for run in sweep.runs}) == len(sweep.runs)


@pytest.mark.parametrize("text, message", [
    ("models: [m]\ntasks: [t]\n", "`methods` is required"),
    ("models: [m]\ntasks: [t]\nmethods: {greedy: {}, beam: {}}\n", "unknown method 'beam'"),
    ("models: [m]\ntasks: [t]\nbaseline: nope\nmethods: {greedy: {}}\n", "baseline 'nope' is not a run"),
    ("models: [m]\ntasks: [t]\nmethods: {residual: {noise_norm: [1]}}\n", "methods.residual: `layer` is required"),
    ("models: [m]\ntasks: [t]\nmethods: {custom: [{name: a}, {name: a}]}\n", "share a name"),
    ("- just a list\n", "a YAML mapping"),
    ("models: [m]\ntasks: [t]\nverdict: {pass_margin: 1}\nmethods: {greedy: {}}\n", "unknown keys \\['pass_margin'\\]"),
    ("models: [m]\ntasks: [t]\nsample: 4\nmethods: {greedy: {}}\n",
     "unknown key\\(s\\) sample; valid: models, tasks, methods, name, samples,"),
    ("models: [m]\ntasks: [t]\nmethods: {temperature: {temp: [1.0]}}\n",
     "methods.temperature: unknown key\\(s\\) temp; valid: temperature$"),
    ("models: [m]\ntasks: [t]\nmethods: {noise: {sigma_scale: [0.1], noise_positons: prompt}}\n",
     "methods.noise: unknown key\\(s\\) noise_positons; valid: sigma_scale, site, scope, schedule, model_args"),
    ("models: [m]\ntasks: [t]\nmethods: {custom: [{name: a, model_arg: {}}]}\n", "methods.custom\\[0\\]: unknown key"),
    ("models: [m]\ntasks: [t]\nmethods: {temperature: {temperature: [hot]}}\n",
     "methods.temperature: could not convert"),
    ("models: [m]\ntasks: [t]\nmethods: {greedy: [1, 2]}\n", "methods.greedy: expected a mapping with keys \\(none\\)"),
    ("models: [m]\ntasks: [t]\nsamples: many\nmethods: {greedy: {}}\n", "`samples` is an integer >= 1, not 'many'"),
])
def test_bad_configs_are_refused_with_a_clear_message(tmp_path, text, message):
    with pytest.raises(SweepConfigError, match=message):
        load_sweep(write_config(tmp_path, text))


def test_leaderboard_intervals_state_their_problems_and_pair_by_problem():
    from lm_eval_noise.tools.sweep.report import metric_interval, paired_interval

    run = {0: 1.0, 1: 0.5, 2: float("nan"), 3: 0.0}
    base = {0: 0.5, 1: 0.5, 2: 0.2, 4: 1.0}
    paired = paired_interval("pass@1", run, base)
    assert paired["n"] == 2 and paired["mean"] == pytest.approx(0.25) and paired["ci_low"] <= 0.25 <= paired["ci_high"]
    bounded = metric_interval("pass@1", {0: 0.0, 1: 0.0, 2: 0.0})
    assert bounded["n"] == 3 and bounded["ci_low"] == 0.0 and bounded["ci_high"] > 0.3  # not [0, 0]
    same = paired_interval("pass@4", dict.fromkeys(range(4), 1.0), dict.fromkeys(range(4), 1.0))
    assert same["mean"] == 0 and same["ci_low"] == pytest.approx(-0.49, abs=0.01)  # identical runs: not [0, 0]
    assert metric_interval("pass@1", {0: 0.5}) == {"mean": 0.5, "ci_low": None, "ci_high": None, "n": 1}
    assert metric_interval("ref_logprob_mean", {0: -2.0, 1: -3.0})["ci_low"] < -3.0  # unbounded: plain t


def test_noise_seeds_make_replicates_that_share_a_group(tmp_path):
    sweep = load_sweep(write_config(tmp_path, """
models: [m]
tasks: [t]
noise_seeds: [0, 3]
methods: {greedy: {}, noise: {sigma_scale: [0.1]}}
"""))
    noisy = [r for r in sweep.runs if r.method == "noise"]
    assert [(r.name, r.group, r.model_args["noise_seed"]) for r in noisy] == [
        ("noise-embed-per_token-sigma0.1-seed0", "noise-embed-per_token-sigma0.1", 0),
        ("noise-embed-per_token-sigma0.1-seed3", "noise-embed-per_token-sigma0.1", 3)]
    assert next(r for r in sweep.runs if r.method == "greedy").group == "greedy"
    with pytest.raises(SweepConfigError, match="`noise_seeds` is a list of distinct integers"):
        load_sweep(write_config(tmp_path, "models: [m]\ntasks: [t]\nnoise_seeds: [1, 1]\nmethods: {greedy: {}}\n"))


def _sweep_command(config: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "lm_eval_noise", "sweep", "--config", str(config), "-o", str(out), "--quiet"]


@pytest.mark.slow
def test_sweep_end_to_end_survives_a_kill_and_resumes(toy_paths, tmp_path):
    config = write_config(tmp_path, f"""
name: tiny
models: [{{pretrained: {toy_paths['llama']}}}]
tasks: [humaneval_noise]
samples: 2
limit: 2
baseline: greedy
batch_size: "2"
device: cpu
viz: true
gen_kwargs: {{max_gen_toks: 6}}
methods:
  greedy: {{}}
  temperature: {{temperature: [0.8]}}
  noise: {{sigma_scale: [1.0], site: [embed], scope: [per_sequence]}}
  residual: {{layer: 1, noise_norm: [2.0], vectors: [2]}}
  custom: [{{name: broken, model_args: {{sigma_scale: 0.1, noise_site: "layer:99"}}}}]
""")  # `broken` passes the checks at load (its layer needs the model) and fails when it runs
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    # Killed once the first run is done and the second has started (states, not times:
    # the deadline only guards against a hang).
    with (tmp_path / "first.log").open("wb") as log:
        first = subprocess.Popen(_sweep_command(config, out), env=env, start_new_session=True,
                                 stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 300
        while first.poll() is None and time.time() < deadline and not (
            list(out.glob("runs/*/DONE.json")) and len(list(out.glob("runs/*/log.txt"))) >= 2
        ):
            time.sleep(0.2)
        assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]  # still running
        os.killpg(first.pid, signal.SIGKILL)  # the sweep and the harness run inside it
        first.wait()
    plan = (tmp_path / "first.log").read_text()
    assert "plan: 5 runs through hf-noise (0 finished, 5 to run), one run at a time" in plan
    assert re.search(r"probe: greedy on 2 problem\(s\): \d+ s to load, [\d.]+ s a problem\nestimate: \d+ s of runs",
                     plan), plan[-3000:]
    finished = list(out.glob("runs/*/DONE.json"))
    partial = [d for d in out.glob("runs/*") if not (d / "DONE.json").exists()]
    assert len(finished) == 1 and len(partial) == 1, (tmp_path / "first.log").read_text()[-3000:]
    (partial[0] / "leftover").write_text("from the killed run")
    kept = {p.parent.name: (p.stat().st_mtime_ns, next(p.parent.rglob("results_*.json")).stat().st_mtime_ns)
            for p in finished}

    second = subprocess.run(_sweep_command(config, out), env=env, capture_output=True, text=True, timeout=900)
    assert second.returncode == 1, second.stderr[-3000:]  # one run failed; the others went on
    assert "failed: broken: exit code" in second.stderr and "layer:99" in second.stderr
    assert "viz: no run scored its answers" in second.stderr and not (out / "viz.html").exists()
    assert (partial[0] / "DONE.json").exists() and not (partial[0] / "leftover").exists()  # redone
    board = json.loads((out / "leaderboard.json").read_text())
    assert sorted(r["name"] for r in board["runs"]) == [
        "greedy", "noise-embed-per_sequence-sigma1", "residual-layer1-norm2-k2", "temperature-0.8"]
    rebuilt = subprocess.run([*_sweep_command(config, out), "--report-only"], env=env, capture_output=True,
                             text=True, timeout=300)
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    assert json.loads((out / "leaderboard.json").read_text())["runs"] == board["runs"]
    vectors = np.load(next((out / "vectors").glob("*_k2_seed0.npy")))
    assert vectors.shape == (2, 64) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    for run_dir, stamps in kept.items():  # the finished run was not recomputed
        done = out / "runs" / run_dir / "DONE.json"
        assert (done.stat().st_mtime_ns, next(done.parent.rglob("results_*.json")).stat().st_mtime_ns) == stamps
    for entry in board["runs"]:
        pass_at_1 = entry["metrics"]["pass@1"]
        assert pass_at_1["n"] == 2 and pass_at_1["ci_low"] <= pass_at_1["mean"] <= pass_at_1["ci_high"]
        samples = next(Path(entry["directory"]).rglob("samples_*.jsonl"))
        assert all(len(json.loads(line)["resps"][0]) == 2 for line in samples.open())  # n = 2
    noisy = next(e for e in board["runs"] if e["name"].startswith("noise"))
    assert set(noisy["vs_baseline"]) >= {"pass@1", "distinct_2"}
    # Two problems: no verdict, and the leaderboard says why.
    verdicts = {row["name"]: row for row in board["verdicts"]}
    assert set(verdicts) == {"noise-embed-per_sequence-sigma1", "residual-layer1-norm2-k2"}
    assert {row["verdict"] for row in verdicts.values()} == {"undetermined"}
    reason = verdicts["residual-layer1-norm2-k2"]["reason"]
    assert reason.startswith("2 problems shared with the") and "a verdict needs at least 10" in reason
    json.loads((out / "leaderboard.json").read_text(), parse_constant=lambda name: pytest.fail(f"{name} in JSON"))
    table = (out / "leaderboard.md").read_text()
    assert "| temperature-0.8 | humaneval_noise__n2 |" not in table and "temperature-0.8" in table
    assert "## Verdicts" in table
    for plot in board["plots"]:
        data = (out / plot).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert {Path(p).name for p in board["plots"]} == {  # no run on the curve: no empty matched_differences.png
        "passk_vs_k.png", "correctness_vs_diversity.png", "per_problem.png"}


def test_a_chat_sweep_with_viz_writes_the_viewer(toy_paths, tmp_path):
    chats = tmp_path / "chats.jsonl"
    chats.write_text("".join(json.dumps({"conversation_id": str(i), "language": "English", "conversation": [
        {"role": "user", "content": text}]}) + "\n" for i, text in enumerate(["Name a colour.", "Say hello."])))
    config = write_config(tmp_path, f"""
name: chat
models: [{{pretrained: {toy_paths['llama']}}}]
tasks: [lmsys_chat_noise]
samples: 2
batch_size: "2"
device: cpu
viz: true
metadata: {{lmsys_path: {chats}, num_prompts: 2}}
gen_kwargs: {{max_gen_toks: 5}}
methods:
  noise: {{sigma_scale: [0.5], scope: [per_sequence]}}
""")
    out = tmp_path / "out"
    done = subprocess.run(_sweep_command(config, out), capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    html = (out / "viz.html").read_text()
    assert html.count('"doc_id": ') == 4  # a row per answer: 2 prompts x 2 samples


@pytest.mark.parametrize("config", sorted((Path(__file__).parents[1] / "configs").glob("*.yaml")), ids=lambda p: p.stem)
def test_ready_made_configs_load(config):
    sweep = load_sweep(config)
    assert sweep.runs and sweep.baseline in {run.name for run in sweep.runs}


def test_task_variant_adds_pass_at_n_and_is_written_as_yaml(tmp_path):
    import yaml

    from lm_eval_noise.tools.sweep.runner import task_variant

    folder = tmp_path / "odd: name #1"  # characters that break hand-written YAML
    name = task_variant(folder, "humaneval_noise", 5)
    variant = yaml.safe_load((folder / f"{name}.yaml").read_text())
    assert variant["repeats"] == 5 and variant["include"].endswith("humaneval_noise.yaml")
    metrics = [m["metric"] for m in variant["metric_list"]]
    assert {"pass@1", "pass@10", "pass@5", "empty_rate"} <= set(metrics)
    chat = yaml.safe_load((folder / f"{task_variant(folder, 'lmsys_chat_noise_n5', 3)}.yaml").read_text())
    assert "metric_list" not in chat


@pytest.mark.parametrize("methods, message", [
    ("{noise: {sigma_scale: [0.1], scope: [per_sequnce]}}", "invalid noise_scope='per_sequnce'; valid values"),
    ("{noise: {sigma_scale: [-1]}}", "invalid sigma_scale"),
    ("{noise: {sigma_scale: [0.1], site: ['layer:x']}}", "noise_site"),
    ("{custom: [{name: a, model_args: {device: cpu}}]}", "`device` goes in the sweep's own `device:` key"),
])
def test_bad_values_are_refused_before_any_run_starts(tmp_path, methods, message):
    with pytest.raises(SweepConfigError, match=message):
        load_sweep(write_config(tmp_path, f"models: [m]\ntasks: [t]\nmethods: {methods}\n"))


def test_a_runs_log_is_written_while_it_runs(tmp_path):
    import threading

    from lm_eval_noise.tools.sweep.executors import run_logged

    log = tmp_path / "log.txt"
    script = "import time\nprint('loading the model')\ntime.sleep(10)\n"
    worker = threading.Thread(target=run_logged, args=([sys.executable, "-c", script], log, False), daemon=True)
    worker.start()
    deadline = time.time() + 20
    while time.time() < deadline and "loading the model" not in (log.read_text() if log.exists() else ""):
        time.sleep(0.1)
    assert "loading the model" in log.read_text()  # long before the 10 s run ends
    assert worker.is_alive()


# Resuming: a finished run is reused only when everything that shapes its output is unchanged.

def fake_harness(command: list[str], log: Path, echo: bool, env: dict | None = None, cwd: str | None = None,
                 on_output=None) -> int:
    """Stands in for `lm-eval-noise run` (executors.run_logged): writes what the harness would,
    a results JSON and samples with the task variant's n answers per doc for `--limit` docs."""
    flags = dict(itertools.pairwise(command))
    variant = Path(flags["--include_path"]) / f"{flags['--tasks']}.yaml"
    n = __import__("yaml").safe_load(variant.read_text())["repeats"]
    limit = int(flags["--limit"]) if "--limit" in flags else None
    out = Path(flags["--output_path"]) / "model"
    out.mkdir(parents=True)
    (out / "results_0.json").write_text(json.dumps({"config": {"limit": limit}}))
    (out / "samples_task_0.jsonl").write_text("".join(
        json.dumps({"doc_id": doc, "resps": [["x"] * n], "pass@1": doc / 3}) + "\n" for doc in range(limit or 3)))
    log.write_text("fake harness\n")
    if on_output is not None:
        on_output(b"Running generate_until requests")
    return 0


@pytest.fixture
def fake_runs(monkeypatch, tmp_path):
    """A sweep writer and runner over the fake harness, with a copy of the task YAMLs."""
    import shutil

    from lm_eval_noise.harness.task_configs import tasks_dir
    from lm_eval_noise.tools.sweep import executors, runner

    tasks = tmp_path / "task_yamls"
    shutil.copytree(tasks_dir(), tasks)
    monkeypatch.setattr(runner, "tasks_dir", lambda: tasks)
    monkeypatch.setattr(executors, "run_logged", fake_harness)
    np.save(tmp_path / "vectors.npy", np.eye(2, 8, dtype=np.float32))

    def sweep(extra: str = "", output: Path = tmp_path / "out", executor=None):
        config = write_config(tmp_path, "models: [m]\ntasks: [humaneval_noise_n100]\nsamples: 3\nlimit: 2\n"
                                        f"methods: {{greedy: {{}}}}\n{extra}")
        return runner.run_sweep(load_sweep(config), output, echo=False, executor=executor)

    return sweep, tasks, tmp_path


@pytest.mark.parametrize("change, message", [
    ("samples", "samples 3 -> 10"),
    ("limit", "limit 2 -> 5"),
    ("metadata", 'metadata.num_prompts (unset) -> 5'),
    ("apply_chat_template", "apply_chat_template false -> true"),
    ("base task YAML", "task_files.humaneval_noise.yaml sha256:"),
    ("noise_vectors file", "model_args.noise_vectors sha256:"),
    ("engine", "engine hf-noise -> vllm-noise"),
])
def test_a_finished_run_made_with_other_settings_is_never_reused(fake_runs, change, message):
    sweep, tasks, folder = fake_runs
    custom = f"  custom: [{{name: fixed, model_args: {{noise_norm: 1.0, noise_vectors: {folder / 'vectors.npy'}}}}}]\n"
    first = "methods:\n  greedy: {}\n" + custom
    assert [o.status for o in sweep(first)] == ["done", "done"]
    assert [o.status for o in sweep(first)] == ["skipped", "skipped"]  # the same settings: reused
    second = {"samples": "samples: 10\n", "limit": "limit: 5\n", "metadata": "metadata: {num_prompts: 5}\n",
              "apply_chat_template": "apply_chat_template: true\n", "engine": "engine: vllm\n"}.get(change, "") + first
    if change == "base task YAML":  # included by humaneval_noise_n100.yaml
        base = tasks / "humaneval_noise.yaml"
        base.write_text(base.read_text().replace("max_gen_toks: 512", "max_gen_toks: 256"))
    if change == "noise_vectors file":
        np.save(folder / "vectors.npy", np.eye(2, 8, k=1, dtype=np.float32))
    stamps = sorted(p.stat().st_mtime_ns for p in (folder / "out").rglob("results_*.json"))
    with pytest.raises(SweepConfigError, match=f"was made with other settings: .*{re.escape(message)}.*; use another "
                                               "--output folder or delete th"):
        sweep(second)
    assert sorted(p.stat().st_mtime_ns for p in (folder / "out").rglob("results_*.json")) == stamps  # kept
    done = json.loads(next((folder / "out" / "runs").glob("*greedy*/DONE.json")).read_text())
    assert done["settings"]["samples"] == 3 and len(done["fingerprint"]) == 16
    started, finished = (datetime.fromisoformat(done[key]) for key in ("started", "finished"))
    assert started.tzinfo is not None and started <= finished <= datetime.now(timezone.utc)
    assert done["host"] == socket.gethostname()
    assert [o.status for o in sweep(second, folder / "elsewhere")] == ["done", "done"]


def test_a_finished_run_from_before_fingerprints_is_refused(fake_runs):
    sweep, _, folder = fake_runs
    sweep()
    done = next((folder / "out" / "runs").glob("*/DONE.json"))
    done.write_text(json.dumps({"run": "greedy", "results": "model/results_0.json"}))  # the old format
    with pytest.raises(SweepConfigError, match="older lm-eval-noise that did not record its settings"):
        sweep()
    from lm_eval_noise.tools.sweep import finished_outcomes

    with pytest.raises(SweepConfigError, match="older lm-eval-noise"):  # --report-only too
        finished_outcomes(load_sweep(folder / "sweep.yaml"), folder / "out")


def test_the_command_line_reports_a_changed_run_in_one_line(fake_runs, capsys):
    from lm_eval_noise.cli import main

    sweep, _, folder = fake_runs
    sweep()
    write_config(folder, "models: [m]\ntasks: [humaneval_noise_n100]\nsamples: 10\nlimit: 2\nmethods: {greedy: {}}\n")
    assert main(["sweep", "--config", str(folder / "sweep.yaml"), "-o", str(folder / "out"), "--quiet"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("lm-eval-noise sweep: ") and "samples 3 -> 10" in error and "--output folder" in error


def test_the_leaderboard_states_the_samples_and_limit_the_runs_have(fake_runs, tmp_path):
    from lm_eval_noise.tools.sweep.report import build_leaderboard, markdown_table

    sweep, _, folder = fake_runs
    outcomes = sweep()
    config = load_sweep(folder / "sweep.yaml")
    board = build_leaderboard(dataclasses.replace(config, samples=10, limit=None), outcomes)  # the config lies
    assert {(e["samples"], e["limit"], e["problems"]) for e in board["runs"]} == {(3, 2, 2)}
    assert "3 samples per problem" in markdown_table(board)
    samples = next(outcomes[0].directory.rglob("samples_*.jsonl"))
    samples.write_text(samples.read_text().replace('["x", "x", "x"]', '["x"]'))
    other = dataclasses.replace(outcomes[0], run=dataclasses.replace(outcomes[0].run, name="other"))
    fourth = tmp_path / "four"
    fake_harness(["--include_path", str(folder / "out" / "tasks"), "--tasks", "humaneval_noise_n100__n3",
                  "--output_path", str(fourth)], tmp_path / "log", False)
    (next(fourth.rglob("samples_*.jsonl"))).write_text(json.dumps({"doc_id": 0, "resps": [["x"] * 4]}) + "\n")
    mixed = [dataclasses.replace(outcomes[0], directory=fourth), other]
    with pytest.raises(SweepConfigError, match="runs of m on humaneval_noise_n100 have different samples per "
                                               "problem \\(greedy: 4, other: 1\\)"):
        build_leaderboard(config, mixed)


def test_noise_seed_replicates_resample_the_residual_vectors(tmp_path, monkeypatch):
    from transformers import LlamaConfig

    from lm_eval_noise.tools.sweep import runner

    LlamaConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2).save_pretrained(tmp_path / "model")
    sweep = load_sweep(write_config(tmp_path, f"""
models: [{tmp_path / 'model'}]
tasks: [humaneval_noise]
noise_seeds: [0, 1]
methods: {{residual: {{layer: 1, noise_norm: [2.0], vectors: [3]}}}}
"""))
    first, second = sweep.runs
    assert first.model_args["noise_vectors"] == {"count": 3, "seed": 0} and first.model_args["noise_seed"] == 0
    assert second.model_args["noise_vectors"] == {"count": 3, "seed": 1} and second.model_args["noise_seed"] == 1
    out = tmp_path / "out"
    commands = [runner.prepare_run(sweep, run, out, out / "runs" / run.run_id)[0] for run in sweep.runs]
    files = [json.loads(dict(itertools.pairwise(c))["--model_args"])["noise_vectors"] for c in commands]
    assert files[0] != files[1] and not np.allclose(np.load(files[0]), np.load(files[1]))
    assert [dict(itertools.pairwise(c))["--seed"] for c in commands] == ["0,0,0,1234", "1,1,1,1234"]


# Engines and executors: which harness model runs, and where and when its runs execute.

def test_the_engine_key_picks_the_harness_model_of_every_run(tmp_path):
    from lm_eval_noise.tools.sweep import runner

    methods = "methods: {greedy: {}, temperature: {temperature: [0.8]}, noise: {sigma_scale: [0.1]}}\n"
    sweep = load_sweep(write_config(tmp_path, "models: [m]\ntasks: [humaneval_noise]\nengine: vllm\n" + methods))
    out = tmp_path / "out"
    for run in sweep.runs:  # the sampling methods too: a comparison is never across engines
        arguments, settings = runner.prepare_run(sweep, run, out, out / "runs" / run.run_id)
        assert dict(itertools.pairwise(arguments))["--model"] == "vllm-noise"
        assert settings["engine"] == "vllm-noise" and "vllm" in settings["versions"]
    hf = load_sweep(write_config(tmp_path, "models: [m]\ntasks: [humaneval_noise]\n" + methods))
    arguments, settings = runner.prepare_run(hf, hf.runs[0], out, out / "runs" / "x")
    assert dict(itertools.pairwise(arguments))["--model"] == "hf-noise" and "vllm" not in settings["versions"]
    for engine in ("tgi", "[hf]"):
        with pytest.raises(SweepConfigError, match="`engine` is one of hf, vllm"):
            load_sweep(write_config(tmp_path, f"models: [m]\ntasks: [t]\nengine: {engine}\n" + methods))
    with pytest.raises(SweepConfigError, match="vllm-noise: .*sigma_scale"):  # errors name the engine
        load_sweep(write_config(tmp_path, "models: [m]\ntasks: [t]\nengine: vllm\n"
                                          "methods: {noise: {sigma_scale: [-1]}}\n"))


def test_parallel_runs_overlap_and_report_what_sequential_runs_report(fake_runs, monkeypatch):
    from lm_eval_noise.tools.sweep import executors
    from lm_eval_noise.tools.sweep.report import build_leaderboard

    sweep, _, folder = fake_runs
    spans, envs = {}, {}

    def slow_harness(command, log, echo, env=None, cwd=None, on_output=None):
        started = time.monotonic()
        time.sleep(0.5)
        spans[log.parent], envs[log.parent] = (started, time.monotonic()), env
        return fake_harness(command, log, echo, on_output=on_output)

    monkeypatch.setattr(executors, "run_logged", slow_harness)
    monkeypatch.setattr(executors, "_visible_gpus", lambda: [])  # a CPU machine
    methods = "methods:\n  greedy: {}\n  temperature: {temperature: [0.5, 0.8]}\n"
    one = sweep(methods, folder / "one")
    two = sweep(methods, folder / "two", executors.Here(2))
    assert [o.status for o in one] == ["done"] * 3
    assert [(o.run.name, o.status) for o in two] == [(o.run.name, o.status) for o in one]  # the config's order
    parallel = sorted(span for run_dir, span in spans.items() if folder / "two" in run_dir.parents)
    assert len(parallel) == 3 and parallel[1][0] < parallel[0][1]  # two ran at once
    threads = str(max(1, (os.cpu_count() or 1) // 2))
    assert all(env["OMP_NUM_THREADS"] == threads for run_dir, env in envs.items() if folder / "two" in run_dir.parents)
    assert all(not env for run_dir, env in envs.items() if folder / "one" in run_dir.parents)
    config = load_sweep(folder / "sweep.yaml")
    boards = [build_leaderboard(config, outcomes)["runs"] for outcomes in (one, two)]
    strip = lambda runs: [{k: v for k, v in e.items() if k != "directory"} for e in runs]  # noqa: E731
    assert strip(boards[0]) == strip(boards[1])


def test_a_run_the_executor_loses_fails_alone(fake_runs):
    from concurrent.futures import Future

    from lm_eval_noise.tools.sweep import executors

    sweep, _, _ = fake_runs
    here = executors.Here(1, echo=False)

    class LosesTheSecond:
        submitted = 0

        def submit(self, arguments, run_dir):
            self.submitted += 1
            if self.submitted == 2:
                lost = Future()
                lost.set_exception(ConnectionError("node 10.0.0.7 died"))
                return lost
            return here.submit(arguments, run_dir)

        def close(self):
            here.close()

    outcomes = sweep("methods:\n  greedy: {}\n  temperature: {temperature: [0.5, 0.8]}\n", executor=LosesTheSecond())
    assert [o.status for o in outcomes] == ["done", "failed", "done"]
    assert outcomes[1].detail == "ConnectionError: node 10.0.0.7 died"
    assert not (outcomes[1].directory / "DONE.json").exists()


def test_parallel_runs_each_get_gpus_of_their_own(monkeypatch):
    from lm_eval_noise.errors import InputError
    from lm_eval_noise.tools.sweep import executors

    monkeypatch.setattr(executors, "_visible_gpus", lambda: ["4", "5", "6", "7"])
    here = executors.Here(2, gpus_per_run=2)
    shares = {here._env.get()["CUDA_VISIBLE_DEVICES"] for _ in range(2)}
    here.close()
    assert shares == {"4,5", "6,7"}
    with pytest.raises(InputError, match=r"--parallel 3: this machine shows 4 GPU\(s\) and a run takes 2: valid: "
                                         "at most 2"):
        executors.Here(3, gpus_per_run=2)
    with pytest.raises(InputError, match="--parallel 0: valid: an integer >= 1"):
        executors.Here(0)
    with pytest.raises(InputError, match="--parallel and --ray: give one"):
        executors.executor(2, "local")


def test_runs_that_split_themselves_over_replicas_are_refused_when_runs_go_at_once(tmp_path):
    from lm_eval_noise.tools.sweep import gpus_per_run

    sweep = load_sweep(write_config(tmp_path, "models: [{pretrained: m, tensor_parallel_size: 2}]\n"
                                              "tasks: [t]\nengine: vllm\nmethods: {greedy: {}}\n"))
    assert gpus_per_run(sweep, concurrent=True) == 2
    replicas = load_sweep(write_config(tmp_path, "models: [{pretrained: m, data_parallel_size: 2}]\n"
                                                 "tasks: [t]\nengine: vllm\nmethods: {greedy: {}}\n"))
    assert gpus_per_run(replicas, concurrent=False) == 1
    with pytest.raises(SweepConfigError, match="data_parallel_size=2 with --parallel or --ray: valid: 1"):
        gpus_per_run(replicas, concurrent=True)


# The plan: what a sweep will run and cost, printed before it runs.

def test_the_plan_states_the_work_and_estimates_it_from_a_timed_probe(fake_runs, capsys):
    from lm_eval_noise.cli import main
    from lm_eval_noise.tools.sweep import executors, load_sweep, plan_text

    sweep, _, folder = fake_runs
    methods = "methods:\n  greedy: {}\n  temperature: {temperature: [0.5, 0.8]}\n"
    sweep(methods + "gen_kwargs: {max_gen_toks: 40}\n", folder / "out")  # writes the config; all three done
    config = load_sweep(folder / "sweep.yaml")
    text = plan_text(config, folder / "out", executors.Here(1, echo=False))
    assert text.splitlines()[0] == "plan: 3 runs through hf-noise (3 finished, 0 to run), one run at a time"
    assert "probe" not in text  # nothing left to do: nothing probed

    text = plan_text(config, folder / "fresh", executors.Here(2))
    lines = text.splitlines()
    assert lines[0] == "plan: 3 runs through hf-noise (0 finished, 3 to run), 2 runs at a time on this machine"
    # humaneval_noise_n100 at limit 2; the sweep's max_gen_toks (40) over the task's (512)
    assert lines[1] == ("  m x humaneval_noise_n100: 3 runs x 2 problems x 3 samples x <= 40 new tokens = "
                        "18 answers, <= 720 new tokens")
    assert re.fullmatch(r"probe: greedy on 2 problem\(s\): \d+ s to load, [\d.]+ s a problem", lines[2]), lines[2]
    assert lines[3].startswith("estimate: ") and "with 2 at once" in lines[3]
    assert not (folder / "fresh" / "probe").exists() and not (folder / "fresh" / "runs").exists()

    assert main(["sweep", "--config", str(folder / "sweep.yaml"), "-o", str(folder / "dry"), "--dry-run"]) == 0
    assert "plan: 3 runs through hf-noise" in capsys.readouterr().err
    assert not (folder / "dry" / "runs").exists()  # a dry run runs nothing
    assert main(["sweep", "--config", str(folder / "sweep.yaml"), "-o", str(folder / "dry"), "--dry-run",
                 "--no-probe"]) == 0
    assert "probe" not in capsys.readouterr().err


def test_the_estimate_adds_a_load_and_the_problems_per_run_and_divides_by_the_slots():
    from types import SimpleNamespace

    from lm_eval_noise.tools.sweep.plan import Probe, Workload, describe

    sweep = SimpleNamespace(runs=[None] * 28, model="vllm-noise")
    loads = [Workload("Qwen/Qwen2.5-Coder-7B", "humaneval_noise", 16, 164, 100, 512),
             Workload("Qwen/Qwen2.5-Coder-7B", "mbpp", 12, None, 100, None)]
    where = SimpleNamespace(slots=8, describe=lambda: "8 runs at a time on this machine")
    probe = Probe("greedy", 2, 40.0, 10.0)
    lines = describe(sweep, loads[:1], 0, where, probe).splitlines()
    assert lines[1] == ("  Qwen/Qwen2.5-Coder-7B x humaneval_noise: 16 runs x 164 problems x 100 samples x <= 512 "
                        "new tokens = 262,400 answers, <= 134.3M new tokens")
    total = 16 * (40 + 164 * 10.0)  # 7.5 h one after another
    assert lines[3].startswith(f"estimate: {total / 3600:.1f} h of runs; about {total / 8 / 60:.0f} min with 8 at once")
    unknown = describe(sweep, loads, 0, where, probe)
    assert "mbpp: 12 runs x ? problems (the task did not load) x 100 samples" in unknown
    assert unknown.endswith("estimate: none (a task did not load)")
    failed = describe(sweep, loads[:1], 0, where, "the probe (greedy) failed, exit code 1: OOM")
    assert failed.endswith("estimate: none (the probe (greedy) failed, exit code 1: OOM)")


def test_an_interrupted_sweep_stops_its_runs_at_once_and_keeps_what_finished(fake_runs, monkeypatch):
    import threading

    from lm_eval_noise.tools.sweep import executors

    sweep, _, folder = fake_runs

    def harness(command, log, echo, env=None, cwd=None, on_output=None):
        if "greedy" in str(log):
            return fake_harness(command, log, echo, on_output=on_output)
        return REAL_RUN_LOGGED([sys.executable, "-c", "import time; time.sleep(120)"], log, echo, env, cwd)

    monkeypatch.setattr(executors, "run_logged", harness)

    def interrupt_when_one_is_done_and_one_runs():
        deadline = time.time() + 60
        while time.time() < deadline and not (list((folder / "out").glob("runs/*greedy*/DONE.json"))
                                              and executors._LIVE):
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)  # to this process only, as `kill -INT PID` (not its children)

    threading.Thread(target=interrupt_when_one_is_done_and_one_runs, daemon=True).start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        sweep("methods:\n  greedy: {}\n  temperature: {temperature: [0.5]}\n", executor=executors.Here(2))
    assert time.monotonic() - started < 30  # not the 120 s the running one would take
    assert not executors._LIVE  # stopped, not orphaned
    runs = {path.name.split("--")[2]: path for path in (folder / "out" / "runs").iterdir()}
    assert (runs["greedy"] / "DONE.json").exists() and not (runs["temperature-0.5"] / "DONE.json").exists()


def test_a_lost_ray_task_is_reported_in_one_clean_line():
    from lm_eval_noise.tools.sweep.executors import describe_failure

    class RayTaskError(Exception):  # as Ray wraps a task's exception: its traceback, coloured
        cause = NotADirectoryError(20, "Not a directory", "/sweep/runs/x")

    wrapped = RayTaskError("\x1b[36mray::attempt()\x1b[39m (pid=1)\nTraceback (most recent call last):\n  ...")
    assert describe_failure(wrapped) == "NotADirectoryError: [Errno 20] Not a directory: '/sweep/runs/x'"
    assert describe_failure(ConnectionError("node 10.0.0.7 died\nmore")) == "ConnectionError: node 10.0.0.7 died"


def test_runs_at_once_on_a_cpu_get_cores_of_their_own(monkeypatch):
    from lm_eval_noise.errors import InputError
    from lm_eval_noise.tools.sweep.executors import _core_shares

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {4, 5, 6, 7}, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    shares = _core_shares(2, 1)
    assert [s["VLLM_CPU_OMP_THREADS_BIND"] for s in shares] == ["4,5", "6,7"]  # vLLM binds its threads itself
    assert {s["OMP_NUM_THREADS"] for s in shares} == {"2"}
    assert [s["VLLM_CPU_OMP_THREADS_BIND"] for s in _core_shares(2, 2)] == ["4|5", "6|7"]  # a list per TP rank
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the user's cap stays
    assert {s["OMP_NUM_THREADS"] for s in _core_shares(2, 1)} == {"1"}
    with pytest.raises(InputError, match="may use 4 cores and a run needs at least 2: valid: at most 2"):
        _core_shares(3, 2)


def test_sweep_flags_that_cannot_apply_are_refused_in_one_line(fake_runs, capsys, monkeypatch):
    import importlib.util

    from lm_eval_noise.cli import main

    sweep, _, folder = fake_runs
    sweep()
    config = str(folder / "sweep.yaml")
    for flags, message in [
        (["--report-only", "--parallel", "2"], "--report-only runs nothing: --parallel, --ray and --dry-run"),
        (["--cpus-per-run", "2"], "--cpus-per-run: a request to a Ray cluster: give it with --ray"),
    ]:
        assert main(["sweep", "--config", config, "-o", str(folder / "out"), *flags]) == 2
        assert message in capsys.readouterr().err
    (folder / "sweep.yaml").write_text((folder / "sweep.yaml").read_text() + "engine: vllm\n")
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else find_spec(name, *a))
    assert main(["sweep", "--config", config, "-o", str(folder / "elsewhere")]) == 2
    assert "engine: vllm needs vLLM here" in capsys.readouterr().err
    assert not (folder / "elsewhere" / "runs").exists()
    two = load_sweep(write_config(folder, "models: [{pretrained: m, tensor_parallel_size: two}]\ntasks: [t]\n"
                                          "engine: vllm\nmethods: {greedy: {}}\n"))
    from lm_eval_noise.tools.sweep import gpus_per_run

    with pytest.raises(SweepConfigError, match="tensor_parallel_size='two': valid: an integer >= 1"):
        gpus_per_run(two, concurrent=False)


def test_a_stock_task_is_refused_when_the_sweep_starts(tmp_path, capsys):
    from lm_eval_noise.cli import main

    config = write_config(tmp_path, "models: [m]\ntasks: [gsm8k]\nmethods: {greedy: {}}\n")
    assert main(["sweep", "--config", str(config), "-o", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "task 'gsm8k' is not one of this package's tasks (`lm-eval-noise tasks` lists them)" in error
    assert not (tmp_path / "out" / "runs").exists()
