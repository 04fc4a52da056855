"""The one base class of errors a user can fix by changing their input: arguments, config
files, data files, environment variables. The command line reports these as one line
and exit code 2; anything else is a bug and keeps its traceback."""

from __future__ import annotations


class InputError(ValueError):
    """Bad input, with a message that names it and says what is valid."""


def require(module: str, extra: str, what: str) -> None:
    """An InputError naming what to install when an optional package is missing: the
    extra's own requirements, which pip installs however this package was installed
    (it is not on PyPI yet, so `lm-eval-noise[extra]` would not resolve)."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        wanted = " ".join(f"'{r}'" for r in extra_requirements(extra)) or module
        raise InputError(f"{what} needs the `{module}` package: pip install {wanted} (the `{extra}` extra)")


def extra_requirements(extra: str) -> list[str]:
    """The requirements pyproject lists under `extra`, as installed metadata has them."""
    from importlib import metadata

    try:
        requires = metadata.requires("lm-eval-noise") or []
    except metadata.PackageNotFoundError:
        return []
    marker = f'extra == "{extra}"'
    return [r.split(";")[0].strip() for r in requires if marker in r.replace("'", '"')]


# Paths a user named that cannot be opened: also their input, not our bug.
PATH_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
USER_ERRORS = (InputError, *PATH_ERRORS)
