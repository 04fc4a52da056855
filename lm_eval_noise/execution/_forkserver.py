"""A fork server: started once per worker, it forks one process per program.

    python -I _forkserver.py CONFIG_JSON

Starting an interpreter costs ~50 ms; a fork costs a few. The `program` server forks
the untrusted runner (_untrusted.py); at the `namespaces` level it first moves itself
into namespaces of its own with a minimal read-only view of the machine, and confines
every child before the program runs (_confine.py). The `checker` server runs outside
any sandbox and forks the trusted test runner (_checker.py).

Each request arrives on the control socket as JSON with its pipe ends attached
(SCM_RIGHTS); the server forks, kills the child at the deadline, and replies with one
JSON line: {"returncode", "timed_out", "cpu_seconds"}. At start it sends {"ready": true}
or {"error": "..."}. It exits when the control socket closes.

Standard library only: this runs in a bare interpreter, not in the package.
"""

import gc
import json
import os
import resource
import select
import signal
import socket
import sys

_CONFIG = json.loads(sys.argv[1])
sys.path[:] = [os.path.dirname(os.path.abspath(__file__)), *_CONFIG["sys_path"]]
import _tree  # noqa: E402

_MAX_REQUEST = 1 << 25


def _set_limits(rlimits):
    for name, value in rlimits.items():
        kind = getattr(resource, name)
        hard = resource.getrlimit(kind)[1]
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(kind, (value, value))


def _wire_fds(inputs, output=None):
    """Put the request's descriptors at 3, 4, ... (and output on 1 and 2), close the rest."""
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    if output is not None:
        os.dup2(output, 1)
        os.dup2(output, 2)
    staged = [os.dup(fd) for fd in inputs]  # above every fd we are about to overwrite
    for number, fd in enumerate(staged, start=3):
        os.dup2(fd, number, inheritable=False)
    os.closerange(3 + len(staged), 1 << 16)
    return list(range(3, 3 + len(staged)))


class ProgramServer:
    def __init__(self, config):
        self.config = config
        self.namespaces = config["level"] == "namespaces"
        import _untrusted  # before the package directory leaves the view

        self.untrusted = _untrusted
        if self.namespaces:
            import _confine

            self.confine = _confine
            self.seccomp = _confine.load_seccomp()
            _confine.enter_server_namespaces()
            self.pid_namespace = os.open("/proc/self/ns/pid", os.O_RDONLY)  # the new one
            _confine.pivot_into_view(config["root"], config["read_only"], config["hidden"])
        sys.path.pop(0)  # the package directory: not in the program's view

    def fork(self, request, fds):
        """(pid, workdir or None) of a child running the request's program."""
        workdir = None
        code = self.untrusted.compile_source(request["source"])
        self.failure_read, failure_write = os.pipe()
        fds = [*fds, failure_write]
        if self.namespaces:
            pid = self.confine.fork_in_new_pid_namespace(self.pid_namespace)
        else:
            workdir = os.path.join(self.config["root"], f"program-{request['serial']}")
            os.mkdir(workdir, 0o700)
            pid = os.fork()
        if pid == 0:
            try:
                self._child(request, code, fds, workdir)
            finally:
                os._exit(70)
        os.close(failure_write)
        return pid, workdir

    def _child(self, request, code, fds, workdir):
        """Confine, then run the program. A failure before the program runs is written to
        the failure pipe, which is closed before any untrusted code runs."""
        call_read, reply_write, output, *cgroup_fds, failure = fds
        try:
            for fd in cgroup_fds:
                os.write(fd, b"0\n")  # joins this worker's cgroup: "0" is the writing process
            call_read, reply_write, failure = _wire_fds([call_read, reply_write, failure], output)
            _set_limits(request["rlimits"])
            if self.namespaces:
                self.confine.confine_program(
                    tmp_mb=self.config["tmp_mb"], tmp_inodes=self.config["tmp_inodes"],
                    uid=self.config["uid"], seccomp=self.seccomp,
                )
                home = "/tmp"
            else:
                os.setsid()  # its own process group, killed as a whole
                os.chdir(workdir)
                home = workdir
            os.environ["HOME"] = os.environ["TMPDIR"] = home
        except BaseException as error:  # noqa: BLE001 - never run a program we failed to confine
            os.write(failure, f"{type(error).__name__}: {error}".encode()[:2000])
            raise
        os.close(failure)
        self.untrusted.run_untrusted(code, request["entry_point"], call_read, reply_write)

    def after(self, pid, workdir, reply):
        os.set_blocking(self.failure_read, False)
        try:
            failure = os.read(self.failure_read, 4096)
        except BlockingIOError:
            failure = b""
        os.close(self.failure_read)
        if failure:
            reply["harness_error"] = "the program could not be confined: " + failure.decode("utf-8", "replace")
        if workdir is not None:
            _kill_group(pid)
            _tree.remove_tree(workdir)


class CheckerServer:
    def __init__(self, config):
        import _checker

        self.checker = _checker
        self.compiled_tests = {}  # one task's tests serve all its programs

    def fork(self, request, fds):
        syntax = self.checker.syntax_error(request["source"])
        tests = self._compile_tests(request["tests"])
        pid = os.fork()
        if pid == 0:
            try:
                os.setsid()
                call_write, reply_read, result_write = _wire_fds(fds)
                _set_limits(request["rlimits"])
                self.checker.run_checker(
                    syntax, tests, request["entry_point"],
                    call_write, reply_read, result_write, request["token"],
                )
            finally:
                os._exit(70)
        return pid, None

    def _compile_tests(self, text):
        """The code object, or the error as text (the checker reports a harness_error)."""
        if text not in self.compiled_tests:
            if len(self.compiled_tests) > 256:
                self.compiled_tests.clear()
            try:
                self.compiled_tests[text] = compile(text, "tests.py", "exec")
            except Exception as error:  # noqa: BLE001 - broken task data, not a broken server
                return f"the tests do not compile: {type(error).__name__}: {error}"
        return self.compiled_tests[text]

    def after(self, pid, workdir, reply):
        _kill_group(pid)


def _wait(pid, timeout):
    """(wait status, timed out, CPU seconds) of the child, killed at the deadline."""
    pidfd = os.pidfd_open(pid)
    try:
        timed_out = not select.select([pidfd], [], [], timeout)[0]  # readable once it exits
    finally:
        os.close(pidfd)
    if timed_out:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _, status, usage = os.wait4(pid, 0)
    return status, timed_out, usage.ru_utime + usage.ru_stime


def _kill_group(pgid):
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _returncode(status):
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def serve(server, control):
    while True:
        message, fds, _, _ = socket.recv_fds(control, _MAX_REQUEST, 16)
        if not message:
            return
        request = json.loads(message)
        pid, workdir = server.fork(request, fds)
        for fd in fds:
            os.close(fd)
        status, timed_out, cpu_seconds = _wait(pid, request["timeout"])
        reply = {"returncode": _returncode(status), "timed_out": timed_out, "cpu_seconds": cpu_seconds}
        server.after(pid, workdir, reply)
        control.sendall(json.dumps(reply).encode() + b"\n")


def main():
    config = _CONFIG
    control = socket.socket(fileno=config["control_fd"])
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    try:
        server = (ProgramServer if config["role"] == "program" else CheckerServer)(config)
    except BaseException as error:  # noqa: BLE001 - reported to the host, which decides
        control.sendall(json.dumps({"error": f"{type(error).__name__}: {error}"}).encode() + b"\n")
        return
    control.sendall(b'{"ready": true}\n')
    gc.freeze()  # children would otherwise copy every page the collector touches
    serve(server, control)


if __name__ == "__main__":
    main()
