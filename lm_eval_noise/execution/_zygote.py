"""A fork server: started once per worker, it forks one process per program.

    python -I _zygote.py program|checker CONTROL_FD

Starting an interpreter costs ~50 ms; a fork costs a few. The `program` zygote runs
inside the sandbox (bwrap/unshare) and forks the untrusted runner; the `checker`
zygote runs outside it and forks the trusted test runner. Each request arrives on
CONTROL_FD (a Unix socket) as JSON with its pipe ends attached (SCM_RIGHTS); the
zygote forks, enforces the deadline on the child's whole process group, removes any
process the child left behind, and replies {"returncode", "timed_out"}.

Standard library only: this runs in the sandboxed interpreter, not in the package.
"""

import json
import os
import resource
import signal
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _checker  # noqa: E402
import _untrusted  # noqa: E402

_MAX_REQUEST = 1 << 24
_MARKER = "LM_EVAL_NOISE_PROGRAM"


def _set_limits(limits):
    for name, value in limits.items():
        kind = getattr(resource, name)
        _, hard = resource.getrlimit(kind)
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(kind, (value, value))


def _child(role, request, fds):
    os.setsid()  # its own process group, killed as a whole at the deadline
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    if role == "program":
        call_read, reply_write, output = fds
        os.dup2(output, 1)
        os.dup2(output, 2)
        os.chdir(request["workdir"])
        os.environ["HOME"] = os.environ["TMPDIR"] = request["workdir"]
        _set_limits(request["rlimits"])
        _untrusted.run_untrusted(
            "solution.py", request["entry_point"], request["workdir"], call_read, reply_write
        )
    else:
        call_write, reply_read, result_write = fds
        _set_limits(request["rlimits"])
        _checker.run_checker(
            request["tests"], request["entry_point"], call_write, reply_read, result_write,
            request["token"],
        )


def _wait(pid, timeout):
    """(wait status, timed out) for the child, killing its process group at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status, False
        if time.monotonic() >= deadline:
            _kill_group(pid)
            _, status = os.waitpid(pid, 0)
            return status, True
        time.sleep(0.002)


def _kill_group(pgid):
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _remove_leftovers(owns_namespace):
    """Kill what the program left behind: in our own PID namespace, every process but
    init and us; otherwise every process carrying our marker (set in our environment
    at start, so every fork shows it in /proc/PID/environ), us excepted."""
    me = os.getpid()
    marker = f"{_MARKER}={os.environ[_MARKER]}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in (1, me):
            continue
        try:
            if owns_namespace or marker in open(f"/proc/{entry}/environ", "rb").read().split(b"\0"):
                os.kill(int(entry), signal.SIGKILL)
        except OSError:
            continue
    while True:  # reap any that were our children
        try:
            if os.waitpid(-1, os.WNOHANG) == (0, 0):
                break
        except ChildProcessError:
            break


def _returncode(status):
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def serve(role, control, owns_namespace):
    while True:
        message, fds, _, _ = socket.recv_fds(control, _MAX_REQUEST, 8)
        if not message:
            return
        request = json.loads(message)
        pid = os.fork()
        if pid == 0:
            control.close()
            try:
                _child(role, request, fds)
            finally:
                os._exit(70)
        for fd in fds:
            os.close(fd)
        status, timed_out = _wait(pid, request["timeout"])
        if role == "program":
            _remove_leftovers(owns_namespace)
        control.sendall(json.dumps({"returncode": _returncode(status), "timed_out": timed_out}).encode() + b"\n")


def main():
    role, control_fd, owns_namespace = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
    control = socket.socket(fileno=control_fd)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    serve(role, control, owns_namespace)


if __name__ == "__main__":
    main()
