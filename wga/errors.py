"""Errors that reach a user: each says what was wrong and what to do about it.

Every front end maps them the same way: the CLI prints the message, the REST API answers with
``{"error": message}`` and :attr:`WgaError.http_status`.
"""

from __future__ import annotations


class WgaError(Exception):
    """Base of all errors the user can act on."""

    http_status = 500


class InvalidInput(WgaError, ValueError):
    """A value the user gave is malformed or out of range."""

    http_status = 400


class NotFound(WgaError, LookupError):
    """A model, layer, unit, run or job that the user named does not exist."""

    http_status = 404


class Unavailable(WgaError):
    """The thing exists but cannot be used here and now (weights offline, queue full)."""

    http_status = 503

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def closest_names(name: str, candidates: list[str], limit: int = 5) -> str:
    """A short 'did you mean' hint for error messages."""
    import difflib

    close = difflib.get_close_matches(name, candidates, n=limit, cutoff=0.5)
    if close:
        return "did you mean " + ", ".join(close) + "?"
    shown = ", ".join(candidates[:limit])
    more = f" … ({len(candidates)} in all)" if len(candidates) > limit else ""
    return f"choose one of {shown}{more}"
