"""Faster ways to read what aiosmtpd reads slowly, with the same outcome; used by RmailSMTP.

Two places took most of the event loop's time per message in aiosmtpd 1.4:

- the message after DATA (RFC 5321 §4.5.2), read one ``readuntil(b"\\r\\n")`` per line;
- the path of MAIL and RCPT, taken apart by the RFC 5322 parser of ``email`` (and a
  ``typing.Protocol`` class made on every call).

:func:`plain_path` handles the common ``<local@domain>`` form with one regular expression
and leaves any other to aiosmtpd. :func:`read_data` reads up to the next ``.\\r\\n`` (or a
reader limit's worth of bytes) at a time, so a message without lines ending in a dot is
one read, and gives the same outcome as aiosmtpd 1.4's loop:

- the message ends at the first line holding only a dot (a dot right after ``DATA`` ends an
  empty message), and a line starting with a dot loses that dot;
- past ``size_limit`` bytes (counted as sent: dots and CRLFs included, the final ``.\\r\\n``
  not) the reply is aiosmtpd's ``552``, and a line longer than ``line_limit`` bytes with
  its CRLF gets aiosmtpd's ``500``; whichever aiosmtpd would meet first wins, and the
  message is read to its end either way;
- a line ends at CRLF only (a bare LF is part of the line, as in aiosmtpd).

Nothing here touches the store or replies on its own; the caller sends what it is given.
"""

from __future__ import annotations

import asyncio
import re
from typing import Final

__all__ = ["TOO_LONG", "TOO_MUCH", "DataBody", "plain_path", "read_data"]

# aiosmtpd's own texts, which RmailSMTP.push maps to enhanced replies.
TOO_LONG: Final = "500 Line too long (see RFC5321 4.5.3.1.6)"
TOO_MUCH: Final = "552 Error: Too much mail data"
_DOT_CRLF: Final = b".\r\n"
_END: Final = b"\r\n.\r\n"
# RFC 5322 §3.2.3 atext; a dot-atom local part and a domain of letters, digits and hyphens.
_ATEXT: Final = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_PLAIN_PATH: Final = re.compile(
    rf"<({_ATEXT}+(?:\.{_ATEXT}+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>(?:$| +(?=[^\s(]))"
)


def plain_path(arg: str) -> tuple[str, str] | None:
    """``(address, parameters)`` of a MAIL or RCPT argument that is a plain path, else None.

    A plain path is ``<dot-atom@domain>`` (RFC 5321 §4.1.2) followed by nothing, or by
    spaces and parameters; for it aiosmtpd's ``_getaddr`` gives the address as written and
    the parameters without the leading spaces, and so does this. Anything else (``<>``,
    quoted local parts, source routes, address literals, comments, tabs, 8-bit text) is
    None: the caller asks aiosmtpd. ``arg`` is stripped already (aiosmtpd does that).
    """
    match = _PLAIN_PATH.match(arg)
    if match is None:
        return None
    return match[1], arg[match.end() :]


class DataBody:
    """The message as it arrives in pieces; see the module docstring for the rules.

    A piece is any run of the stream that ends at a ``.\\r\\n`` or contains none (what
    ``StreamReader.readuntil(b".\\r\\n")`` returns, or what it refused with
    ``LimitOverrunError``). Pieces are kept until the size limit is passed, as aiosmtpd
    keeps its lines; after a refusal only the count goes on.
    """

    __slots__ = (
        "_at_line_start",
        "_carry",
        "_line",
        "_pieces",
        "_refusal",
        "_size",
        "line_limit",
        "size_limit",
    )

    def __init__(self, size_limit: int | None, line_limit: int) -> None:
        self.size_limit = size_limit or None
        self.line_limit = line_limit
        self._pieces: list[bytes] = []
        self._size = 0  # bytes of message so far (carry excluded)
        self._line = 0  # bytes of the current, unfinished line so far
        self._carry = b""  # a CR held back: its LF may start the next piece
        self._at_line_start = True  # right after "DATA\r\n", or after a piece's CRLF
        self._refusal: str | None = None

    def feed(self, piece: bytes) -> bool:
        """Take the next piece; True once the end-of-data line has been taken."""
        if self._carry:
            piece = self._carry + piece
            self._carry = b""
        if piece.endswith(_END):
            self._take(piece[:-3])
            return True
        if piece == _DOT_CRLF and self._at_line_start:
            return True
        if piece.endswith(b"\r"):
            self._carry = b"\r"
            piece = piece[:-1]
        self._take(piece)
        self._at_line_start = piece.endswith(b"\r\n")
        return False

    def result(self) -> bytes | str:
        """The message, dot-unstuffed; or the refusal (``TOO_MUCH`` or ``TOO_LONG``)."""
        if self._refusal is not None:
            return self._refusal
        data = b"".join(self._pieces)
        # RFC 5321 §4.5.2: a dot at the start of a line was added by the sender; drop it.
        if data.startswith(b"."):
            data = data[1:]
        return data.replace(b"\r\n.", b"\r\n")

    def _take(self, piece: bytes) -> None:
        length = len(piece)
        if self._refusal is not None:
            self._size += length
            return
        if self._line + length <= self.line_limit and (
            self.size_limit is None or self._size + length <= self.size_limit
        ):
            # No line in it can be too long, and the limit is not reached: the usual case.
            self._pieces.append(piece)
            self._size += length
            end = piece.rfind(b"\r\n")
            self._line = self._line + length if end < 0 else length - end - 2
            return
        refusal = self._check_lines(piece)
        self._size += length
        if refusal is None:
            self._pieces.append(piece)
        else:
            self._refusal = refusal
            self._pieces.clear()  # refused: keep nothing more (aiosmtpd does the same)

    def _check_lines(self, piece: bytes) -> str | None:
        """Line by line, the way aiosmtpd meets the limits (the rare case); the refusal.

        aiosmtpd reads a line whose CRLF comes more than ``line_limit`` bytes after its
        start as "too long" before it counts any of its bytes; any other line is counted
        first (too much?), then measured (a line of ``line_limit`` + 1 or + 2 bytes).
        """
        limit = self.line_limit
        start = 0
        counted = self._size - self._line
        while True:
            end = piece.find(b"\r\n", start)
            if end < 0:
                self._line += len(piece) - start
                # Its CRLF cannot come soon enough: aiosmtpd's reader gives up on it.
                return TOO_LONG if self._line > limit else None
            length = self._line + end + 2 - start
            self._line = 0
            start = end + 2
            counted += length
            if length - 2 > limit:
                return TOO_LONG
            if self.size_limit is not None and counted > self.size_limit:
                return TOO_MUCH
            if length > limit:
                return TOO_LONG


async def read_data(
    reader: asyncio.StreamReader, size_limit: int | None, line_limit: int
) -> bytes | str:
    """Read the message that follows the 354 reply; see the module docstring.

    Args:
        reader: the connection's reader, made with ``limit=line_limit`` (as aiosmtpd makes
            it, with its ``line_length_limit``), so no read returns more than that.
        size_limit: the most bytes a message may have (None or 0: no limit).
        line_limit: the longest line, with its CRLF.

    Returns:
        The message, or the refusal to send (``TOO_MUCH`` or ``TOO_LONG``).

    Raises:
        asyncio.IncompleteReadError: the client closed the connection first.
    """
    body = DataBody(size_limit, line_limit)
    while True:
        try:
            piece = await reader.readuntil(_DOT_CRLF)
        except asyncio.LimitOverrunError as exc:
            # No ".\r\n" within the limit: take the bytes that cannot hold its start.
            piece = await reader.read(exc.consumed)
        if body.feed(piece):
            return body.result()
