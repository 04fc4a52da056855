"""Running a sweep: each run through `lm-eval-noise run` in its own process, resumably;
one after another, N at a time or on a Ray cluster (executors.py).

Layout of the output folder:
    runs/RUN_ID/           the harness's own --output_path (results JSON, samples JSONL),
                           log.txt (its output), DONE.json once complete
    tasks/                 the task variants the sweep made (the config's n as `repeats`)
    vectors/               random unit vectors of residual runs

A run's settings (run_settings) are everything that shapes its output; DONE.json records
them and their fingerprint, and when (`started`, `finished`: ISO 8601) and where
(`host`) the run was made. A rerun into the same folder
- skips a finished run whose recorded fingerprint equals its current one;
- refuses to start (SweepConfigError, one line naming what changed) when a finished run
  was made with other settings, or by an older version that recorded none: reusing it
  would report old results under new settings, and redoing it would delete results.
  The way on is another output folder, or deleting that run;
- redoes a partial run (no DONE.json) from scratch.
A failed run is reported and the sweep goes on. Runs are independent (each draws from
its own seeds), so running them at once changes no value they report.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
from concurrent.futures import as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from tqdm import tqdm

from ...harness.task_configs import tasks_dir
from .executors import Attempt, Here, describe_failure
from .grid import Run, Sweep, SweepConfigError

FILE_ARGS = ("noise_cov_sqrt", "noise_vectors")  # model_args that name files: their content shapes the output
VERSIONED = ("lm_eval", "transformers", "torch")  # besides this package, code whose version shapes the output
FEWSHOT_SEED = 1234  # lm_eval's default: seed replicates keep the baseline's few-shot examples


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
        raise SweepConfigError(f"task {task!r} is not one of this package's tasks (`lm-eval-noise tasks` lists them): "
                               "a sweep does not take stock lm-eval tasks yet (lm-eval scores only the first of "
                               "their `repeats` samples)")
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


def _task_yaml(path: Path) -> dict:
    """A task YAML as data (task YAMLs carry !function tags: kept as their text)."""
    loader = type("TaskLoader", (yaml.SafeLoader,), {})
    loader.add_constructor("!function", lambda node_loader, node: node_loader.construct_scalar(node))
    return yaml.load(path.read_text(), Loader=loader) or {}


def _metric_list(path: Path) -> list[dict]:
    """The metric_list of a task YAML, following `include:`."""
    config = _task_yaml(path)
    if "metric_list" in config:
        return list(config["metric_list"])
    return _metric_list(path.parent / config["include"]) if "include" in config else []


def _digest(path) -> str:
    return "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def task_files(task: str) -> dict[str, str]:
    """{file: content digest} of what the harness reads for `task`: its YAML, the YAMLs it
    includes (as lm_eval resolves `include:`), and the modules its `!function`s name (a .py
    beside the YAML first, else an importable module, as lm_eval looks). Named relative to
    the tasks folder, so moving an installation changes nothing. The variant the sweep
    writes around the task is made from these and `samples`, both in the settings."""
    files, pending = {}, [(tasks_dir() / f"{task}.yaml").resolve()]
    while pending:
        path = pending.pop()
        name = os.path.relpath(path, tasks_dir().resolve())
        if name in files:
            continue
        files[name] = _digest(path)
        includes = _task_yaml(path).get("include", [])
        includes = [includes] if isinstance(includes, str) else includes
        pending += [(path.parent / include).resolve() for include in includes]
        for module in sorted(set(re.findall(r"!function\s+([\w.]+)\.\w+", path.read_text()))):
            files[f"!function {module}"] = _module_digest(module, path.parent)
    return files


def _module_digest(module: str, folder: Path) -> str:
    """The digest of the source a `!function MODULE.name` runs, found as lm_eval finds it."""
    path = folder / f"{module.replace('.', '/')}.py"
    if not path.is_file():
        try:
            spec = importlib.util.find_spec(module)
        except ImportError:
            spec = None
        path = Path(spec.origin) if spec and spec.origin else None
    return _digest(path) if path and path.is_file() else "missing"  # then the run fails, and says why


def versions(engine: str = "hf") -> dict[str, str]:
    from importlib.metadata import version

    from ... import __version__
    from ...harness.provenance import vllm_version

    found = {"lm_eval_noise": __version__, **{name: version(name) for name in VERSIONED}}
    return {**found, "vllm": vllm_version()} if engine == "vllm" else found


def run_settings(sweep: Sweep, run: Run, model_args: dict) -> dict:
    """Everything that shapes a run's output: the key on which a finished run is reused.
    `model_args` as the harness gets them, with the files they name by content."""
    return {
        "engine": sweep.model, "task": run.task, "task_files": task_files(run.task),
        "model_args": {k: _digest(v) if k in FILE_ARGS and v else v for k, v in model_args.items()},
        "gen_kwargs": run.gen_kwargs, "samples": sweep.samples, "limit": sweep.limit, "metadata": sweep.metadata,
        "apply_chat_template": sweep.apply_chat_template, "seed": run.seed, "versions": versions(sweep.engine),
        # In the key although hf-noise's noise is independent of the batch: the rest of a run
        # is not (sampling draws from lm_eval's one torch generator in batch order; padding
        # and kernels change the arithmetic, so a greedy near-tie can flip), nor of the device.
        "batch_size": sweep.batch_size, "device": sweep.device,
    }


def fingerprint(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


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


def prepare_run(sweep: Sweep, run: Run, output: Path, run_dir: Path) -> tuple[list[str], dict]:
    """A run's `lm-eval-noise run` arguments and its settings, writing the files it needs
    (task variant, vectors). Paths in the arguments are absolute: the run may execute in
    another folder, or on another node that sees the sweep's folder at the same path."""
    output, run_dir = output.resolve(), run_dir.resolve()
    model_args = dict(run.model_args)
    vectors = model_args.get("noise_vectors")
    if isinstance(vectors, dict):
        path = random_vectors(output / "vectors", run.model, vectors["count"], vectors["seed"])
        model_args["noise_vectors"] = str(path)
    command = [
        "--model", sweep.model,
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
    if run.seed is not None:  # a replicate draws its own samples too (python, numpy, torch)
        command += ["--seed", f"{run.seed},{run.seed},{run.seed},{FEWSHOT_SEED}"]
    return command, run_settings(sweep, run, model_args)


def _plan(sweep: Sweep, run: Run, output: Path) -> tuple[Run, Path, tuple | Exception]:
    """(run, its folder, its (command, settings) or why they could not be made)."""
    run_dir = output / "runs" / run.run_id
    try:
        return run, run_dir, prepare_run(sweep, run, output, run_dir)
    except (SweepConfigError, OSError, ValueError) as error:
        return run, run_dir, error


def _flat(value, prefix: str = "") -> dict:
    if isinstance(value, dict):
        return {key: item for k, v in value.items() for key, item in _flat(v, f"{prefix}{k}.").items()}
    return {prefix[:-1]: value}


def _changes(old: dict, new: dict) -> str:
    """`key old -> new` for each setting that differs, for a one-line message."""
    before, after = _flat(old), _flat(new)
    same = lambda key: key in before and key in after and json.dumps(before[key]) == json.dumps(after[key])  # noqa: E731

    def show(side: dict, key: str) -> str:
        value = side.get(key, "(unset)")
        return (value if isinstance(value, str) else json.dumps(value))[:48]

    changed = [f"{key} {show(before, key)} -> {show(after, key)}"
               for key in sorted(before.keys() | after.keys()) if not same(key)]
    return ", ".join(changed[:4]) + (f" and {len(changed) - 4} more" if len(changed) > 4 else "")


def _finished(plans: list) -> set[Path]:
    """The folders of runs finished with exactly their current settings. A finished run made
    otherwise is refused, before anything runs (see the module docstring)."""
    finished, refused = set(), []
    for _, run_dir, prepared in plans:
        done = run_dir / "DONE.json"
        if isinstance(prepared, Exception) or not done.exists():
            continue
        try:
            stored = json.loads(done.read_text())
        except (OSError, ValueError):
            stored = {}
        settings = prepared[1]
        if stored.get("fingerprint") == fingerprint(settings):
            finished.add(run_dir)
        elif not isinstance(stored.get("settings"), dict):
            refused.append(f"{run_dir} was made by an older lm-eval-noise that did not record its settings")
        else:
            refused.append(f"{run_dir} was made with other settings: {_changes(stored['settings'], settings)}")
    if refused:
        others = len(refused) - 1
        more = f" (and {others} more finished run{'s' if others > 1 else ''})" if others else ""
        raise SweepConfigError(f"{refused[0]}{more}; use another --output folder or delete "
                               f"{'those runs' if others else 'that run'}")
    return finished


def finished_outcomes(sweep: Sweep, output: Path) -> list[RunOutcome]:
    """The runs already done (for --report-only), as skipped outcomes; refused as in a
    rerun when one was made with other settings."""
    plans = [_plan(sweep, run, output) for run in sweep.runs]
    plans = [plan for plan in plans if (plan[1] / "DONE.json").exists()]
    for _, run_dir, prepared in plans:
        if isinstance(prepared, Exception):
            raise SweepConfigError(f"{run_dir}: cannot check the settings it was made with: {prepared}")
    _finished(plans)
    return [RunOutcome(run, "skipped", run_dir) for run, run_dir, _ in plans]


def pending_runs(sweep: Sweep, output: Path) -> tuple[list[Run], int]:
    """(the runs a rerun into `output` would make, how many are finished), refused as
    run_sweep refuses a finished run made with other settings."""
    plans = [_plan(sweep, run, output) for run in sweep.runs]
    finished = _finished(plans)
    return [run for run, run_dir, _ in plans if run_dir not in finished], len(finished)


def gpus_per_run(sweep: Sweep, concurrent: bool) -> int:
    """The GPUs one run of `sweep` takes: a vllm-noise run its tensor-parallel size, an
    hf-noise run one. Data parallel inside a run is refused when runs go at once: the
    runs are then the sweep's data parallelism (and replicas asking a cluster for GPUs
    from inside a run that holds some would wait for each other)."""
    sizes = [1]
    for run in sweep.runs:
        if concurrent and _size(run, "data_parallel_size") > 1:
            raise SweepConfigError(f"run {run.name}: data_parallel_size={run.model_args['data_parallel_size']} "
                                   "with --parallel or --ray: valid: 1 (the runs go at once instead)")
        if sweep.engine == "vllm":
            sizes.append(_size(run, "tensor_parallel_size"))
    return max(sizes)


def _size(run: Run, key: str) -> int:
    value = run.model_args.get(key, 1)
    try:
        size = int(str(value))
    except ValueError:
        size = 0
    if size < 1:
        raise SweepConfigError(f"run {run.name}: {key}={value!r}: valid: an integer >= 1")
    return size


def run_sweep(sweep: Sweep, output: Path, *, echo: bool = True, executor=None) -> list[RunOutcome]:
    """Every run of `sweep` not already finished, through `executor` (executors.py; default:
    one after another here, echoing the harness when `echo`); the outcomes in the config's
    order."""
    plans = [_plan(sweep, run, output) for run in sweep.runs]
    finished = _finished(plans)
    executor = executor or Here(1, echo=echo)
    outcomes: dict[int, RunOutcome] = {}
    pending = {}
    for index, (run, run_dir, prepared) in enumerate(plans):
        if run_dir in finished:
            outcomes[index] = RunOutcome(run, "skipped", run_dir)
        elif isinstance(prepared, Exception):
            outcomes[index] = RunOutcome(run, "failed", run_dir, str(prepared))
        else:
            pending[index] = prepared
    bar = tqdm(total=len(plans), initial=len(outcomes), desc=f"sweep {sweep.name}", unit="run")
    futures = {}
    try:
        # The folder by its absolute path: a Ray worker starts elsewhere.
        futures = {executor.submit(arguments, plans[index][1].resolve()): index
                   for index, (arguments, _) in pending.items()}
        for future in as_completed(futures):
            index = futures[future]
            run, run_dir, (_, settings) = plans[index]
            outcomes[index] = _outcome(run, run_dir, settings, future)
            bar.update()
            bar.write(f"{run.name}: {outcomes[index].status}")
    except BaseException:
        # Interrupted (Ctrl-C, SIGTERM): the runs under way stop now; those that finished
        # meanwhile keep their results (a rerun skips them).
        executor.interrupt()
        for future, index in futures.items():
            if index not in outcomes and future.done() and not future.cancelled():
                run, run_dir, (_, settings) = plans[index]
                _outcome(run, run_dir, settings, future)
        raise
    finally:
        bar.close()
        executor.close()
    return [outcomes[index] for index in sorted(outcomes)]


def _outcome(run: Run, run_dir: Path, settings: dict, future) -> RunOutcome:
    """A run's outcome from its executed attempt; DONE.json written when it succeeded."""
    try:
        attempt: Attempt = future.result()
    except Exception as error:  # noqa: BLE001  (the executor lost it, a Ray node died...: this run fails, the sweep goes on)
        return RunOutcome(run, "failed", run_dir, describe_failure(error))
    results = sorted(run_dir.rglob("results_*.json"))
    if attempt.code == 0 and results:
        # When and where it ran: not settings (not in the fingerprint), a record.
        done = {"run": run.name, "model": run.model, "task": run.task, "model_args": run.model_args,
                "gen_kwargs": run.gen_kwargs, "results": str(results[-1].relative_to(run_dir)),
                "started": attempt.started, "finished": attempt.finished, "host": attempt.host,
                "fingerprint": fingerprint(settings), "settings": settings}
        (run_dir / "DONE.json.partial").write_text(json.dumps(done, indent=2))
        os.replace(run_dir / "DONE.json.partial", run_dir / "DONE.json")  # never half a DONE.json
        return RunOutcome(run, "done", run_dir)
    log = run_dir / "log.txt"
    tail = log.read_text(errors="replace").strip().splitlines()[-5:] if log.exists() else []
    return RunOutcome(run, "failed", run_dir, f"exit code {attempt.code}: " + " | ".join(tail))


def run_shape(run_dir: Path) -> dict:
    """What a finished run holds, from the files the harness wrote: samples per problem
    (answers per doc in the samples JSONL), problems (its docs) and the limit the harness
    was given (results JSON)."""
    answers = {}
    for path in sorted(run_dir.rglob("samples_*.jsonl")):
        for line in path.open(encoding="utf-8"):
            if line.strip():
                sample = json.loads(line)
                answers[sample["doc_id"]] = len(sample["resps"][0]) if sample["resps"] else 0
    counts = sorted(set(answers.values()))
    if len(counts) > 1:
        raise SweepConfigError(f"{run_dir}: its problems have different numbers of samples ({counts})")
    results = sorted(run_dir.rglob("results_*.json"))
    limit = json.loads(results[-1].read_text()).get("config", {}).get("limit") if results else None
    return {"samples": counts[0] if counts else 0, "problems": len(answers), "limit": limit}
