"""Trusted test runner for ONE program, in a process forked for it by the checker fork
server, outside the program's sandbox.

Its server compiles the program's source itself (so a syntax error is known, not
claimed) and the tests. It runs the task's own test code (trusted: the dataset's prompt
and tests) and calls the candidate in the sandboxed program process over two pipes,
receiving plain values only (see _wire). When `check(candidate)` returns, it writes the
secret token to its result pipe. Every status it writes is its own: what the program
said goes, capped, into `detail` and can only ever explain a failure. A builtin
exception the candidate raised is raised again here as itself, as in one process.

Standard library only.
"""

import builtins
import json
import os
import warnings

import _wire

_MAX_DETAIL = 2000


class CandidateFailed(Exception):
    def __init__(self, status, detail):
        super().__init__(detail)
        self.status = status


class ProgramDied(Exception):
    """The program process ended (or broke the protocol) while the tests needed it."""


def _reply(reply_fd):
    try:
        message = _wire.receive(reply_fd)
        if message is None:
            raise ProgramDied("the program ended before its tests completed")
        return _wire.decode(message)
    except _wire.WireError as error:
        raise ProgramDied(f"the program broke the protocol: {error}") from None


def _program_text(reply):
    """The program's own words in a reply, as text."""
    return str(reply[1])[:_MAX_DETAIL] if isinstance(reply, list) and len(reply) in (2, 3, 4) else ""


def _raised(reply):
    """What the candidate raised, re-raised here: a builtin exception type as itself (so
    a test that expects, say, ValueError sees one), anything else as CandidateFailed."""
    text = _program_text(reply)
    name = reply[2] if len(reply) in (3, 4) else None
    kind = getattr(builtins, name, None) if isinstance(name, str) else None
    if isinstance(kind, type) and issubclass(kind, Exception) and kind.__module__ == "builtins":
        try:
            error = kind(*_arguments(reply)) if len(reply) == 4 else kind(text.partition(": ")[2])
        except Exception:  # noqa: BLE001 - a type that needs other arguments, or arguments it refuses
            return CandidateFailed("exception", text)
        error.raised_by_candidate = True
        return error
    return CandidateFailed("exception", text)


def _arguments(reply):
    """The raised exception's arguments (plain values, rebuilt by _wire), so KeyError('k')
    keeps args ('k',) and UnicodeDecodeError its five."""
    arguments = _wire.decode(reply[3]) if isinstance(reply[3], str) else None
    if not isinstance(arguments, list):
        raise TypeError("no arguments")
    return arguments


def _candidate(call_fd, reply_fd):
    def candidate(*args, **kwargs):
        _wire.send(call_fd, _wire.encode([list(args), kwargs]))
        reply = _reply(reply_fd)
        kind = reply[0] if isinstance(reply, list) and reply else None
        if kind == "ok" and len(reply) == 2 and isinstance(reply[1], str):
            try:
                return _wire.decode(reply[1])
            except _wire.WireError as error:
                raise CandidateFailed("untrusted_return", str(error)) from None
        if kind == "unsendable":
            raise CandidateFailed("untrusted_return", _program_text(reply))
        if kind == "raised":
            raise _raised(reply)
        raise ProgramDied("the program broke the protocol")

    return candidate


def _outcome(status, detail=""):
    return {"status": status, "detail": str(detail)[:_MAX_DETAIL]}


def syntax_error(source):
    """Why the source does not compile, or None. Parsing only: nothing of it runs.
    Called in the checker's forked child, under its limits and deadline."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compile(source, "solution.py", "exec")
    except (SyntaxError, ValueError) as error:  # ValueError: null bytes in the source
        return f"{type(error).__name__}: {error}"
    except (RecursionError, MemoryError) as error:  # too deeply nested for the compiler
        return f"{type(error).__name__} while compiling"
    return None


def _run(syntax, tests, entry_point, call_fd, reply_fd):
    """None when check() returned, else an outcome dict."""
    if syntax is not None:
        return _outcome("syntax_error", syntax)
    if isinstance(tests, str):
        return _outcome("harness_error", tests)
    try:
        first = _reply(reply_fd)
    except ProgramDied as error:
        return _outcome("program_died", error)
    if first != ["ready"]:
        return _outcome("exception", _program_text(first))
    namespace = {}
    try:
        exec(tests, namespace)
        candidate = _candidate(call_fd, reply_fd)
        # Some tests call the entry point by name (HumanEval/33 compares against it).
        namespace[entry_point] = candidate
        namespace["check"](candidate)
    except CandidateFailed as error:
        return _outcome(error.status, error)
    except ProgramDied as error:
        return _outcome("program_died", error)
    except _wire.WireError as error:
        return _outcome("harness_error", f"a test argument cannot be sent: {error}")
    except Exception as error:  # noqa: BLE001 - the tests failed, or the candidate raised
        detail = f"{type(error).__name__}: {error}"
        if isinstance(error, AssertionError) and not getattr(error, "raised_by_candidate", False):
            return _outcome("failed_assertion", detail)
        return _outcome("exception", detail)
    return None


def run_checker(source, tests, entry_point, call_fd, reply_fd, result_fd, token):
    """Never returns: exits the (forked) process after writing the outcome. `tests` is
    the compiled test code."""
    outcome = _run(syntax_error(source), tests, entry_point, call_fd, reply_fd)
    if outcome is None:
        os.write(result_fd, b"PASS " + token.encode("ascii"))
    else:
        os.write(result_fd, json.dumps(outcome).encode("utf-8"))
    os._exit(0)
