"""IMAP wire values and response lines, rendered to bytes (RFC 3501 §4 and §7, RFC 9051).

This module owns the one place where rmail turns values into IMAP syntax: strings (atom,
quoted, literal, literal8), lists, flags, dates, sequence sets, and the status, untagged and
continuation lines that carry them. Everything here is pure: bytes out, no I/O, no store, no
connection state. It must not parse client input (that is ``imap/parser/``) and must not know
what a command means (that is ``imap/state.py``).

Invariants:

- A value that cannot be sent as a quoted string (CR, LF, NUL, or 8-bit data without
  ``utf8``) is sent as a literal; nothing here ever emits a raw CR or LF inside a line except
  the CRLF that ends a literal's announcement.
- Human-readable response text never contains CR or LF: they are replaced by spaces so that a
  message built from untrusted input cannot inject a second response line.
"""

from __future__ import annotations

import datetime
import enum
import re
from collections.abc import Iterable, Sequence
from typing import Final, Literal

__all__ = [
    "Code",
    "Status",
    "UntaggedStatus",
    "astring",
    "continuation",
    "fetch_response",
    "flags_list",
    "imap_list",
    "internaldate",
    "literal",
    "nstring",
    "number",
    "quoted",
    "response_code",
    "sequence_set",
    "string",
    "tagged",
    "untagged",
    "untagged_status",
]

Status = Literal["OK", "NO", "BAD"]
"""A tagged completion result (RFC 3501 §7.1)."""

UntaggedStatus = Literal["OK", "NO", "BAD", "PREAUTH", "BYE"]
"""An untagged status response (RFC 3501 §7.1)."""


class Code(enum.StrEnum):
    """Response codes sent in ``[...]`` after a status (RFC 3501 §7.1 and extensions).

    The value is the code's wire name. Codes that carry arguments (``UIDNEXT 12``) are built
    with :func:`response_code`.
    """

    # RFC 3501 §7.1
    ALERT = "ALERT"
    BADCHARSET = "BADCHARSET"
    CAPABILITY = "CAPABILITY"
    PARSE = "PARSE"
    PERMANENTFLAGS = "PERMANENTFLAGS"
    READ_ONLY = "READ-ONLY"
    READ_WRITE = "READ-WRITE"
    TRYCREATE = "TRYCREATE"
    UIDNEXT = "UIDNEXT"
    UIDVALIDITY = "UIDVALIDITY"
    UNSEEN = "UNSEEN"
    # RFC 4315 (UIDPLUS)
    APPENDUID = "APPENDUID"
    COPYUID = "COPYUID"
    UIDNOTSTICKY = "UIDNOTSTICKY"
    # RFC 7162 (CONDSTORE / QRESYNC)
    HIGHESTMODSEQ = "HIGHESTMODSEQ"
    NOMODSEQ = "NOMODSEQ"
    MODIFIED = "MODIFIED"
    CLOSED = "CLOSED"
    # RFC 5530 (IMAP response codes)
    NONEXISTENT = "NONEXISTENT"
    ALREADYEXISTS = "ALREADYEXISTS"
    OVERQUOTA = "OVERQUOTA"
    NOPERM = "NOPERM"
    INUSE = "INUSE"
    CANNOT = "CANNOT"
    LIMIT = "LIMIT"
    AUTHENTICATIONFAILED = "AUTHENTICATIONFAILED"
    UNAVAILABLE = "UNAVAILABLE"
    SERVERBUG = "SERVERBUG"
    CLIENTBUG = "CLIENTBUG"
    EXPUNGEISSUED = "EXPUNGEISSUED"
    CONTACTADMIN = "CONTACTADMIN"
    PRIVACYREQUIRED = "PRIVACYREQUIRED"
    # RFC 4469 (CATENATE) / RFC 7889 (APPENDLIMIT) use TOOBIG
    TOOBIG = "TOOBIG"
    # RFC 3516 (BINARY)
    UNKNOWN_CTE = "UNKNOWN-CTE"
    # RFC 9051 §7.1: DELETE refused because the mailbox has inferior names
    HASCHILDREN = "HASCHILDREN"


_CRLF: Final = b"\r\n"
_NIL: Final = b"NIL"

# RFC 3501 §9: ATOM-CHAR is any CHAR except atom-specials ( ) { SP CTL % * " \ ]
# ASTRING-CHAR adds "]" back (resp-specials).
_ATOM_RE: Final = re.compile(rb'[^\x00-\x20\x7f()\{%*"\\\]\x80-\xff]+')
_ASTRING_RE: Final = re.compile(rb'[^\x00-\x20\x7f()\{%*"\\\x80-\xff]+')
# Characters that may never appear in a quoted string (RFC 3501 §9 QUOTED-CHAR is TEXT-CHAR,
# i.e. CHAR minus CR and LF; NUL is never allowed outside literal8).
_UNQUOTABLE_RE: Final = re.compile(rb"[\x00\r\n]")
_MONTHS: Final = (
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
)  # fmt: skip


def _to_bytes(s: str | bytes) -> bytes:
    """UTF-8 bytes of ``s``; lone surrogates (from ``surrogateescape``) map back to raw bytes."""
    if isinstance(s, bytes):
        return s
    return s.encode("utf-8", "surrogateescape")


def literal(data: bytes, *, binary: bool = False) -> bytes:
    """A synchronizing literal ``{n}CRLF data`` (RFC 3501 §4.3).

    Args:
        data: The octets to send, unchanged.
        binary: Send a ``literal8`` (``~{n}``, RFC 3516 §4.2), which may contain NUL.

    Returns:
        The announcement and the data.
    """
    prefix = b"~{%d}\r\n" if binary else b"{%d}\r\n"
    return prefix % len(data) + data


def quoted(s: str | bytes, *, utf8: bool = False) -> bytes:
    """A quoted string (RFC 3501 §4.3), or a literal when quoting is not safe.

    ``"`` and ``\\`` are escaped. CR, LF and NUL cannot be quoted, and 8-bit octets are only
    allowed in quoted strings once the client enabled UTF-8 (RFC 6855 §3, RFC 9051 §4.3);
    otherwise the value falls back to a literal.

    Args:
        s: The value; ``str`` is sent as UTF-8.
        utf8: The session accepts UTF-8 in quoted strings.
    """
    data = s if isinstance(s, bytes) else s.encode("utf-8", "surrogateescape")
    if (not utf8 and not data.isascii()) or _UNQUOTABLE_RE.search(data):
        return literal(data)
    if b"\\" in data or b'"' in data:
        data = data.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
    return b'"' + data + b'"'


def string(s: str | bytes, *, utf8: bool = False) -> bytes:
    """An IMAP ``string`` (RFC 3501 §9): quoted when safe, else a literal. See :func:`quoted`."""
    return quoted(s, utf8=utf8)


def astring(s: str | bytes, *, utf8: bool = False) -> bytes:
    """An ``astring`` (RFC 3501 §9): a bare atom when possible, else a string.

    ``NIL`` is quoted so that it cannot be read as the nil token in contexts that allow both.
    """
    data = _to_bytes(s)
    if data and _ASTRING_RE.fullmatch(data) and data.upper() != _NIL:
        return data
    return quoted(data, utf8=utf8)


def nstring(s: str | bytes | None, *, utf8: bool = False) -> bytes:
    """An ``nstring`` (RFC 3501 §9): ``NIL`` for ``None``, else a string."""
    if s is None:
        return _NIL
    return quoted(s, utf8=utf8)


def number(n: int) -> bytes:
    """A ``number`` / ``number64`` in decimal (RFC 3501 §4.2, RFC 9051 §4.2)."""
    if n < 0:
        raise ValueError(f"IMAP numbers are unsigned, got {n}")
    return b"%d" % n


def imap_list(items: Iterable[bytes]) -> bytes:
    """A parenthesized list of already rendered values, separated by spaces (RFC 3501 §4.4)."""
    return b"(" + b" ".join(items) + b")"


def flags_list(flags: Iterable[str]) -> bytes:
    """A ``flag-list`` such as ``(\\Seen $Forwarded)`` (RFC 3501 §9).

    Flags are atoms (system flags start with ``\\``); they are sent in the order given.

    Raises:
        ValueError: A flag is not a valid atom (the store must not hold such keywords).
    """
    rendered = []
    for flag in flags:
        data = flag.encode("ascii", "strict")
        name = data[1:] if data.startswith(b"\\") else data
        if name != b"*" and not _ATOM_RE.fullmatch(name):
            raise ValueError(f"not a valid IMAP flag: {flag!r}")
        rendered.append(data)
    return imap_list(rendered)


def internaldate(ts: int | float, tz_minutes: int = 0) -> bytes:
    """A quoted ``date-time``: ``"dd-Mon-yyyy hh:mm:ss +zzzz"`` (RFC 3501 §9).

    The day is written with two digits (``date-day-fixed`` allows ``2DIGIT``); month names are
    English whatever the locale.

    Args:
        ts: Seconds since the epoch (UTC).
        tz_minutes: The zone to show the time in, in minutes east of UTC (-420 is -0700).
    """
    zone = datetime.timezone(datetime.timedelta(minutes=tz_minutes))
    when = datetime.datetime.fromtimestamp(ts, tz=zone)
    sign = "-" if tz_minutes < 0 else "+"
    hours, minutes = divmod(abs(tz_minutes), 60)
    text = (
        f'"{when.day:02d}-{_MONTHS[when.month - 1]}-{when.year:04d} '
        f'{when.hour:02d}:{when.minute:02d}:{when.second:02d} {sign}{hours:02d}{minutes:02d}"'
    )
    return text.encode("ascii")


def sequence_set(numbers: Iterable[int], *, sort: bool = True) -> bytes:
    """A compact ``sequence-set`` such as ``1:5,7,9:10`` (RFC 3501 §9).

    Used for COPYUID (RFC 4315 §3), VANISHED (RFC 7162 §3.2.10) and ESEARCH (RFC 4731).

    Args:
        numbers: Positive integers.
        sort: Sort and de-duplicate first. With ``False`` the order is kept and only
            ascending runs are merged, which COPYUID needs when source and destination UIDs
            must stay paired in order.

    Raises:
        ValueError: ``numbers`` is empty (an empty set has no syntax; callers omit it) or
            contains a number below 1.
    """
    values = sorted(set(numbers)) if sort else list(numbers)
    if not values:
        raise ValueError("an IMAP sequence set cannot be empty")
    if values[0] < 1 or min(values) < 1:
        raise ValueError("sequence numbers and UIDs start at 1")
    parts: list[bytes] = []
    start = prev = values[0]
    for value in values[1:]:
        if value == prev + 1:
            prev = value
            continue
        parts.append(b"%d" % start if start == prev else b"%d:%d" % (start, prev))
        start = prev = value
    parts.append(b"%d" % start if start == prev else b"%d:%d" % (start, prev))
    return b",".join(parts)


def response_code(code: Code, *args: bytes | str | int) -> bytes:
    """A response code with its arguments, without brackets: ``UIDNEXT 12``.

    ``bytes`` arguments are sent as they are (already rendered lists or sets), ``int`` in
    decimal, ``str`` as UTF-8.
    """
    rendered = [code.value.encode("ascii")]
    for arg in args:
        if isinstance(arg, int):
            rendered.append(number(arg))
        else:
            rendered.append(_to_bytes(arg))
    return b" ".join(rendered)


def _resp_text(text: str | bytes, code: Code | bytes | None) -> bytes:
    """``["[" resp-text-code "]" SP] text`` with CR/LF neutralised (RFC 3501 §9 resp-text)."""
    body = _to_bytes(text).replace(b"\r", b" ").replace(b"\n", b" ")
    if code is None:
        return body
    code_bytes = code.value.encode("ascii") if isinstance(code, Code) else code
    code_bytes = code_bytes.replace(b"\r", b" ").replace(b"\n", b" ")
    return b"[" + code_bytes + b"] " + body


def tagged(
    tag: str | bytes, status: Status, text: str | bytes, code: Code | bytes | None = None
) -> bytes:
    """A tagged completion line, e.g. ``A1 OK [READ-WRITE] SELECT completed`` (RFC 3501 §7.1).

    Args:
        tag: The client's tag, echoed unchanged.
        status: ``OK``, ``NO`` or ``BAD``.
        text: Human-readable text (CR/LF are replaced by spaces).
        code: A bare :class:`Code`, or rendered bytes from :func:`response_code`.
    """
    return _to_bytes(tag) + b" " + status.encode("ascii") + b" " + _resp_text(text, code) + _CRLF


def untagged(text: bytes) -> bytes:
    """An untagged response line ``* text`` (RFC 3501 §7). ``text`` is sent as it is."""
    return b"* " + text + _CRLF


def fetch_response(seq: int, items: Sequence[bytes]) -> bytes:
    """``* seq FETCH (item item ...)`` (RFC 3501 §7.4.2).

    Joined in one copy: an item can be a message of megabytes.
    """
    parts = [b"* %d FETCH (" % seq]
    for item in items:
        parts += (item, b" ")
    if items:
        parts.pop()  # the separator after the last item
    parts.append(b")\r\n")
    return b"".join(parts)


def untagged_status(
    status: UntaggedStatus, text: str | bytes, code: Code | bytes | None = None
) -> bytes:
    """An untagged status such as ``* OK [UIDVALIDITY 3] UIDs valid`` (RFC 3501 §7.1)."""
    return b"* " + status.encode("ascii") + b" " + _resp_text(text, code) + _CRLF


def continuation(text: str | bytes = b"") -> bytes:
    """A continuation request ``+ text`` (RFC 3501 §7.5); empty text gives ``+ `` + CRLF."""
    return b"+ " + _resp_text(text, None) + _CRLF
