"""What the sandbox tests share: the levels to test and a search for leftovers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lm_eval_noise.execution import isolation, servers
from lm_eval_noise.execution.cgroups import create_cgroup

PROGRAM_UID_FLOOR = 3_000_000  # sandbox.py gives programs uids above this
# .ci/run demands the strongest level (LM_EVAL_NOISE_SANDBOX=namespaces): there a level
# that does not work fails the tests instead of skipping them.
NAMESPACES = os.environ.get("LM_EVAL_NOISE_SANDBOX") == "namespaces" or isolation.namespaces_work()
needs_namespaces = pytest.mark.skipif(not NAMESPACES, reason="namespaces are not available here")
LEVELS = (["namespaces"] if NAMESPACES else []) + ["none"]


def cgroups_available() -> bool:
    """Whether workers get a cgroup here (one is made and removed to find out)."""
    group = create_cgroup(1 << 30, 64)
    if group is not None:
        group.remove()
    return group is not None


def leftovers(root: Path) -> set[str]:
    """Temp entries under `root`, and fork servers or program processes still alive (not
    the server factories, which live as long as this process, and not those of a sibling
    test process: pytest-xdist runs its workers side by side)."""
    found = {f"path:{p.name}" for p in root.iterdir()}
    factories = servers.factory_pids()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in factories:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            uid = int((entry / "status").read_text().split("Uid:")[1].split()[0])
        except (OSError, IndexError):
            continue
        if (b"lm-eval-noise-fork-server" in cmdline or uid >= PROGRAM_UID_FLOOR) and not _of_a_sibling(int(entry.name)):
            found.add(f"pid:{entry.name}:{cmdline[:80]!r}")
    return found


def _of_a_sibling(pid: int) -> bool:
    """Whether `pid` descends from another process running the same command line as this
    one (another xdist worker) before reaching this one. An orphan counts as ours."""
    own = Path("/proc/self/cmdline").read_bytes()
    while pid > 1:
        if pid == os.getpid():
            return False
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes() == own:
                return True
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            return False
    return False
