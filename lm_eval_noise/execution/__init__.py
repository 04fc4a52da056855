"""Sandboxed, parallel execution of untrusted programs. Imports no lm_eval.

Which file runs in which process, and what it trusts:

| file | runs in | trusts |
|---|---|---|
| `__init__.py` (`run_programs`), `sandbox.py` (`Worker`, verdicts), `cgroups.py`, `isolation.py` | the host (your process) | nothing any program or fork server says beyond the fields it parses; every status is decided here from what trusted processes saw |
| `_forkserver.py` | two fork servers per worker, bare `python -I -S` interpreters: the program server (inside namespaces at the `namespaces` level) and the checker server (outside any sandbox) | the host's requests; never reads a program's source, keeps nothing of one program for the next |
| `_confine.py` | the program server (once: its namespaces and read-only view) and each program's child before any untrusted byte runs (PID namespace, /tmp, uid, seccomp) | nothing: it builds the walls |
| `_preload.py` | the program server, before it forks | - |
| `_untrusted.py` | each program's own confined process: compiles and runs the source, serves calls to the entry point | nothing: what it reports can only make its own program fail |
| `_checker.py` | a child of the checker server per program, unconfined but under rlimits | the task's tests (dataset data); values from the program only as plain data rebuilt by `_wire` |
| `_wire.py` | both ends of the program-checker pipe | nothing it receives: it builds only values of trusted types |
| `_tree.py` | the host and the program server: removes what a program left | - |
"""

from __future__ import annotations

import os
import queue
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed

from tqdm import tqdm

from .isolation import Isolation, detect_isolation
from .sandbox import STATUSES, ExecutionResult, Limits, Program, Worker

__all__ = [
    "STATUSES", "ExecutionResult", "Isolation", "Limits", "Program", "detect_isolation",
    "run_programs",
]


def run_programs(
    programs: Iterable[Program | str],
    *,
    timeout: float = 3.0,
    memory_mb: int = 1024,
    workers: int | None = None,
    isolation: Isolation | None = None,
    progress: bool = False,
    limits: Limits | None = None,
) -> list[ExecutionResult]:
    """Run every program in its own sandboxed process, `workers` at a time (default: one
    per CPU), and return their results in input order. Never raises for a program."""
    programs = [p if isinstance(p, Program) else Program(p) for p in programs]
    if not programs:
        return []
    limits = limits or Limits(timeout=timeout, memory_mb=memory_mb)
    isolation = isolation or detect_isolation()
    count = min(workers or os.cpu_count() or 1, len(programs))
    slots: list[Worker] = []
    idle: queue.Queue[Worker] = queue.Queue()

    def run(program: Program) -> ExecutionResult:
        worker = idle.get()
        try:
            return worker.run(program)
        finally:
            idle.put(worker)

    try:
        for _ in range(count):
            slots.append(Worker(limits, isolation))
            idle.put(slots[-1])
        with ThreadPoolExecutor(count) as pool:
            futures = [pool.submit(run, program) for program in programs]
            for _ in tqdm(as_completed(futures), total=len(futures), desc="Executing programs",
                          disable=not progress):
                pass
        return [future.result() for future in futures]
    finally:
        for slot in slots:
            slot.close()
