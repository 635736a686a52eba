"""Errors of the IMAP parser: a syntax error answers ``BAD``, a bad charset ``NO``.

``ParseError`` carries the command's tag (``None`` when even the tag could not be read, so
the server answers ``* BAD``) and the byte offset where parsing stopped. Its message is
written for the client: it never contains more than a short, printable excerpt of the input.
"""

from __future__ import annotations

__all__ = ["BadCharset", "ParseError"]


class ParseError(Exception):
    """The command is not valid IMAP syntax: the server answers ``tag BAD message``."""

    def __init__(self, message: str, tag: str | None, offset: int) -> None:
        super().__init__(message)
        self.message = message
        self.tag = tag
        self.offset = offset

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, tag={self.tag!r}, offset={self.offset})"


class BadCharset(ParseError):
    """SEARCH/SORT/THREAD named a charset other than UTF-8 or US-ASCII.

    The server answers ``tag NO [BADCHARSET (UTF-8 US-ASCII)] ...`` (RFC 3501 §6.4.4), not
    ``BAD``; the message starts with that response code.
    """
