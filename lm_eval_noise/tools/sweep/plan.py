"""A sweep's plan, printed before it runs (alone with `--dry-run`): its runs, the
problems x samples x new tokens they ask for, and how long they should take.

The estimate comes from a probe: the first run still to do, made on at most two
problems through the sweep's own executor (so on the devices the runs get), timed in
two parts: loading (until the harness starts its requests) and the time a problem
takes. Each run then costs a load plus its problems; runs at once divide the total by
the executor's slots. Runs differ (a sampling run and a noise run do not stop at the
same lengths), so it is an estimate from one of them, and says which.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from .grid import Run, Sweep, SweepConfigError

PROBE_PROBLEMS = 2
_DEFAULT_MAX_GEN_TOKS = 256  # lm_eval's own, when neither the task nor the sweep sets it


@dataclass(frozen=True)
class Workload:
    """What the runs of one model on one task ask for."""

    model: str
    task: str
    runs: int
    problems: int | None  # None: the task could not be loaded (its runs will say why)
    samples: int
    max_tokens: int | None  # None: greedy with no bound the plan can read


@dataclass(frozen=True)
class Probe:
    run: str
    problems: int
    load_seconds: float
    seconds_per_problem: float


def task_shape(sweep: Sweep, task: str, variant_folder: Path) -> tuple[int | None, int | None]:
    """(problems, max new tokens) of `task` as its runs get it: its documents (at most
    the sweep's limit) and its own max_gen_toks; (None, None) when it does not load."""
    from lm_eval.tasks import TaskManager

    from ...harness.task_configs import tasks_dir
    from .runner import task_variant

    name = task_variant(variant_folder, task, sweep.samples)
    quiet = logging.getLogger("lm_eval")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # its notes on loading belong to the runs' logs
    try:
        manager = TaskManager(include_path=[str(tasks_dir()), str(variant_folder)], include_defaults=False,
                              metadata=dict(sweep.metadata))
        loaded = manager.load(name)["tasks"][name]
        problems = len(loaded.eval_docs)
    except Exception:  # noqa: BLE001  (a task that cannot load fails in its runs, which say why)
        return None, None
    finally:
        quiet.setLevel(level)
    if sweep.limit is not None:
        problems = min(problems, sweep.limit)
    return problems, int((loaded.config.generation_kwargs or {}).get("max_gen_toks") or _DEFAULT_MAX_GEN_TOKS)


def workloads(sweep: Sweep, pending: list[Run], variant_folder: Path) -> list[Workload]:
    """One per model and task among the runs still to do."""
    groups: dict[tuple[str, str], list[Run]] = {}
    for run in pending:
        groups.setdefault((run.model, run.task), []).append(run)
    shapes = {task: task_shape(sweep, task, variant_folder) for task in sorted({task for _, task in groups})}
    loads = []
    for (model, task), runs in sorted(groups.items()):
        problems, task_tokens = shapes[task]
        tokens = None if problems is None else max(int(run.gen_kwargs.get("max_gen_toks") or task_tokens)
                                                   for run in runs)
        loads.append(Workload(model, task, len(runs), problems, sweep.samples, tokens))
    return loads


def run_probe(sweep: Sweep, run: Run, output: Path, executor) -> Probe | str:
    """The timed probe (see the module docstring); a string saying why when it failed."""
    from .runner import prepare_run

    small = dataclasses.replace(sweep, limit=min(PROBE_PROBLEMS, sweep.limit or PROBE_PROBLEMS))
    folder = output / "probe" / run.run_id
    try:
        arguments, _ = prepare_run(small, run, output, folder)
    except (SweepConfigError, OSError, ValueError) as error:
        return f"the probe could not start: {error}"
    attempt = executor.submit(arguments, folder.resolve(), quiet=True).result()
    if attempt.code != 0:
        log = folder / "log.txt"
        tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
        return f"the probe ({run.name}) failed, exit code {attempt.code}: " + " | ".join(tail)
    problems = _problems_in(folder) or 1
    shutil.rmtree(output / "probe", ignore_errors=True)
    if attempt.requests_after is None:
        return f"the probe ({run.name}) never showed the harness starting its requests: no estimate"
    working = max(0.0, attempt.seconds - attempt.requests_after)
    return Probe(run.name, problems, attempt.requests_after, working / max(1, problems))


def _problems_in(folder: Path) -> int:
    from .runner import run_shape

    return run_shape(folder)["problems"]


def describe(sweep: Sweep, loads: list[Workload], finished: int, executor, probe: Probe | str | None) -> str:
    """The plan as printed: the runs, what they ask for, and the estimate."""
    to_run = sum(load.runs for load in loads)
    lines = [f"plan: {len(sweep.runs)} runs through {sweep.model} ({finished} finished, {to_run} to run), "
             f"{executor.describe()}"]
    for load in loads:
        problems = "? problems (the task did not load)" if load.problems is None else f"{load.problems} problems"
        line = f"  {load.model} x {load.task}: {load.runs} runs x {problems} x {load.samples} samples"
        if load.problems is not None and load.max_tokens is not None:
            answers = load.runs * load.problems * load.samples
            line += (f" x <= {load.max_tokens} new tokens = {answers:,} answers, "
                     f"<= {_count(answers * load.max_tokens)} new tokens")
        lines.append(line)
    if probe is None:
        return "\n".join(lines)
    if isinstance(probe, str):
        return "\n".join([*lines, f"estimate: none ({probe})"])
    lines.append(f"probe: {probe.run} on {probe.problems} problem(s): {probe.load_seconds:.0f} s to load, "
                 f"{probe.seconds_per_problem:.1f} s a problem")
    if any(load.problems is None for load in loads):
        return "\n".join([*lines, "estimate: none (a task did not load)"])
    total = sum(load.runs * (probe.load_seconds + load.problems * probe.seconds_per_problem) for load in loads)
    slots = max(1, min(executor.slots, to_run))
    at_once = "" if slots == 1 else f"; about {_duration(total / slots)} with {slots} at once"
    lines.append(f"estimate: {_duration(total)} of runs{at_once} (from one run's probe; runs that stop "
                 "earlier or later differ)")
    return "\n".join(lines)


def _count(value: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return str(value)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def plan_text(sweep: Sweep, output: Path, executor, probe: bool = True) -> str:
    """The plan of `sweep` into `output` on `executor`: refused as a rerun is when a
    finished run was made with other settings; probed (a short run) unless `probe` is
    False or nothing is left to do."""
    from .runner import pending_runs

    pending, finished = pending_runs(sweep, output)
    loads = workloads(sweep, pending, output / "tasks")
    measured = run_probe(sweep, pending[0], output, executor) if probe and pending else None
    return describe(sweep, loads, finished, executor, measured)
