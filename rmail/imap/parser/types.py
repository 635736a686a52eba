"""The typed values the IMAP parser produces: sequence sets, fetch items, search keys.

Pure data (frozen dataclasses); no I/O, nothing from the store. ``commands.py`` builds
command values from these; ``state.py`` consumes them.
"""

from __future__ import annotations

import bisect
import datetime
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "FetchAttr",
    "SearchAll",
    "SearchAnd",
    "SearchDate",
    "SearchFlag",
    "SearchHeader",
    "SearchKey",
    "SearchModSeq",
    "SearchNot",
    "SearchOr",
    "SearchSet",
    "SearchSize",
    "SearchText",
    "Section",
    "SequenceSet",
    "SortKey",
]


@dataclass(frozen=True, slots=True)
class SequenceSet:
    """RFC 3501 sequence-set: ranges of numbers where ``None`` stands for ``*``.

    ``last_result`` is the RFC 5182 ``$`` (the saved search result).
    """

    ranges: tuple[tuple[int | None, int | None], ...]
    last_result: bool = False

    def iter_values(self, star: int, universe: list[int] | None = None) -> Iterator[int]:
        """The numbers in the set, ``*`` being ``star``; restricted to ``universe`` if given.

        A range given backwards (``5:2``) means the same as ``2:5`` (RFC 3501 §9).
        With ``universe`` (sorted), values absent from it are skipped and huge ranges cost
        O(len(universe)), not O(range).
        """
        seen: set[int] = set()
        for lo_raw, hi_raw in self.ranges:
            lo = star if lo_raw is None else lo_raw
            hi = star if hi_raw is None else hi_raw
            lo, hi = min(lo, hi), max(lo, hi)
            if universe is not None:
                start = bisect.bisect_left(universe, lo)
                end = bisect.bisect_right(universe, hi)
                values = universe[start:end]
            else:
                values = list(range(lo, hi + 1))
            for value in values:
                if value not in seen:
                    seen.add(value)
                    yield value

    def contains(self, value: int, star: int) -> bool:
        for lo_raw, hi_raw in self.ranges:
            lo = star if lo_raw is None else lo_raw
            hi = star if hi_raw is None else hi_raw
            if min(lo, hi) <= value <= max(lo, hi):
                return True
        return False


@dataclass(frozen=True, slots=True)
class Section:
    """A BODY[...] / BINARY[...] section spec (RFC 3501 §6.4.5, RFC 3516).

    ``part`` is the dotted part number (empty: the whole message); ``text`` one of
    HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT, TEXT, MIME, or None for the part's content;
    ``fields`` the header names for HEADER.FIELDS(.NOT), as given (compare case-insensitively).
    """

    part: tuple[int, ...] = ()
    text: Literal["HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"] | None = None
    fields: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FetchAttr:
    """One FETCH data item.

    ``name`` is upper case: FLAGS, INTERNALDATE, RFC822, RFC822.HEADER, RFC822.SIZE,
    RFC822.TEXT, ENVELOPE, BODY, BODYSTRUCTURE, UID, MODSEQ, BODY[] (``section`` set,
    ``peek`` for BODY.PEEK), BINARY[] / BINARY.PEEK[] / BINARY.SIZE[] (RFC 3516).
    ``partial`` is ``(offset, length)`` from ``<offset.length>``.
    The macros ALL, FAST and FULL are expanded by the parser.
    """

    name: Literal[
        "FLAGS",
        "INTERNALDATE",
        "RFC822",
        "RFC822.HEADER",
        "RFC822.SIZE",
        "RFC822.TEXT",
        "ENVELOPE",
        "BODY",
        "BODYSTRUCTURE",
        "UID",
        "MODSEQ",
        "BODY[]",
        "BINARY[]",
        "BINARY.SIZE[]",
    ]
    section: Section | None = None
    partial: tuple[int, int] | None = None
    peek: bool = False


# -- SEARCH (RFC 3501 §6.4.4, RFC 7162 MODSEQ) --------------------------------------------


@dataclass(frozen=True, slots=True)
class SearchAll:
    """ALL."""


@dataclass(frozen=True, slots=True)
class SearchSet:
    """A sequence set (``uid`` False) or ``UID set`` (``uid`` True)."""

    set: SequenceSet
    uid: bool = False


@dataclass(frozen=True, slots=True)
class SearchFlag:
    """ANSWERED, DELETED, DRAFT, FLAGGED, SEEN, RECENT, NEW, OLD, KEYWORD k and the UN- forms.

    ``flag`` is the IMAP flag (``\\Seen``, a keyword, or ``\\Recent``); ``present`` False for
    UN-forms. NEW is RECENT and UNSEEN (the parser expands it), OLD is NOT RECENT.
    """

    flag: str
    present: bool = True


@dataclass(frozen=True, slots=True)
class SearchDate:
    """BEFORE/ON/SINCE (internal date) and SENTBEFORE/SENTON/SENTSINCE (Date: header)."""

    op: Literal["before", "on", "since"]
    date: datetime.date
    sent: bool = False


@dataclass(frozen=True, slots=True)
class SearchSize:
    """LARGER n (``larger`` True) or SMALLER n."""

    larger: bool
    size: int


@dataclass(frozen=True, slots=True)
class SearchHeader:
    """HEADER name value; also BCC/CC/FROM/SUBJECT/TO value (name set accordingly).

    An empty ``value`` matches every message that has the header (RFC 3501).
    """

    name: str
    value: str


@dataclass(frozen=True, slots=True)
class SearchText:
    """BODY value (``where`` "body") or TEXT value (header and body)."""

    where: Literal["body", "text"]
    value: str


@dataclass(frozen=True, slots=True)
class SearchModSeq:
    """MODSEQ n (RFC 7162 §3.1.5); the optional entry name/type are parsed and ignored."""

    modseq: int


@dataclass(frozen=True, slots=True)
class SearchNot:
    key: SearchKey


@dataclass(frozen=True, slots=True)
class SearchOr:
    left: SearchKey
    right: SearchKey


@dataclass(frozen=True, slots=True)
class SearchAnd:
    """A parenthesized list, or the implicit AND of the top-level keys."""

    keys: tuple[SearchKey, ...]


SearchKey = (
    SearchAll
    | SearchSet
    | SearchFlag
    | SearchDate
    | SearchSize
    | SearchHeader
    | SearchText
    | SearchModSeq
    | SearchNot
    | SearchOr
    | SearchAnd
)


@dataclass(frozen=True, slots=True)
class SortKey:
    """One RFC 5256 sort criterion: ARRIVAL, CC, DATE, FROM, SIZE, SUBJECT, TO (+ REVERSE)."""

    key: Literal["ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO"]
    reverse: bool = False
