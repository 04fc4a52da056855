"""Every process that handles a program's data is inside a memory limit, the limits of
every slot on the host sum to what the machine has, and no two slots share a uid
(issue 27, items 3 and 4)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sandbox_helpers import LEVELS, cgroups_available, needs_namespaces

from lm_eval_noise.execution import Isolation, Limits, Program, Worker, detect_isolation, leases, run_programs, sandbox

# HumanEval/33's own test does `tuple(candidate(...))`: a lazy range costs the program
# nothing and the checker, which rebuilds it, gigabytes.
RANGE_BOMB = Program("def sort_third(l):\n    return range(300_000_000)\n",
                     tests="def check(candidate):\n    assert tuple(candidate([1, 2, 3])) == (1, 2, 3)\n",
                     entry_point="sort_third")
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="programs get uids of their own only on a root host")


def _peak_rss_mb(parent: int, stop: threading.Event, peaks: list[int]) -> None:
    """The largest high-water mark (VmHWM) among `parent`'s children, until `stop`."""
    while not stop.is_set():
        try:
            children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
            for child in children:
                for line in Path(f"/proc/{child}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peaks.append(int(line.split()[1]) // 1024)
        except (OSError, ValueError):
            pass
        time.sleep(0.01)


@pytest.mark.parametrize("level", LEVELS)
def test_the_checker_is_inside_the_programs_memory_limit(level):
    """It was outside the cgroup with RLIMIT_AS = max(4 GiB, 4 x memory_mb): this
    program drove it to 4062 MB."""
    worker = Worker(Limits(timeout=20, memory_mb=256), Isolation(level))
    stop, peaks = threading.Event(), [0]
    watcher = threading.Thread(target=_peak_rss_mb, args=(worker.checker_server.pid, stop, peaks))
    watcher.start()
    try:
        result = worker.run(RANGE_BOMB)
    finally:
        stop.set()
        watcher.join()
        worker.close()
    assert not result.passed
    if cgroups_available():
        assert result.status == "memory_limit", result
    assert max(peaks) <= 256 + 16, (max(peaks), result)


def test_a_checker_killed_for_memory_is_a_memory_limit_not_a_harness_error():
    if not cgroups_available():
        pytest.skip("needs a cgroup")
    (result,) = run_programs([RANGE_BOMB], limits=Limits(timeout=20, memory_mb=256))
    assert result.status == "memory_limit", result


@pytest.fixture
def small_budget(tmp_path, monkeypatch):
    """A host budget of 4 slots, in a lease directory of the test's own."""
    detect_isolation()  # its trial slot takes the host's budget, before it shrinks
    limits = Limits(timeout=5, memory_mb=64 if cgroups_available() else 512, tmp_mb=8)
    units = math.ceil(limits.slot_memory_mb(cgroups_available()) / leases.MEMORY_UNIT_MB)
    monkeypatch.setattr(leases, "lease_directory", lambda: tmp_path)
    monkeypatch.setattr(leases, "memory_budget_units", lambda: 4 * units)
    return limits


def test_the_slots_of_every_evaluation_at_once_fit_the_host_budget(small_budget, monkeypatch):
    """Two evaluations at once, each asking for 6 slots: never more than the budget's 4
    are open together, and every program still runs."""
    live, most = [0], [0]
    lock = threading.Lock()
    opened, closed = Worker.__init__, Worker.close

    def counting_init(self, *args):
        opened(self, *args)
        with lock:
            live[0] += 1
            most[0] = max(most[0], live[0])
        self.counted = True

    def counting_close(self):  # also called by an __init__ that failed
        if getattr(self, "counted", False):
            with lock:
                live[0] -= 1
        closed(self)

    monkeypatch.setattr(Worker, "__init__", counting_init)
    monkeypatch.setattr(Worker, "close", counting_close)
    results = [None, None]

    def evaluate(index):
        results[index] = run_programs(["import time\ntime.sleep(1)\n"] * 6, workers=6, limits=small_budget)

    evaluations = [threading.Thread(target=evaluate, args=(index,)) for index in range(2)]
    for evaluation in evaluations:
        evaluation.start()
    for evaluation in evaluations:
        evaluation.join()
    assert [r.status for batch in results for r in batch] == ["passed"] * 12
    assert most[0] == 4
    assert leases.take_memory(leases.memory_budget_units() * leases.MEMORY_UNIT_MB) is not None  # all given back


def test_limits_the_machine_could_never_hold_are_refused_in_words(small_budget):
    with pytest.raises(ValueError, match="lower memory_mb"):
        run_programs(["pass"], limits=Limits(memory_mb=100_000))


# A program that takes 500 of its uid's tasks, and an honest one that needs 20 threads.
THREAD_HOG = ("import threading, time\n"
              "threads = [threading.Thread(target=time.sleep, args=(4,)) for _ in range(500)]\n"
              "[t.start() for t in threads]\ntime.sleep(4)\n")
THREAD_POOL = ("import threading\nfrom concurrent.futures import ThreadPoolExecutor\n"
               "everyone = threading.Barrier(20)\n"
               "with ThreadPoolExecutor(20) as pool:\n"
               "    assert sum(pool.map(lambda x: everyone.wait() * 0 + x, range(20))) == 190\n")


def _hog_then_pool(first: Worker, second: Worker) -> sandbox.ExecutionResult:
    hog = threading.Thread(target=first.run, args=(Program(THREAD_HOG),))
    hog.start()
    time.sleep(1.5)  # its threads are up
    try:
        return second.run(Program(THREAD_POOL))
    finally:
        hog.join()


@root_only
@needs_namespaces
def test_one_evaluations_threads_do_not_limit_anothers(monkeypatch):
    """RLIMIT_NPROC counts threads per uid across the host: slots that shared a uid
    (two evaluations whose pid-derived uid ranges met) made an honest thread pool fail."""
    limits, level = Limits(timeout=6), Isolation("namespaces")
    first, second = Worker(limits, level), Worker(limits, level)
    try:
        assert first.uid != second.uid and min(first.uid, second.uid) in leases.PROGRAM_UIDS
        assert _hog_then_pool(first, second).status == "passed"
    finally:
        first.close()
        second.close()
    # The harm when they share one (as the old uid ranges allowed).
    shared = leases.PROGRAM_UIDS[-1]
    monkeypatch.setattr(leases, "take_uid", lambda: (shared, leases.Lease([])))
    first, second = Worker(limits, level), Worker(limits, level)
    try:
        assert _hog_then_pool(first, second).status != "passed"
    finally:
        first.close()
        second.close()


HOLD_A_SLOT = """
import json, sys, time
from lm_eval_noise.execution import Isolation, Limits, Worker
workers = [Worker(Limits(), Isolation("none")) for _ in range(3)]
print(json.dumps([w.uid for w in workers]), flush=True)
sys.stdin.read()
"""


@root_only
def test_slots_of_two_processes_never_share_a_uid():
    holder = subprocess.Popen([sys.executable, "-c", HOLD_A_SLOT], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        theirs = set(json.loads(holder.stdout.readline()))
        ours = [Worker(Limits(), Isolation("none")) for _ in range(3)]
        try:
            assert len(theirs | {w.uid for w in ours}) == 6
        finally:
            for worker in ours:
                worker.close()
    finally:
        holder.communicate("")


HOST_THAT_DIES = """
import json, sys
from lm_eval_noise.execution import Isolation, Limits, Program, Worker
worker = Worker(Limits(timeout=30), Isolation(sys.argv[1]))
print(json.dumps(worker.uid), flush=True)
worker.run(Program("import time\\ntime.sleep(30)\\n"))
"""


def _processes_of(uid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and f"Uid:\t{uid}\t" in (entry / "status").read_text():
                found.append(int(entry.name))
        except OSError:
            pass
    return found


@root_only
@needs_namespaces
def test_a_host_killed_mid_program_leaves_no_program_and_no_lease_taken_too_early():
    """The program's parent is its fork server, not the host: it ran on to its deadline
    (30 s here) while its uid and memory leases were already free for the next evaluation."""
    import signal

    host = subprocess.Popen([sys.executable, "-c", HOST_THAT_DIES, "namespaces"], stdout=subprocess.PIPE, text=True)
    uid = json.loads(host.stdout.readline())
    deadline = time.monotonic() + 10
    while not _processes_of(uid) and time.monotonic() < deadline:  # the program is up
        time.sleep(0.05)
    assert _processes_of(uid)
    host.send_signal(signal.SIGKILL)
    host.wait()
    gone = time.monotonic() + 5
    while (_processes_of(uid) or not _uid_free(uid)) and time.monotonic() < gone:
        time.sleep(0.05)
    assert _processes_of(uid) == [] and _uid_free(uid)  # within seconds, not at the 30 s deadline


def _uid_free(uid: int) -> bool:
    import fcntl

    path = leases.lease_directory() / f"uid-{uid - leases.PROGRAM_UIDS[0]}"
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True
