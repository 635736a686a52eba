"""The one domain exception tree.

The store and the services raise these; each protocol maps them to its own replies once, at
its edge (IMAP ``NO [NONEXISTENT]``, SMTP ``550 5.1.1``, HTTP 404 ...). Messages are written
for the user: a protocol may show ``str(exc)`` of an ``RmailError`` but never the text of any
other exception.
"""

from __future__ import annotations

__all__ = [
    "AlreadyExists",
    "ConfigError",
    "InvalidInput",
    "NotFound",
    "PermissionDenied",
    "QuotaExceeded",
    "RateLimited",
    "ReadOnly",
    "RmailError",
    "TemporaryFailure",
]


class RmailError(Exception):
    """Base of every error rmail raises on purpose."""


class NotFound(RmailError):
    """The user, domain, folder, message or file does not exist."""


class AlreadyExists(RmailError):
    """The thing to create is there already."""


class PermissionDenied(RmailError):
    """Authenticated, but not allowed to do this (or bad credentials)."""


class QuotaExceeded(RmailError):
    """The write would take the account over its quota."""


class ReadOnly(RmailError):
    """The target cannot be written (an EXAMINEd folder, a read-only share)."""


class InvalidInput(RmailError):
    """A name, address, value or document is malformed."""


class RateLimited(RmailError):
    """Too many failed attempts; ``retry_after`` says when to try again (seconds)."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TemporaryFailure(RmailError):
    """Try again later (a lock timed out, a disk is full, a peer is down)."""


class ConfigError(RmailError):
    """The configuration is wrong; the message names the file and the key."""
