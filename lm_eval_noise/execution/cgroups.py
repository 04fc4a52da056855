"""A cgroup per worker: one memory limit over everything its program's processes hold
(shared memory, tmpfs and pipe buffers included) and one task limit, counted together
for the program's whole process tree.

cgroup v2 is used where this process's own cgroup delegates the memory and pids
controllers to children (for example under `systemd-run --user --scope -p Delegate=yes`);
otherwise cgroup v1's memory and pids hierarchies where they are writable (root on a
v1 or hybrid host). Where neither is, `create_cgroup` returns None and the per-process
rlimits stand alone (README, "The sandbox").
"""

from __future__ import annotations

import os
import signal
import uuid
from dataclasses import dataclass
from pathlib import Path

_KILL_ROUNDS = 50


@dataclass
class Cgroup:
    version: int
    memory_dir: Path
    pids_dir: Path

    def procs_fds(self) -> list[int]:
        """Write ends of cgroup.procs, for the child to join with "0" (its own pid)."""
        directories = {self.memory_dir, self.pids_dir}
        return [os.open(d / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC) for d in sorted(directories)]

    def oom_kills(self) -> int:
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        for line in (self.memory_dir / name).read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def kill_all(self) -> None:
        """SIGKILL every process still in the group."""
        if self.version == 2 and (self.memory_dir / "cgroup.kill").exists():
            (self.memory_dir / "cgroup.kill").write_text("1")
            return
        for _ in range(_KILL_ROUNDS):
            pids = [int(p) for p in (self.memory_dir / "cgroup.procs").read_text().split()]
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def remove(self) -> None:
        for directory in {self.memory_dir, self.pids_dir}:
            try:
                directory.rmdir()
            except OSError:
                pass


def create_cgroup(memory_bytes: int, tasks: int) -> Cgroup | None:
    name = f"lm-eval-noise-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    mounts = _cgroup_mounts()
    memberships = _own_cgroups()
    for attempt in (_create_v2, _create_v1):
        try:
            group = attempt(name, mounts, memberships, memory_bytes, tasks)
        except OSError:
            group = None
        if group is not None:
            return group
    return None


def _create_v2(name, mounts, memberships, memory_bytes, tasks):
    if "cgroup2" not in mounts or "" not in memberships:
        return None
    directory = Path(mounts["cgroup2"] + memberships[""]) / name
    directory.mkdir()
    controllers = set((directory / "cgroup.controllers").read_text().split())
    if not {"memory", "pids"} <= controllers:
        directory.rmdir()
        return None
    (directory / "memory.max").write_text(str(memory_bytes))
    if (directory / "memory.swap.max").exists():
        (directory / "memory.swap.max").write_text("0")
    (directory / "pids.max").write_text(str(tasks))
    return Cgroup(2, directory, directory)


def _create_v1(name, mounts, memberships, memory_bytes, tasks):
    if "memory" not in mounts or "pids" not in mounts:
        return None
    memory_dir = Path(mounts["memory"] + memberships.get("memory", "/")) / name
    pids_dir = Path(mounts["pids"] + memberships.get("pids", "/")) / name
    memory_dir.mkdir()
    try:
        pids_dir.mkdir()
        (memory_dir / "memory.limit_in_bytes").write_text(str(memory_bytes))
        if (memory_dir / "memory.memsw.limit_in_bytes").exists():  # no swapping around the limit
            (memory_dir / "memory.memsw.limit_in_bytes").write_text(str(memory_bytes))
        (pids_dir / "pids.max").write_text(str(tasks))
    except OSError:
        Cgroup(1, memory_dir, pids_dir).remove()
        raise
    return Cgroup(1, memory_dir, pids_dir)


def own_memory_limit() -> int | None:
    """The memory limit, in bytes, of this process's own cgroup (v2, else v1), or None
    where it sets none or none can be read."""
    mounts, memberships = _cgroup_mounts(writable_only=False), _own_cgroups()
    candidates = []
    if "cgroup2" in mounts and "" in memberships:
        candidates.append(Path(mounts["cgroup2"] + memberships[""]) / "memory.max")
    if "memory" in mounts:
        candidates.append(Path(mounts["memory"] + memberships.get("memory", "/")) / "memory.limit_in_bytes")
    limits = []
    for path in candidates:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            limits.append(int(text))
    return min(limits, default=None)


def _cgroup_mounts(writable_only: bool = True) -> dict[str, str]:
    """{"cgroup2": mount point} and {v1 controller: mount point}, writable ones only
    unless told otherwise."""
    mounts = {}
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        for line in handle:
            fields = line.split()
            separator = fields.index("-")
            point, options = fields[4], fields[5].split(",")
            fstype, super_options = fields[separator + 1], fields[separator + 3].split(",")
            if writable_only and ("rw" not in options or not os.access(point, os.W_OK)):
                continue
            if fstype == "cgroup2":
                mounts.setdefault("cgroup2", point)
            elif fstype == "cgroup":
                for controller in ("memory", "pids"):
                    if controller in super_options:
                        mounts.setdefault(controller, point)
    return mounts


def _own_cgroups() -> dict[str, str]:
    """{"": v2 path} and {v1 controller: path} of this process."""
    memberships = {}
    with open("/proc/self/cgroup", encoding="utf-8") as handle:
        for line in handle:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for controller in controllers.split(",") if controllers else [""]:
                memberships[controller] = path
    return memberships
