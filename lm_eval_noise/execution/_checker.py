"""Trusted test runner for ONE program, in a process forked for it by the checker zygote,
outside the program's sandbox.

It runs the task's own test code (trusted: the dataset's prompt and tests) and calls
the candidate in the sandboxed program process over two pipes, receiving plain values
only. When `check(candidate)` returns, it writes the secret token to its result pipe.
The program runs in another process, in its own namespaces where the sandbox provides
them, so it cannot reach the token, this process's memory or the result channel.

Standard library only.
"""

import json
import os

import _wire


class CandidateRaised(Exception):
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


def _candidate(call_fd, reply_fd):
    def candidate(*args, **kwargs):
        _wire.send(call_fd, _wire.encode(["call", tuple(args), dict(kwargs)]))
        reply = _reply(reply_fd)
        if reply[0] == "ok":
            return reply[1]
        raise CandidateRaised(reply[1], reply[2])

    return candidate


def _outcome(status, detail=""):
    return {"status": status, "detail": str(detail)[:2000]}


def _run(tests, entry_point, call_fd, reply_fd):
    """None when check() returned, else an outcome dict."""
    try:
        first = _reply(reply_fd)
    except ProgramDied as error:
        return _outcome("program_died", error)
    if first[0] == "error":
        return _outcome(first[1], first[2])
    namespace = {"__name__": "__checker__"}
    try:
        exec(compile(tests, "tests.py", "exec"), namespace)
        candidate = _candidate(call_fd, reply_fd)
        # Some tests call the entry point by name (HumanEval/33 compares against it).
        namespace[entry_point] = candidate
        namespace["check"](candidate)
    except CandidateRaised as error:
        return _outcome(error.status, error)
    except ProgramDied as error:
        return _outcome("program_died", error)
    except AssertionError as error:
        return _outcome("failed_assertion", f"AssertionError: {error}")
    except _wire.WireError as error:
        return _outcome("harness_error", f"a test argument cannot be sent: {error}")
    except Exception as error:  # noqa: BLE001 - the tests failed on what the candidate returned
        return _outcome("exception", f"{type(error).__name__}: {error}")
    return None


def run_checker(tests, entry_point, call_fd, reply_fd, result_fd, token):
    """Never returns: exits the (forked) process after writing the outcome."""
    outcome = _run(tests, entry_point, call_fd, reply_fd)
    if outcome is None:
        os.write(result_fd, b"PASS " + token.encode("ascii"))
    else:
        os.write(result_fd, json.dumps(outcome).encode("utf-8"))
    os._exit(0)
