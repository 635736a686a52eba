"""MIME and RFC 5322 helpers shared by the layers: pure functions of a message's bytes.

The store uses them to keep a cache of header fields (``store/headercache.py``), IMAP to
answer FETCH and SEARCH (``imap/fetch.py``); both must split a header the same way, so the
splitting lives here, once. Nothing here knows a protocol's syntax.
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

__all__ = ["HeaderField", "header_block_end", "header_end", "parse_fields"]

_CRLF: Final = b"\r\n"
# A header field: name, optional WSP, colon, value, folded continuation lines (RFC 5322 §2.2).
# Lines that are not fields (no colon) are skipped, as every MUA does.
_FIELD_RE: Final = re.compile(rb"(?m)^([^\x00-\x20\x7f:]+)[ \t]*:.*(?:\n[ \t].*)*\n?")
_BLANK_LINE_RE: Final = re.compile(rb"\n\r?\n")


class HeaderField(NamedTuple):
    """One header field as stored.

    ``name`` is lower case; ``raw`` is the whole field (name, colon, value, folding and the
    line ending) exactly as in the message; ``colon`` is the offset of the colon in ``raw``.
    """

    name: str
    raw: bytes
    colon: int

    @property
    def value(self) -> str:
        """The unfolded value (RFC 5322 §2.2.3): CR and LF removed, leading blanks stripped.

        Trailing blanks are kept, as Dovecot does. Bytes that are not UTF-8 survive as lone
        surrogates (``surrogateescape``), so encoding back gives the stored octets.
        """
        data = self.raw[self.colon + 1 :].replace(b"\r", b"").replace(b"\n", b"")
        return data.lstrip(b" \t").decode("utf-8", "surrogateescape")


def parse_fields(raw: bytes, start: int, end: int) -> tuple[HeaderField, ...]:
    """Split the header block ``raw[start:end]`` into fields, in message order."""
    fields = []
    for match in _FIELD_RE.finditer(raw, start, end):
        whole = match.group(0)
        colon = whole.index(b":", match.end(1) - match.start(0))
        fields.append(HeaderField(match.group(1).decode("latin-1").lower(), whole, colon))
    return tuple(fields)


def header_block_end(content: bytes) -> int:
    """Offset of the blank line that ends a whole message's header (the whole message when
    there is none): ``content[:result]`` is the header fields without the blank line.

    A bare-LF blank line counts only before the first CRLF one, so the search never runs
    through a whole body that has none (SMTP intake and the inbound checks call this per
    message).
    """
    if content.startswith((b"\r\n", b"\n")):
        return 0
    crlf = content.find(b"\n\r\n")
    lf = content.find(b"\n\n", 0, len(content) if crlf < 0 else crlf + 1)
    found = [p for p in (crlf, lf) if p >= 0]
    return min(found) + 1 if found else len(content)


def header_end(raw: bytes, start: int, end: int) -> int:
    """Where the body of the entity ``raw[start:end]`` starts (after the blank line).

    The header block is ``raw[start:result]``, blank line included. An entity that starts with
    a blank line has an empty header; one without a blank line is all header (RFC 5322 §2.1).
    """
    if end - start >= 2 and raw[start : start + 2] == _CRLF:
        return start + 2
    if end > start and raw[start] == 0x0A:
        return start + 1
    match = _BLANK_LINE_RE.search(raw, start, end)
    return end if match is None else match.end()
