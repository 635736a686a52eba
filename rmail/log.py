"""Logging: the TRACE level, the connection id on every line, and redaction of secrets.

Only ``cli.py`` calls :func:`setup`. Every module logs through ``logging.getLogger(__name__)``.
Protocol code sets :data:`conn_id` for the task serving a connection; a filter puts it on
each record as ``conn``. The formatter masks credentials in the finished line, traceback
included, before it is written: AUTH/LOGIN arguments, Authorization headers, ``password=``
fields, bearer tokens.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
from typing import Final

__all__ = ["TRACE", "ConnFilter", "RedactingFormatter", "conn_id", "redact", "setup"]

# Below DEBUG, for protocol transcripts (Radicale and mox use the same idea).
TRACE: Final = 5
logging.addLevelName(TRACE, "TRACE")

conn_id: contextvars.ContextVar[str] = contextvars.ContextVar("conn_id", default="-")

_PATTERNS: Final = (
    # IMAP: "a1 LOGIN user secret" / SMTP+IMAP: "AUTH PLAIN base64" / "AUTHENTICATE PLAIN ..."
    # The password may be a quoted string with spaces or a literal: mask the rest of the line.
    (re.compile(r'(?im)(\bLOGIN\s+(?:"(?:[^"\\]|\\.)*"|\S+)\s+).+$'), r"\1********"),
    (re.compile(r"(?i)(\bAUTH(?:ENTICATE)?\s+(?:PLAIN|LOGIN|XOAUTH2)\s+)(\S+)"), r"\1********"),
    (re.compile(r"(?i)(authorization\s*[:=]\s*)(\S+\s+)?\S+"), r"\1********"),
    (
        re.compile(r"(?i)(\b(?:password|passwd|token|secret)\b[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+"),
        r"\1********",
    ),
    (re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1********"),
)


def redact(text: str) -> str:
    """``text`` with credentials masked."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class ConnFilter(logging.Filter):
    """Adds ``conn`` (the connection id of the running task) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.conn = conn_id.get()
        return True


class RedactingFormatter(logging.Formatter):
    """Masks credentials in the whole formatted line, tracebacks included."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def setup(level: str = "INFO", stream: object = None) -> None:
    """Configure the ``rmail`` logger tree (idempotent: a second call replaces the handler)."""
    root = logging.getLogger("rmail")
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    handler.addFilter(ConnFilter())
    handler.setFormatter(
        RedactingFormatter("%(asctime)s %(levelname)s %(name)s [%(conn)s] %(message)s")
    )
    root.addHandler(handler)
    root.setLevel(TRACE if level.upper() == "TRACE" else getattr(logging, level.upper()))
    root.propagate = False
    # aiosmtpd logs every command at INFO on "mail.log": a transcript, so only at TRACE.
    smtp_lib = logging.getLogger("mail.log")
    for old in list(smtp_lib.handlers):
        smtp_lib.removeHandler(old)
    smtp_lib.addHandler(handler)
    smtp_lib.setLevel(logging.DEBUG if level.upper() == "TRACE" else logging.WARNING)
    smtp_lib.propagate = False
