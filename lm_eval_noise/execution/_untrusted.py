"""Runs ONE untrusted program, in a process forked for it inside the sandbox (_zygote.py).

It sets resource limits, installs an audit hook (no process creation, no network, no
writes outside its directory, no signals to other processes) and runs the program.
With an entry point it then serves calls from the checker over two pipes: the
checker, a separate process this one cannot see, runs the tests and decides the pass.
Without one it reports only that the program ran to completion.

Standard library only: this runs in the sandboxed interpreter, not in the package.
"""

import builtins
import errno
import os
import sys

import _wire

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_PROCESS_EVENTS = frozenset({
    "os.fork", "os.forkpty", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
    "subprocess.Popen", "pty.spawn",
})
_NETWORK_EVENTS = frozenset({"socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg"})
_MAX_DETAIL = 2000
# Bound now, before the program can monkeypatch os.
_read, _write, _exit = os.read, os.write, os._exit


class SandboxViolation(Exception):
    """An operation the sandbox forbids."""


def _install_guard(sandbox_dir):
    sandbox = os.path.realpath(sandbox_dir)
    own_pid = os.getpid()

    def inside(path):
        if isinstance(path, int):
            return True  # an already-open descriptor
        resolved = os.path.realpath(os.fsdecode(path))
        return resolved == sandbox or resolved.startswith(sandbox + os.sep) or resolved == os.devnull

    def guard(event, args):
        if event == "open":
            path, mode, flags = args
            writes = (flags or 0) & _WRITE_FLAGS or any(c in (mode or "") for c in "wax+")
            if writes and not inside(path):
                raise SandboxViolation(f"write outside the sandbox: {path}")
        elif event in _PROCESS_EVENTS:
            raise SandboxViolation(f"process creation ({event})")
        elif event in _NETWORK_EVENTS:
            raise SandboxViolation(f"network access ({event})")
        elif event == "os.kill" and args[0] != own_pid or event == "os.killpg":
            raise SandboxViolation(f"signal to another process ({event})")

    sys.addaudithook(guard)


def outcome_of(error):
    """(status, detail) for an exception raised by untrusted code."""
    if isinstance(error, SandboxViolation):
        status = "blocked"
    elif isinstance(error, AssertionError):
        status = "failed_assertion"
    elif isinstance(error, MemoryError):
        status = "memory_limit"
    elif isinstance(error, RecursionError):
        status = "recursion_limit"
    elif isinstance(error, SystemExit):
        status = "exited_early"
    elif isinstance(error, OSError) and error.errno == errno.EFBIG:
        status = "output_limit"
    else:
        status = "exception"
    return status, f"{type(error).__name__}: {error}"[:_MAX_DETAIL]


def _load(source, entry_point):
    """The entry point function (or True without one), or an ("error", status, detail) reply."""
    try:
        code = compile(source, "solution.py", "exec")
    except (SyntaxError, ValueError) as error:
        return ["error", "syntax_error", f"{type(error).__name__}: {error}"[:_MAX_DETAIL]]
    namespace = {"__name__": "__sandbox__", "__builtins__": builtins}
    try:
        exec(code, namespace)
    except BaseException as error:  # noqa: BLE001 - every failure is an outcome
        return ["error", *outcome_of(error)]
    if not entry_point:
        return True
    function = namespace.get(entry_point)
    if not callable(function):
        return ["error", "exception", f"NameError: entry point {entry_point!r} is not defined"]
    return function


def _serve(function, in_fd, out_fd):
    while True:
        message = _wire.receive(in_fd, _read)
        if message is None:
            return
        _, args, kwargs = _wire.decode(message)
        try:
            reply = _wire.encode(["ok", function(*args, **kwargs)])
        except _wire.WireError as error:
            reply = _wire.encode(["raised", "untrusted_return", str(error)])
        except BaseException as error:  # noqa: BLE001 - reported to the checker
            reply = _wire.encode(["raised", *outcome_of(error)])
        _wire.send(out_fd, reply, _write)


def _flush_output():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001 - the program may have replaced or closed them
            pass


def run_untrusted(solution, entry_point, sandbox_dir, in_fd, out_fd):
    """Never returns: exits the (forked) process when the program is done."""
    with open(solution, encoding="utf-8") as handle:
        source = handle.read()
    _install_guard(sandbox_dir)
    loaded = _load(source, entry_point)
    _flush_output()
    if isinstance(loaded, list):
        _wire.send(out_fd, _wire.encode(loaded), _write)
        _exit(1)
    _wire.send(out_fd, _wire.encode(["ready" if entry_point else "completed"]), _write)
    if entry_point:
        _serve(loaded, in_fd, out_fd)
        _flush_output()
    _exit(0)  # skip atexit handlers and finalizers the program may have set
