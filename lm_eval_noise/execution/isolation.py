"""OS-level isolation for sandboxed programs, detected once per process.

Strongest first:
- `bwrap`: read-only root (the host's /tmp included: the interpreter may live there),
  private /dev, only the program's temp dir writable, new user/PID/network/IPC
  namespaces (no network; every descendant dies with the program), killed with its
  parent.
- `unshare`: new user/PID/network namespaces (no network, descendants die with it),
  but the file system is not read-only.
- `none`: resource limits, a process group killed at the deadline, and the runner's
  audit hook only. Said once, loudly, when it is the best available.
Set LM_EVAL_NOISE_SANDBOX=bwrap|unshare|none to choose; an unavailable choice fails.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

LEVELS = ("bwrap", "unshare", "none")
_ENV_CHOICE = "LM_EVAL_NOISE_SANDBOX"
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Isolation:
    name: str

    def wrap(self, argv: list[str], workdir: str) -> list[str]:
        if self.name == "bwrap":
            return [
                "bwrap", "--ro-bind", "/", "/", "--dev", "/dev",
                "--proc", "/proc", "--bind", workdir, workdir, "--chdir", workdir,
                "--unshare-all", "--die-with-parent", "--new-session", *argv,
            ]
        if self.name == "unshare":
            return [
                "unshare", "--user", "--map-root-user", "--net", "--pid", "--fork",
                "--kill-child", "--mount-proc", *argv,
            ]
        return list(argv)

    @property
    def descendants_die_with_program(self) -> bool:
        return self.name != "none"


def _works(name: str) -> bool:
    """Whether this interpreter, wrapped, starts and sees the package's runner files."""
    if shutil.which(name) is None:
        return False
    runner = Path(__file__).with_name("_zygote.py")
    check = f"import os, sys; sys.exit(0 if os.path.isfile({str(runner)!r}) else 1)"
    with tempfile.TemporaryDirectory(prefix="lm-eval-noise-probe-") as workdir:
        probe = Isolation(name).wrap([sys.executable, "-I", "-c", check], workdir)
        try:
            done = subprocess.run(probe, capture_output=True, timeout=60, cwd=workdir)
        except (OSError, subprocess.SubprocessError):
            return False
    return done.returncode == 0


@functools.cache
def detect_isolation() -> Isolation:
    choice = os.environ.get(_ENV_CHOICE)
    if choice:
        if choice not in LEVELS:
            raise ValueError(f"{_ENV_CHOICE}={choice!r}; valid values: {', '.join(LEVELS)}")
        if choice != "none" and not _works(choice):
            raise RuntimeError(f"{_ENV_CHOICE}={choice} but `{choice}` does not work on this machine")
        return Isolation(choice)
    for name in ("bwrap", "unshare"):
        if _works(name):
            return Isolation(name)
    message = (
        "lm-eval-noise sandbox: neither bubblewrap (bwrap) nor unprivileged user namespaces "
        "(unshare) work here, so generated code runs WITHOUT network or file-system "
        "isolation (resource limits, process-group kill and an audit hook only). Install "
        "bubblewrap for full isolation."
    )
    warnings.warn(message, RuntimeWarning, stacklevel=2)
    _log.warning(message)
    return Isolation("none")
