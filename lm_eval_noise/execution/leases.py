"""Host-wide leases for sandbox slots: their memory, and the uid their programs run as.

Every evaluation on the host (threads, tasks and lm_eval processes alike) takes its
leases from one directory. A lease is an exclusive `flock` on a file there; the kernel
drops it when the holder's descriptor closes, however the holder ends, so a lease never
outlives its evaluation and nothing has to be cleaned up.

- Memory: the machine's memory (its own cgroup's limit where lower), less a quarter
  left to the evaluating processes themselves, is cut into 64 MiB units. A slot opens
  only once it holds the units its limits allow its programs to use, so the limits of
  all the slots on the host, of every evaluation, sum to at most that budget: any
  number of attackers at once cannot take the host's memory, and one evaluation's
  programs never run short because of another's (a slot waits instead).
- uids: a root host runs each slot's programs as a uid of its own. The kernel counts
  RLIMIT_NPROC per uid over the whole host, so two slots sharing one would limit each
  other's threads; a lease makes each uid one slot's alone.
"""

from __future__ import annotations

import fcntl
import functools
import math
import os
import tempfile
from pathlib import Path

from . import cgroups

MEMORY_UNIT_MB = 64
_EVALUATORS_SHARE = 0.25  # of the machine's memory, never leased to programs
PROGRAM_UIDS = range(3_000_000, 4_000_000)  # far above real users and system ranges


class Lease:
    """Held files; `release` (or the holder's end) gives them back. A lease handed to
    another process (`fds`, sent to the fork servers) stays held until that process has
    also closed it: the servers outlive a host killed mid-program by up to its deadline."""

    def __init__(self, fds: list[int]):
        self._fds = fds

    @property
    def fds(self) -> list[int]:
        return list(self._fds)

    def release(self) -> None:
        while self._fds:
            os.close(self._fds.pop())  # closing drops the flock


def lease_directory() -> Path:
    """/run/lm-eval-noise for root (one pool for the host), else a directory of this
    user's under the temporary directory."""
    if os.geteuid() == 0 and os.access("/run", os.W_OK):
        directory = Path("/run/lm-eval-noise")
    else:
        directory = Path(tempfile.gettempdir()) / f"lm-eval-noise-leases-{os.geteuid()}"
    directory.mkdir(mode=0o700, exist_ok=True)
    return directory


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


@functools.cache  # asked at every slot opening (and every retry while waiting); it does not change
def machine_memory_mb() -> int:
    """MemTotal, or this process's cgroup memory limit where that is lower."""
    with open("/proc/meminfo", encoding="ascii") as handle:
        total = next(int(line.split()[1]) // 1024 for line in handle if line.startswith("MemTotal:"))
    limit = cgroups.own_memory_limit()
    return total if limit is None else min(total, limit // (1024 * 1024))


def memory_budget_units() -> int:
    return int(machine_memory_mb() * (1 - _EVALUATORS_SHARE)) // MEMORY_UNIT_MB


def take_memory(megabytes: int) -> Lease | None:
    """A lease on `megabytes` of the host's budget, or None while other slots hold too
    much of it. Raises ValueError if the budget could never hold that much."""
    units, budget = math.ceil(megabytes / MEMORY_UNIT_MB), memory_budget_units()
    if units > budget:
        raise ValueError(
            f"a sandbox slot needs {megabytes} MiB but this machine leases at most "
            f"{budget * MEMORY_UNIT_MB} MiB to programs: lower memory_mb")
    directory, held = lease_directory(), []
    start = os.getpid() % budget  # processes start apart, to find free units sooner
    for index in range(budget):
        fd = _try_lock(directory / f"memory-{(start + index) % budget}")
        if fd is not None:
            held.append(fd)
            if len(held) == units:
                return Lease(held)
    Lease(held).release()
    return None


def take_uid() -> tuple[int, Lease]:
    """The lowest uid in PROGRAM_UIDS that no other slot on the host holds (from the
    bottom, so the lease directory holds no more files than slots were ever open at once)."""
    directory = lease_directory()
    for offset, uid in enumerate(PROGRAM_UIDS):
        fd = _try_lock(directory / f"uid-{offset}")
        if fd is not None:
            return uid, Lease([fd])
    raise RuntimeError(f"every program uid in {PROGRAM_UIDS} is leased")
