"""The base of every user-facing modelmon error: the CLI prints these as one line, never a traceback."""

from __future__ import annotations


class ModelmonError(RuntimeError):
    """An operation failed for a reason the user can act on; the message says which and how."""


def is_user_error(exc: BaseException) -> bool:
    return isinstance(exc, ModelmonError)


class UsageError(Exception):
    """Bad command-line arguments or values (the CLI exits with code 2)."""
