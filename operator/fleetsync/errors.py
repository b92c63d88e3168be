"""The one exception tree of fleetsync, so callers decide on retry by type, not by message.

::

    FleetsyncError
    ├── PermanentError          retrying cannot help: fail the item / run, never retry
    │   ├── ManifestError       a manifest or config is invalid (CLI and worker exit 64)
    │   ├── PayloadError        a vendor answered with a body we cannot map (fails one item)
    │   └── HostNotAllowedError a URL left ``allowedHosts`` (fails one item, no request sent)
    └── RetryableError          the same call may succeed later
        ├── VendorError         a vendor answered 5xx / timed out / refused the connection
        │   └── ThrottledError  a vendor answered 429 (``retry_after`` seconds, if it said)
        ├── BreakerOpenError    the vendor's circuit breaker is open; no request was sent
        └── SinkError           the sink refused or throttled a write; retried with backoff

The controller maps these to kopf's ``PermanentError`` / ``TemporaryError`` at the handler
edge only; the engine never imports kopf.

Errors a user meets at a run's start (issue 13: never a traceback) name the ``field`` of the
manifest they concern and a ``hint`` (the fix); the CLI prints them as one line, or as
``{"error": {field, reason, hint}}`` with ``--output json``, and exits 64 for a
:class:`PermanentError` (configuration: a missing Secret, a wrong password, a table that does
not exist) and 75 for a :class:`RetryableError` (infrastructure that may recover: a database
that is down, a port in use). :func:`describe` gives that triple for any error.
"""

from __future__ import annotations

__all__ = [
    "BreakerOpenError",
    "FleetsyncError",
    "HostNotAllowedError",
    "ManifestError",
    "PayloadError",
    "PermanentError",
    "RetryableError",
    "SinkError",
    "ThrottledError",
    "VendorError",
    "describe",
]


class FleetsyncError(Exception):
    """Base of every error fleetsync raises on purpose; ``field`` and ``hint`` say where
    and what to do, when the raiser knows."""

    field: str | None = None
    hint: str | None = None


class PermanentError(FleetsyncError):
    """Retrying cannot help."""


class RetryableError(FleetsyncError):
    """The same operation may succeed later."""


class ManifestError(PermanentError):
    """A manifest or config is invalid. ``problems`` holds ``(field.path, reason)`` pairs."""

    def __init__(self, problems: list[tuple[str, str]], *, hint: str | None = None) -> None:
        self.problems = problems
        self.field = problems[0][0] if problems else None
        self.hint = hint
        super().__init__("; ".join(f"{path}: {reason}" for path, reason in problems))


class PayloadError(PermanentError):
    """A vendor's response could not be mapped to a record."""


class HostNotAllowedError(PermanentError):
    """A request URL's host is not in ``allowedHosts``; nothing was sent."""


class VendorError(RetryableError):
    """A vendor failed transiently (5xx, timeout, connection refused)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class ThrottledError(VendorError):
    """A vendor answered 429; ``retry_after`` is its Retry-After in seconds, if given."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message, status=429)


class BreakerOpenError(RetryableError):
    """The vendor's circuit breaker is open: the call was not made."""


class SinkError(RetryableError):
    """The sink refused or throttled a write, or cannot be reached."""

    def __init__(self, message: str, *, field: str | None = None, hint: str | None = None):
        self.field = field
        self.hint = hint
        super().__init__(message)


def describe(error: BaseException) -> tuple[str | None, str, str | None]:
    """(field, reason, hint) of ``error`` for a one-line message or a JSON ``error`` object.
    A ManifestError's reason is its first problem's; the others follow in its text."""
    if isinstance(error, ManifestError) and error.problems:
        reason = "; ".join(r if i == 0 else f"{p}: {r}" for i, (p, r) in enumerate(error.problems))
        return error.field, reason, error.hint
    if isinstance(error, FleetsyncError):
        return error.field, str(error), error.hint
    return None, str(error) or type(error).__name__, None
