"""Running a sweep: each run through `lm-eval-noise run` in its own process, resumably.

Layout of the output folder:
    runs/RUN_ID/           the harness's own --output_path (results JSON, samples JSONL),
                           log.txt (its output), DONE.json once complete
    tasks/                 the task variants the sweep made (the config's n as `repeats`)
    vectors/               random unit vectors of residual runs
A run whose DONE.json exists is skipped on a rerun; a partial one is redone from
scratch; a failed one is reported and the sweep goes on.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from tqdm import tqdm

from ...harness.task_configs import tasks_dir
from .grid import Run, Sweep, SweepConfigError


@dataclass(frozen=True)
class RunOutcome:
    run: Run
    status: str  # "done", "skipped" (already complete), "failed"
    directory: Path
    detail: str = ""


def task_variant(folder: Path, task: str, samples: int) -> str:
    """A task YAML that includes `task` with `repeats: samples` (and pass@samples among
    its metrics when the task reports pass@k); returns its name."""
    base = tasks_dir() / f"{task}.yaml"
    if not base.is_file():
        raise SweepConfigError(f"task {task!r} is not one of this package's tasks ({tasks_dir()})")
    name = f"{task}__n{samples}"
    variant = {"include": str(base), "task": name, "repeats": samples}
    metrics = _metric_list(base)
    names = {m["metric"] for m in metrics}
    if any(n.startswith("pass@") for n in names) and f"pass@{samples}" not in names:
        variant["metric_list"] = metrics + [{"metric": f"pass@{samples}", "aggregation": "mean",
                                             "higher_is_better": True}]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(variant, sort_keys=False))
    return name


def _metric_list(path: Path) -> list[dict]:
    """The metric_list of a task YAML, following `include:` (task YAMLs carry !function tags)."""
    loader = type("TaskLoader", (yaml.SafeLoader,), {})
    loader.add_constructor("!function", lambda node_loader, node: node_loader.construct_scalar(node))
    config = yaml.load(path.read_text(), Loader=loader) or {}
    if "metric_list" in config:
        return list(config["metric_list"])
    return _metric_list(path.parent / config["include"]) if "include" in config else []


def random_vectors(folder: Path, model: str, count: int, seed: int) -> Path:
    """`count` random unit vectors of the model's width, saved once per (model, K, seed)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model)
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    width = config.hidden_size
    path = folder / f"{Path(model).name}_d{width}_k{count}_seed{seed}.npy"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        vectors = np.random.default_rng(seed).normal(size=(count, width))
        np.save(path, (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32))
    return path


def _command(sweep: Sweep, run: Run, output: Path, run_dir: Path) -> list[str]:
    model_args = dict(run.model_args)
    vectors = model_args.get("noise_vectors")
    if isinstance(vectors, dict):
        path = random_vectors(output / "vectors", run.model, vectors["count"], vectors["seed"])
        model_args["noise_vectors"] = str(path)
    command = [
        sys.executable, "-m", "lm_eval_noise", "run", "--model", "hf-noise",
        "--model_args", json.dumps(model_args), "--tasks", task_variant(output / "tasks", run.task, sweep.samples),
        "--include_path", str(output / "tasks"), "--output_path", str(run_dir), "--log_samples",
        "--batch_size", sweep.batch_size, "--confirm_run_unsafe_code", "--gen_kwargs", json.dumps(run.gen_kwargs),
    ]
    if sweep.device:
        command += ["--device", sweep.device]
    if sweep.limit is not None:
        command += ["--limit", str(sweep.limit)]
    if sweep.apply_chat_template:
        command += ["--apply_chat_template"]
    if sweep.metadata:
        command += ["--metadata", json.dumps(sweep.metadata)]
    return command


def _run_logged(command: list[str], log: Path, echo: bool) -> int:
    """Run `command`, copying its output to `log` as it comes (and to stderr when `echo`)."""
    with log.open("wb") as sink:
        # Unbuffered child: a run's log shows what it is doing while it does it.
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})

        def pump():
            for chunk in iter(lambda: process.stdout.read1(65536), b""):
                sink.write(chunk)
                sink.flush()
                if echo:
                    sys.stderr.buffer.write(chunk)
                    sys.stderr.flush()

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        code = process.wait()
        reader.join()
    return code


def finished_outcomes(sweep: Sweep, output: Path) -> list[RunOutcome]:
    """The runs already done (for --report-only), as skipped outcomes."""
    return [RunOutcome(run, "skipped", output / "runs" / run.run_id) for run in sweep.runs
            if (output / "runs" / run.run_id / "DONE.json").exists()]


def run_sweep(sweep: Sweep, output: Path, *, echo: bool = True) -> list[RunOutcome]:
    outcomes = []
    bar = tqdm(sweep.runs, desc=f"sweep {sweep.name}", unit="run")
    for run in bar:
        run_dir = output / "runs" / run.run_id
        done = run_dir / "DONE.json"
        bar.set_postfix_str(run.name)
        if done.exists():
            outcomes.append(RunOutcome(run, "skipped", run_dir))
            continue
        if run_dir.exists():
            shutil.rmtree(run_dir)  # a partial run: start it again
        run_dir.mkdir(parents=True)
        try:
            command = _command(sweep, run, output, run_dir)
        except (SweepConfigError, OSError, ValueError) as error:
            outcomes.append(RunOutcome(run, "failed", run_dir, str(error)))
            continue
        code = _run_logged(command, run_dir / "log.txt", echo)
        results = sorted(run_dir.rglob("results_*.json"))
        if code == 0 and results:
            done.write_text(json.dumps({"run": run.name, "model": run.model, "task": run.task,
                                        "model_args": run.model_args, "gen_kwargs": run.gen_kwargs,
                                        "results": str(results[-1].relative_to(run_dir))}, indent=2))
            outcomes.append(RunOutcome(run, "done", run_dir))
        else:
            tail = (run_dir / "log.txt").read_text(errors="replace").strip().splitlines()[-5:]
            outcomes.append(RunOutcome(run, "failed", run_dir, f"exit code {code}: " + " | ".join(tail)))
        bar.write(f"{run.name}: {outcomes[-1].status}")
    return outcomes
