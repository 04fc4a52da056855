"""Where a sweep's runs execute: here one after another, N at a time on this machine
(`--parallel N`), or as tasks of a Ray cluster (`--ray ADDRESS`, `local` starting one
here). A run is one `lm-eval-noise run` process (runner.py builds its arguments); an
executor decides only where and when it starts and with which devices, and hands back
what happened (an Attempt). The harness's output goes to the run's log.txt; the run's
folder must be one the executing host sees at the same path (one machine, or a shared
file system on a cluster).

Scheduling is not ours: threads of the standard library here, Ray's resource requests on
a cluster (a run asks for the GPUs it needs, so Ray places it and sets
CUDA_VISIBLE_DEVICES).
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ...errors import InputError, extra_requirements

HARNESS = ("-m", "lm_eval_noise", "run")  # after the executing host's own interpreter
# Settings of the driver's environment that a Ray task carries to a node of its own.
FORWARDED = ("HF_", "HUGGING_FACE_", "TRANSFORMERS_", "TOKENIZERS_", "OMP_", "MKL_", "VLLM_", "LM_EVAL_NOISE_")


@dataclass(frozen=True)
class Attempt:
    """What became of one run's harness process."""

    code: int  # its exit code
    started: str  # ISO 8601 with the UTC offset
    finished: str
    host: str  # where it ran
    seconds: float  # how long it ran
    requests_after: float | None  # seconds until the harness started its requests (loading done); None: never


# lm_eval's progress bar as requests start ("Running generate_until requests"): the end of loading.
REQUESTS_START = re.compile(rb"Running \w+ requests")


def now() -> str:
    """This moment in ISO 8601, with its UTC offset."""
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


_LIVE: set[subprocess.Popen] = set()  # the harness processes running now, stopped on an interrupt
_LIVE_LOCK = threading.Lock()


def stop_live_runs() -> None:
    """Stop every harness process this process started and is still waiting for."""
    with _LIVE_LOCK:
        processes = list(_LIVE)
    for process in processes:
        process.terminate()


def run_logged(command: list[str], log: Path, echo: bool, env: dict | None = None, cwd: str | None = None,
               on_output=None) -> int:
    """Run `command`, copying its output to `log` as it comes (and to stderr when `echo`;
    each piece to `on_output` when given)."""
    with log.open("wb") as sink:
        # Unbuffered child: a run's log shows what it is doing while it does it.
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=cwd,
                                   env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"})
        with _LIVE_LOCK:
            _LIVE.add(process)

        def pump():
            for chunk in iter(lambda: process.stdout.read1(65536), b""):
                sink.write(chunk)
                sink.flush()
                if on_output is not None:
                    on_output(chunk)
                if echo:
                    sys.stderr.buffer.write(chunk)
                    sys.stderr.flush()

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            code = process.wait()
        finally:
            with _LIVE_LOCK:
                _LIVE.discard(process)
        reader.join()
    return code


def attempt(arguments: list[str], run_dir: str, echo: bool, env: dict | None = None,
            cwd: str | None = None) -> Attempt:
    """One run on the host that calls this: its folder made afresh (a partial run starts
    again), then `lm-eval-noise run ARGUMENTS` with this host's interpreter."""
    folder = Path(run_dir)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    started, clock, requests_after, tail = now(), time.monotonic(), [], [b""]

    def watch(chunk: bytes) -> None:
        if not requests_after and REQUESTS_START.search(tail[0] + chunk):  # the marker may span two pieces
            requests_after.append(time.monotonic() - clock)
        tail[0] = chunk[-64:]

    cwd = cwd if cwd and os.path.isdir(cwd) else None  # relative model paths resolve as in the sweep's folder
    code = run_logged([sys.executable, *HARNESS, *arguments], folder / "log.txt", echo, env, cwd, watch)
    return Attempt(code, started, now(), socket.gethostname(), time.monotonic() - clock,
                   requests_after[0] if requests_after else None)


class Here:
    """`--parallel N` (1: one after another, the harness's output echoed). N > 1 on a
    machine with GPUs: each run gets GPUs of its own (`gpus_per_run`, through
    CUDA_VISIBLE_DEVICES), so N is at most the GPUs over gpus_per_run; on a CPU each
    run gets cores of its own (of those this process may use): as many threads (at most
    OMP_NUM_THREADS where the user set it) and, for vLLM's CPU build, which binds its
    threads itself, those cores (VLLM_CPU_OMP_THREADS_BIND, one list per
    tensor-parallel rank)."""

    def __init__(self, parallel: int, gpus_per_run: int = 1, echo: bool = True):
        if parallel < 1:
            raise InputError(f"--parallel {parallel}: valid: an integer >= 1")
        self.parallel = self.slots = parallel  # slots: runs at once
        self.echo = echo and parallel == 1  # N runs' output at once would be unreadable: their logs hold it
        self._env: queue.Queue[dict] = queue.Queue()
        gpus = _visible_gpus() if parallel > 1 else []
        if gpus:
            if parallel * gpus_per_run > len(gpus):
                raise InputError(f"--parallel {parallel}: this machine shows {len(gpus)} GPU(s) and a run takes "
                                 f"{gpus_per_run}: valid: at most {len(gpus) // gpus_per_run}")
            for slot in range(parallel):
                share = gpus[slot * gpus_per_run:(slot + 1) * gpus_per_run]
                self._env.put({"CUDA_VISIBLE_DEVICES": ",".join(share)})
        elif parallel == 1:
            self._env.put({})
        else:
            for share in _core_shares(parallel, gpus_per_run):
                self._env.put(share)
        self._pool = ThreadPoolExecutor(parallel, thread_name_prefix="sweep-run")

    def describe(self) -> str:
        return "one run at a time" if self.parallel == 1 else f"{self.parallel} runs at a time on this machine"

    def submit(self, arguments: list[str], run_dir: Path, quiet: bool = False) -> Future:
        def start() -> Attempt:
            env = self._env.get()  # a free share of the devices
            try:
                return attempt(arguments, str(run_dir), self.echo and not quiet, env, os.getcwd())
            finally:
                self._env.put(env)

        return self._pool.submit(start)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def interrupt(self) -> None:
        """Stop the runs under way now (an interrupted sweep must not wait hours for them)."""
        stop_live_runs()
        self._pool.shutdown(wait=True, cancel_futures=True)


def _core_shares(parallel: int, ranks: int) -> list[dict]:
    """Each of `parallel` runs' environment on a CPU: its own cores, split over `ranks`
    tensor-parallel ranks for vLLM's binding."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    each = len(cores) // parallel
    if each < ranks:
        raise InputError(f"--parallel {parallel}: this process may use {len(cores)} cores and a run needs at least "
                         f"{ranks}: valid: at most {max(1, len(cores) // ranks)}")
    asked = os.environ.get("OMP_NUM_THREADS", "")
    threads = min(each, int(asked)) if asked.isdigit() and int(asked) > 0 else each
    shares = []
    for slot in range(parallel):
        mine = [str(core) for core in cores[slot * each:(slot + 1) * each]]
        per_rank = len(mine) // ranks
        bind = "|".join(",".join(mine[rank * per_rank:(rank + 1) * per_rank]) for rank in range(ranks))
        shares.append({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                       "VLLM_CPU_OMP_THREADS_BIND": bind})
    return shares


class OnRay:
    """`--ray ADDRESS`: each run a Ray task asking for `gpus_per_run` GPUs where the cluster
    has GPUs, else `cpus_per_run` cores; `local` starts a cluster on this machine. Every
    node needs this package installed and the sweep's folder at the same path."""

    def __init__(self, address: str, gpus_per_run: int = 1, cpus_per_run: int = 1):
        try:
            import ray
        except ImportError:
            wanted = " ".join(f"'{r}'" for r in extra_requirements("ray")) or "ray"
            raise InputError(f"--ray needs Ray: pip install {wanted}") from None
        self._ray = ray
        _check_reachable(address)
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise InputError(f"--ray {address}: {_first_line(error)}: valid: a running cluster's address (`ray start "
                             "--head` prints it), `auto` (the cluster this machine belongs to) or `local`") from None
        self.gpus = int(ray.cluster_resources().get("GPU", 0))
        cpus = int(ray.cluster_resources().get("CPU", 0))
        if self.gpus and gpus_per_run > self.gpus:
            ray.shutdown()
            raise InputError(f"--ray {address}: a run takes {gpus_per_run} GPUs and the cluster has {self.gpus}")
        if not self.gpus and not 1 <= cpus_per_run <= cpus:
            ray.shutdown()  # more than the cluster has: no run would ever start
            raise InputError(f"--cpus-per-run {cpus_per_run}: the cluster at {address} has {cpus} CPUs and no GPUs: "
                             f"valid: 1 to {cpus}")
        self.request = {"num_gpus": gpus_per_run} if self.gpus else {"num_cpus": cpus_per_run}
        self.slots = self.gpus // gpus_per_run if self.gpus else cpus // cpus_per_run  # runs at once
        self._where = f"Ray cluster {address} ({cpus} CPUs, {self.gpus} GPUs; a run asks for {self.request})"
        self._task = ray.remote(**self.request, max_retries=0)(attempt)

    def describe(self) -> str:
        return self._where

    def submit(self, arguments: list[str], run_dir: Path, quiet: bool = False) -> Future:  # never echoes
        # The worker inherits no driver environment on a remote node: the offline and
        # thread settings the user gave the sweep travel with the task.
        env = {key: value for key, value in os.environ.items() if key.startswith(FORWARDED)}
        return self._task.remote(arguments, str(run_dir), False, env, os.getcwd()).future()

    def close(self) -> None:
        self._ray.shutdown()

    def interrupt(self) -> None:
        self._ray.shutdown()  # a local cluster's workers, and their runs, go with it; a remote one cancels them


def _check_reachable(address: str) -> None:
    """A HOST:PORT that nothing answers at, refused in seconds (Ray itself retries for
    minutes before it gives up)."""
    host, colon, port = address.removeprefix("ray://").rpartition(":")
    if not colon or not port.isdigit():
        return  # `local`, `auto`: Ray finds them or says why
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as error:
        raise InputError(f"--ray {address}: nothing answers there ({error}): valid: a running cluster's address "
                         "(`ray start --head` prints it), `auto` or `local`") from None


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def describe_failure(error: BaseException) -> str:
    """An executor's error as one line: a Ray task's own exception (not Ray's traceback
    around it, in terminal colours)."""
    cause = getattr(error, "cause", None) or error
    return re.sub(r"\x1b\[[0-9;]*m", "", f"{type(cause).__name__}: {_first_line(cause)}")


def _visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES names them (none on a CPU)."""
    import torch

    if not torch.cuda.is_available():
        return []
    named = os.environ.get("CUDA_VISIBLE_DEVICES")
    if named:
        return [name.strip() for name in named.split(",") if name.strip()][:torch.cuda.device_count()]
    return [str(index) for index in range(torch.cuda.device_count())]


def executor(parallel: int = 1, ray: str | None = None, gpus_per_run: int = 1, cpus_per_run: int | None = None,
             echo: bool = True):
    """The executor the command line asked for."""
    if ray is not None:
        if parallel != 1:
            raise InputError("--parallel and --ray: give one (on a Ray cluster the cluster's resources set "
                             "how many runs go at once)")
        return OnRay(ray, gpus_per_run, 1 if cpus_per_run is None else cpus_per_run)
    if cpus_per_run is not None:
        raise InputError("--cpus-per-run: a request to a Ray cluster: give it with --ray")
    return Here(parallel, gpus_per_run, echo)
