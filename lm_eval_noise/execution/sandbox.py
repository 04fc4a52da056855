"""Run untrusted programs, each in its own sandboxed process, and classify the outcome.

A Worker keeps two fork servers (`_zygote.py`): one inside the OS isolation of
`isolation.py`, forking the untrusted runner (`_untrusted.py`), and one outside it,
forking the trusted test runner (`_checker.py`). Per program: a fresh temp dir
(always removed), a scrubbed environment, stdin closed, output captured to an
unnamed file capped by RLIMIT_FSIZE, resource limits, its own process group killed
with SIGKILL at the wall-clock deadline, and every process it left behind killed.

With tests, the checker runs them and calls the candidate across a pipe. The program
passes only if the checker writes back the secret token, which only the checker holds
and writes after `check()` returned; the program's exit status and anything in its
own process count for nothing.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from . import _wire
from .isolation import Isolation

ZYGOTE = str(Path(__file__).resolve().with_name("_zygote.py"))
STATUSES = (
    "passed", "failed_assertion", "exception", "syntax_error", "timeout", "memory_limit",
    "output_limit", "recursion_limit", "crash", "exited_early", "blocked",
    "untrusted_return", "harness_error",
)
_RESULT_CAP = 64 * 1024
_ZYGOTE_GRACE = 30.0  # beyond the program's own deadline, before a zygote counts as hung
_ZYGOTE_EXIT_SECONDS = 5.0


@dataclass(frozen=True)
class Program:
    """Source to run in the sandbox.

    With `tests` and `entry_point`, the trusted tests (which must define
    `check(candidate)`) run in the checker against the source's `entry_point`; it
    passes only if check() returns. Without tests, passing means only that the source
    ran to completion, as the program itself reports it.
    """

    source: str
    tests: str | None = None
    entry_point: str | None = None

    def __post_init__(self):
        if self.tests is not None and not self.entry_point:
            raise ValueError("a Program with tests needs an entry_point")


@dataclass(frozen=True)
class Limits:
    timeout: float = 10.0  # wall-clock seconds
    memory_mb: int = 1024  # address space
    file_size_mb: int = 16  # any file written, captured output included
    open_files: int = 64
    processes: int = 512  # RLIMIT_NPROC, per user and counting threads; not applied to root
    output_chars: int = 4096  # of captured output kept in the result

    def rlimits(self) -> dict[str, int]:
        return {
            "RLIMIT_AS": self.memory_mb * 1024 * 1024,
            "RLIMIT_CPU": int(self.timeout) + 1,
            "RLIMIT_FSIZE": self.file_size_mb * 1024 * 1024,
            "RLIMIT_NOFILE": self.open_files,
            "RLIMIT_NPROC": self.processes,
            "RLIMIT_CORE": 0,
        }


@dataclass(frozen=True)
class ExecutionResult:
    passed: bool
    status: str  # one of STATUSES
    detail: str = ""
    duration: float = 0.0
    output: str = ""


class Worker:
    """One execution slot: a sandboxed program zygote and a trusted checker zygote,
    each forking one process per program. Not thread-safe: one program at a time.

    Create it in a thread that outlives it: bwrap's --die-with-parent fires when the
    creating *thread* exits."""

    def __init__(self, limits: Limits, isolation: Isolation):
        self.limits, self.isolation = limits, isolation
        self.root = tempfile.mkdtemp(prefix="lm-eval-noise-")
        self.program_zygote = _Zygote("program", isolation, self.root)
        self.checker_zygote = _Zygote("checker", None, self.root)

    def run(self, program: Program) -> ExecutionResult:
        """Never raises: a failure of the harness itself is recorded as `harness_error`."""
        start = time.perf_counter()
        try:
            result = self._run(program)
        except Exception as error:  # noqa: BLE001 - one program must not stop the run
            self.program_zygote.restart()
            self.checker_zygote.restart()
            result = ExecutionResult(False, "harness_error", f"{type(error).__name__}: {error}")
        return replace(result, duration=time.perf_counter() - start)

    def close(self) -> None:
        self.program_zygote.stop()
        self.checker_zygote.stop()
        _remove_tree(self.root)

    def _run(self, program: Program) -> ExecutionResult:
        workdir = tempfile.mkdtemp(dir=self.root)
        fds: list[int] = []

        def pipe():
            ends = os.pipe()
            fds.extend(ends)
            return ends

        def release(*ends):
            for fd in ends:
                fds.remove(fd)
                os.close(fd)

        try:
            Path(workdir, "solution.py").write_text(program.source, encoding="utf-8")
            call_read, call_write = pipe()
            reply_read, reply_write = pipe()
            common = {"entry_point": program.entry_point or "", "timeout": self.limits.timeout,
                      "rlimits": self.limits.rlimits()}
            with tempfile.TemporaryFile() as output:
                self.program_zygote.submit({**common, "workdir": workdir}, [call_read, reply_write, output.fileno()])
                release(call_read, reply_write)
                if program.tests is None:
                    release(call_write)
                    ended = self.program_zygote.outcome(self.limits.timeout)
                    result = _classify_untested(_read_available(reply_read), ended)
                else:
                    token = secrets.token_hex(16)
                    result_read, result_write = pipe()
                    self.checker_zygote.submit(
                        {**common, "tests": program.tests, "token": token}, [call_write, reply_read, result_write]
                    )
                    release(call_write, reply_read, result_write)
                    ended = self.program_zygote.outcome(self.limits.timeout)
                    checked = self.checker_zygote.outcome(self.limits.timeout)
                    result = _classify_tested(_read_available(result_read), token, ended, checked)
                output.seek(0)
                text = output.read(self.limits.output_chars).decode("utf-8", "replace")
            return replace(result, output=text)
        finally:
            for fd in fds:
                os.close(fd)
            _remove_tree(workdir)


class _Zygote:
    """A fork server process (_zygote.py) and its control socket."""

    def __init__(self, role: str, isolation: Isolation | None, root: str):
        self.role, self.isolation, self.root = role, isolation, root
        self.start()

    def start(self) -> None:
        ours, theirs = socket.socketpair()
        owns_namespace = self.isolation is not None and self.isolation.descendants_die_with_program
        argv = [sys.executable, "-I", ZYGOTE, self.role, str(theirs.fileno()), "1" if owns_namespace else "0"]
        if self.isolation is not None:
            argv = self.isolation.wrap(argv, self.root)
        # The marker lets the zygote find processes a program left behind without namespaces.
        env = _scrubbed_env(self.root)
        if self.role == "program":
            env["LM_EVAL_NOISE_PROGRAM"] = self.root
        self.process = subprocess.Popen(
            argv, cwd=self.root, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pass_fds=(theirs.fileno(),),
            start_new_session=True,
        )
        theirs.close()
        self.control = ours
        self.replies = ours.makefile("rb")

    def stop(self) -> None:
        # Closing the socket makes a healthy zygote exit, and bwrap with it, so that the
        # sandbox is gone when stop() returns; SIGKILL only for one that does not.
        self.replies.close()
        self.control.close()
        try:
            self.process.wait(timeout=_ZYGOTE_EXIT_SECONDS)
        except subprocess.TimeoutExpired:
            _kill_group(self.process.pid)
            self.process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def submit(self, request: dict, fds: list[int]) -> None:
        socket.send_fds(self.control, [json.dumps(request).encode("utf-8")], fds)

    def outcome(self, timeout: float) -> dict | None:
        """The zygote's report on its child, or None if the zygote itself died (it is restarted)."""
        self.control.settimeout(timeout + _ZYGOTE_GRACE)
        try:
            line = self.replies.readline()
        except OSError:
            line = b""
        if not line:
            self.restart()
            return None
        return json.loads(line)


def _classify_tested(report: bytes, token: str, ended: dict | None, checked: dict | None) -> ExecutionResult:
    if ended is None or checked is None:
        return ExecutionResult(False, "crash", "the sandbox process was killed by the program")
    if report == b"PASS " + token.encode() and checked["returncode"] == 0 and not checked["timed_out"]:
        return ExecutionResult(True, "passed")
    if ended["timed_out"] or checked["timed_out"]:
        return ExecutionResult(False, "timeout", "wall-clock limit reached")
    try:
        outcome = json.loads(report)
        status, detail = outcome["status"], str(outcome["detail"])
    except (ValueError, KeyError, TypeError):
        return ExecutionResult(False, "harness_error", f"checker exited with code {checked['returncode']}")
    if status == "program_died":
        return _classify_exit(ended["returncode"], detail)
    return ExecutionResult(False, status if status in STATUSES else "exception", detail)


def _scrubbed_env(workdir: str) -> dict[str, str]:
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": workdir,
        "TMPDIR": workdir,
        "LANG": "C.UTF-8",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _read_available(fd: int) -> bytes:
    os.set_blocking(fd, False)  # a leftover writer must not block us
    chunks, size = [], 0
    while size < _RESULT_CAP:
        try:
            chunk = os.read(fd, _RESULT_CAP - size)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _first_message(data: bytes):
    """The first framed message in `data`, decoded, or None."""
    if len(data) < 4:
        return None
    (size,) = struct.unpack(">I", data[:4])
    try:
        return _wire.decode(data[4 : 4 + size].decode("utf-8"))
    except (_wire.WireError, UnicodeDecodeError):
        return None


def _classify_untested(report: bytes, ended: dict | None) -> ExecutionResult:
    if ended is None:
        return ExecutionResult(False, "crash", "the sandbox process was killed by the program")
    if ended["timed_out"]:
        return ExecutionResult(False, "timeout", "wall-clock limit reached")
    message = _first_message(report)
    if message == ["completed"] and ended["returncode"] == 0:
        return ExecutionResult(True, "passed")
    if isinstance(message, list) and len(message) == 3 and message[0] == "error" and message[1] in STATUSES:
        return ExecutionResult(False, message[1], str(message[2]))
    return _classify_exit(ended["returncode"], "the program ended without reporting completion")


def _classify_exit(returncode: int, detail: str) -> ExecutionResult:
    """Why a program process ended without a result of its own."""
    signum = _signal_of(returncode)
    if signum == signal.SIGXCPU:
        return ExecutionResult(False, "timeout", "CPU-time limit reached")
    if signum == signal.SIGXFSZ:
        return ExecutionResult(False, "output_limit", "file-size limit reached")
    if signum is not None:
        return ExecutionResult(False, "crash", f"killed by {signal.Signals(signum).name}")
    return ExecutionResult(False, "exited_early", f"exited with code {returncode}: {detail}")


def _signal_of(returncode: int) -> int | None:
    """The signal that ended the program; wrappers report it as 128 + signal."""
    if returncode < 0:
        return -returncode
    if returncode > 128 and returncode - 128 in signal.valid_signals():
        return returncode - 128
    return None


def _remove_tree(path: str) -> None:
    def make_writable_and_retry(function, target, _):
        parent = os.path.dirname(target)
        os.chmod(parent, os.stat(parent).st_mode | stat.S_IRWXU)
        if os.path.isdir(target) and not os.path.islink(target):
            os.chmod(target, stat.S_IRWXU)
        function(target)

    shutil.rmtree(path, onerror=make_writable_and_retry)
