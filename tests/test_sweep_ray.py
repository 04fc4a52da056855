"""Sweeps that run their runs at once: the same tiny sweep one run after another, with
README's `--parallel` command and on a Ray cluster started by README's `ray start`
(made small: a toy model, a cluster of two CPUs), gives identical leaderboards, with runs
overlapping in time on the cluster.

Runs where Ray is installed (CI: the vLLM environment, which has it); skipped elsewhere.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from test_readme_commands import ENV, command, shrink
from test_readme_commands import run as run_shell
from test_sweep import write_config

pytest.importorskip("ray")

README_CONFIG = "configs/humaneval_7b_vllm.yaml"


def _tiny_config(folder: Path, model: str) -> Path:
    return write_config(folder, f"""
name: tiny
models: [{{pretrained: {model}}}]
tasks: [humaneval_noise]
samples: 2
limit: 2
baseline: greedy
batch_size: "2"
device: cpu
gen_kwargs: {{max_gen_toks: 6}}
methods:
  greedy: {{}}
  temperature: {{temperature: [0.8]}}
  noise: {{sigma_scale: [1.0], scope: [per_sequence]}}
""")


def _board(out: Path) -> list[dict]:
    """The leaderboard's runs without where their folders are."""
    runs = json.loads((out / "leaderboard.json").read_text())["runs"]
    return [{key: value for key, value in run.items() if key != "directory"} for run in runs]


def _spans(out: Path) -> list[tuple[datetime, datetime]]:
    done = [json.loads(path.read_text()) for path in sorted(out.glob("runs/*/DONE.json"))]
    assert {d["host"] for d in done} == {socket.gethostname()}
    return sorted((datetime.fromisoformat(d["started"]), datetime.fromisoformat(d["finished"])) for d in done)


@pytest.mark.slow
def test_a_sweep_in_parallel_and_on_a_ray_cluster_reports_what_it_reports_sequentially(toy_paths, tmp_path):
    config = _tiny_config(tmp_path, toy_paths["llama"])
    env = {**ENV, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("OMP_NUM_THREADS")  # the executors give each run its threads
    sequential = subprocess.run([sys.executable, "-m", "lm_eval_noise", "sweep", "--config", str(config), "-o",
                                 str(tmp_path / "sequential"), "--quiet"], env=env, capture_output=True, text=True,
                                timeout=900)
    assert sequential.returncode == 0, sequential.stderr[-3000:]
    expected = _board(tmp_path / "sequential")
    assert [run["name"] for run in expected] == ["greedy", "temperature-0.8", "noise-embed-per_sequence-sigma1"]

    # README's commands, made small: the tiny config, two runs at once, output here.
    parallel = shrink(command("--parallel 8"), [(README_CONFIG, str(config)), ("--parallel 8", "--parallel 2"),
                                                ("sweeps/7b", str(tmp_path / "parallel"))])
    run_shell(parallel, tmp_path)
    assert _board(tmp_path / "parallel") == expected

    cluster = shrink(command("ray start --head"), [
        ("ray start --head", "ray start --head --num-cpus 2 --disable-usage-stats"),
        (README_CONFIG, str(config)), ("/shared/sweeps/7b", str(tmp_path / "ray_sweep"))])
    ray = shutil.which("ray", path=str(Path(sys.executable).parent))
    try:
        run_shell(cluster, tmp_path)
    finally:
        subprocess.run([ray, "stop", "--force"], env=env, capture_output=True, timeout=120)
    assert _board(tmp_path / "ray_sweep") == expected
    spans = _spans(tmp_path / "ray_sweep")
    assert spans[1][0] < spans[0][1], spans  # two runs at once on the cluster's two workers
    assert os.path.isfile(next((tmp_path / "ray_sweep" / "runs").glob("*/log.txt")))
