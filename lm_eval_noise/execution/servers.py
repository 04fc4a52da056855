"""The host's side of the fork servers (`_forkserver.py`): a factory per role and
isolation level, and the servers it forks for each worker.

A server's interpreter is started once per host process, as a factory: it prepares
what every server of its role shares (the program server's preloaded modules, ~0.15 s),
then forks a server for each worker on request, in milliseconds. The factory never
sees a program or its data; each server it forks sets itself up from the worker's
configuration (at the `namespaces` level: namespaces, a read-only view, its uid), in
its own session, and exits when its control socket closes.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

PACKAGE_DIR = str(Path(__file__).resolve().parent)
SERVER = str(Path(PACKAGE_DIR) / "_forkserver.py")
_START_SECONDS = 60.0
_EXIT_SECONDS = 5.0
_STDERR_KEPT = 2000  # bytes of a server's stderr kept for the report of its death


class HarnessError(RuntimeError):
    """The sandbox machinery itself failed."""


class _Connection:
    """A control socket to a server or factory: requests out (a 4-byte length sent
    with descriptors, then JSON), JSON lines back, each optionally followed by raw bytes."""

    def __init__(self, control: socket.socket, name: str):
        self.control, self.name, self.buffer = control, name, b""

    def submit(self, request: dict, fds: list[int]) -> None:
        body = json.dumps(request).encode("utf-8")
        socket.send_fds(self.control, [struct.pack(">I", len(body))], fds)
        self.control.sendall(body)

    def reply(self, deadline: float) -> dict:
        """The next JSON line (with the program's output, as bytes, under "output"), by
        `deadline` at the latest (one deadline, however the bytes trickle in)."""
        while b"\n" not in self.buffer:
            self._receive(deadline)
        line, _, self.buffer = self.buffer.partition(b"\n")
        reply = json.loads(line)
        if "output_size" in reply:
            while len(self.buffer) < reply["output_size"]:
                self._receive(deadline)
            reply["output"], self.buffer = self.buffer[: reply["output_size"]], self.buffer[reply["output_size"]:]
        return reply

    def _receive(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([self.control], [], [], remaining)[0]:
            raise HarnessError(f"a {self.name} did not answer by the deadline")
        chunk = self.control.recv(65536)
        if not chunk:
            raise HarnessError(f"a {self.name} died: {self.died()}")
        self.buffer += chunk

    def died(self) -> str:
        return "no message"


class _StderrTail:
    """Drains a server's stderr at once (a pipe nobody reads would block it once full),
    keeping the last bytes for the report of its death."""

    def __init__(self, stream):
        self.tail = b""
        self.reader = threading.Thread(target=self._drain, args=(stream,), daemon=True)
        self.reader.start()

    def _drain(self, stream) -> None:
        with stream:
            while chunk := stream.read1(65536):
                self.tail = (self.tail + chunk)[-_STDERR_KEPT:]

    def text(self) -> str:
        self.reader.join(timeout=_EXIT_SECONDS)
        return self.tail.decode("utf-8", "replace").strip() or "no message"


class _Factory(_Connection):
    """A bare interpreter that prepares one role's servers once and forks them."""

    def __init__(self, role: str, level: str, sys_path: list[str]):
        ours, theirs = socket.socketpair()
        script = os.open(SERVER, os.O_RDONLY)
        # No PYTHON* variables: -I ignores them; -B writes no bytecode. No host path or
        # setting on the command line, which every program inherits.
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1",
               "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-I", "-S", "-B", f"/dev/fd/{script}", "lm-eval-noise-fork-server",
                 str(theirs.fileno())], cwd="/", env=env,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                pass_fds=(theirs.fileno(), script), start_new_session=True,
            )
        finally:
            os.close(script)
            theirs.close()
        super().__init__(ours, f"{role} server factory")
        self.lock = threading.Lock()
        self.stderr = _StderrTail(self.process.stderr)
        config = {"factory": True, "role": role, "level": level, "sys_path": sys_path, "package_dir": PACKAGE_DIR}
        self.control.sendall(json.dumps(config).encode() + b"\n")
        started = self.reply(time.monotonic() + _START_SECONDS)
        if started.get("ready") is not True:
            self.close()
            raise HarnessError(f"the {self.name} did not start: {started.get('error')}")

    def died(self) -> str:
        self.close()
        return self.stderr.text()

    def spawn(self, config: dict, control: socket.socket, stderr: int, held: list[int] = ()) -> int:
        """Fork a server for `config`, with `control`, `stderr` and `held`; its pid."""
        with self.lock:
            self.submit(config, [control.fileno(), stderr, *held])
            return self.reply(time.monotonic() + _START_SECONDS)["pid"]

    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        self.control.close()  # a healthy factory exits when its socket closes
        try:
            self.process.wait(timeout=_EXIT_SECONDS)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


_factories: dict[tuple, _Factory] = {}
_factories_lock = threading.Lock()


def _factory(role: str, level: str, sys_path: list[str]) -> _Factory:
    """This process's factory for `role` at `level` (a forked host process starts its own)."""
    key = (os.getpid(), role, level, tuple(sys_path))
    with _factories_lock:
        factory = _factories.get(key)
        if factory is None or not factory.alive():
            if not _factories:
                atexit.register(_close_factories)
            factory = _factories[key] = _Factory(role, level, sys_path)
        return factory


def _close_factories() -> None:
    with _factories_lock:
        for (pid, *_), factory in list(_factories.items()):
            if pid == os.getpid():
                factory.close()
        _factories.clear()


def factory_pids() -> set[int]:
    """The factories this process runs: they live as long as it does, by design."""
    with _factories_lock:
        return {factory.process.pid for factory in _factories.values() if factory.alive()}


class ForkServer(_Connection):
    """A fork server for one worker, forked by its role's factory."""

    def __init__(self, config: dict, held: list[int] = ()):
        """`held`: descriptors the server keeps open for its whole life (the worker's
        leases: they stay taken while it, or a program of it, may still run)."""
        ours, theirs = socket.socketpair()
        stderr_read, stderr_write = os.pipe()
        try:
            self.pid = _factory(config["role"], config["level"], config["sys_path"]).spawn(
                {**config, "package_dir": PACKAGE_DIR}, theirs, stderr_write, held)
        except BaseException:
            ours.close()
            os.close(stderr_read)
            raise
        finally:
            theirs.close()
            os.close(stderr_write)
        super().__init__(ours, f"{config['role']} fork server")
        # Held from the start: the server is not our child, and its pid could be reused
        # once it has gone.
        try:
            self.pidfd = os.pidfd_open(self.pid)
        except ProcessLookupError:  # gone already: its reply below says why
            self.pidfd = None
        self.stderr = _StderrTail(open(stderr_read, "rb"))  # noqa: SIM115 - the drain thread closes it
        started = self.reply(time.monotonic() + _START_SECONDS)
        if started.get("ready") is not True:
            self.stop()
            raise HarnessError(f"the {self.name} did not start: {started.get('error')}")
        self.seccomp = bool(started.get("seccomp"))

    def died(self) -> str:
        self.stop()
        return self.stderr.text()

    def stop(self) -> None:
        """A closed socket makes a healthy server exit; SIGKILL to its session for one
        that does not (or has helpers left)."""
        self.control.close()
        if self.pidfd is None:
            return
        exited = select.select([self.pidfd], [], [], _EXIT_SECONDS)[0]
        if not exited:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
            select.select([self.pidfd], [], [], _EXIT_SECONDS)
        os.close(self.pidfd)
        self.pidfd = None
