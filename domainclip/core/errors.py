"""Exceptions that carry a message meant for the user, not a traceback."""
from __future__ import annotations


class DomainClipError(Exception):
    """Base class: a user-facing problem. The CLI prints the message alone."""


class ConfigError(DomainClipError):
    """A config key has a value that is not allowed."""


class CardError(DomainClipError):
    """A data card is invalid; the message names the file and field."""


class ReadError(DomainClipError):
    """A data file could not be read; the message names the path, the stage and the fix."""

    def __init__(self, path, stage: str, reason: str, fix: str = ""):
        self.path, self.stage, self.reason, self.fix = str(path), stage, reason, fix
        msg = f"cannot read {path} ({stage}): {reason}"
        super().__init__(msg + (f". Fix: {fix}" if fix else ""))


class InputError(DomainClipError):
    """An input given to a predictor (a tensor, an array) is unusable: wrong shape, NaN, empty."""


class BundleError(DomainClipError):
    """An export bundle is incomplete, tampered with or unsafe."""


def one_line(exc: BaseException) -> str:
    """The message of a user-facing error as one line (OS errors name the file and the cause)."""
    if isinstance(exc, OSError) and not isinstance(exc, DomainClipError):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or exc}; check the path and its permissions (or free disk space)"
    return " | ".join(line.strip() for line in str(exc).splitlines() if line.strip())


USER_ERRORS = (DomainClipError, OSError)
