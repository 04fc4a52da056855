"""The one base class of errors a user can fix by changing their input: arguments, config
files, data files, environment variables. The command line reports these as one line
and exit code 2; anything else is a bug and keeps its traceback."""

from __future__ import annotations


class InputError(ValueError):
    """Bad input, with a message that names it and says what is valid."""


def require(module: str, extra: str, what: str) -> None:
    """An InputError naming the extra to install when an optional package is missing."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise InputError(f"{what} needs the `{module}` package: pip install 'lm-eval-noise[{extra}]'")


# Paths a user named that cannot be opened: also their input, not our bug.
PATH_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
USER_ERRORS = (InputError, *PATH_ERRORS)
