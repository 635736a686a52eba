"""Evaluate IMAP SEARCH keys against the messages of a selected mailbox.

RFC 3501 §6.4.4 (SEARCH), RFC 7162 §3.1.5 (MODSEQ search criterion) and RFC 5182 (``$``,
the saved search result). The keys come typed from :mod:`rmail.imap.parser.types`; this
module owns their *meaning* and nothing else: no I/O of its own, no store calls, no
response syntax. Everything it needs from a message is the :class:`SearchableMessage`
protocol, whose expensive parts (headers, body text) are methods the caller implements
lazily.

Invariants:

- A search whose key has ``needs_headers(key) is False`` and ``needs_content(key) is
  False`` touches only ``seq``, ``uid``, ``flags``, ``recent``, ``size``, ``internal_date``
  and ``modseq``, so the server can answer ``UID SEARCH UNSEEN`` from its index without
  opening a single message file.
- Within one :func:`search` or :func:`matches` call each lazy accessor is called at most
  once per message (and argument), however often the key refers to it.
- String keys match as a case-insensitive substring (RFC 3501 §6.4.4) after Unicode case
  folding (``str.casefold``), so ``GRÜSSE`` finds ``Grüße``.
"""

from __future__ import annotations

import bisect
import calendar
import datetime
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Final, Protocol, TypeVar, assert_never

from rmail.imap.parser.types import (
    SearchAll,
    SearchAnd,
    SearchDate,
    SearchFlag,
    SearchHeader,
    SearchKey,
    SearchModSeq,
    SearchNot,
    SearchOr,
    SearchSet,
    SearchSize,
    SearchText,
    SequenceSet,
)

__all__ = [
    "SearchableMessage",
    "matches",
    "needs_content",
    "needs_headers",
    "required_header_tests",
    "search",
    "uses_modseq",
]

_SECONDS_PER_DAY: Final = 86_400
_RECENT: Final = "\\recent"


class SearchableMessage(Protocol):
    """What SEARCH needs to know about one message of the selected mailbox.

    The attributes are cheap (they come from the mailbox index); the methods may read the
    message file and are only called when the key needs them (see :func:`needs_headers`
    and :func:`needs_content`).

    Attributes:
        seq: message sequence number (RFC 3501 §2.3.1.2), 1-based.
        uid: the message's UID (RFC 3501 §2.3.1.1).
        flags: system flags such as ``\\Seen`` and keywords, as stored (not ``\\Recent``).
        recent: whether this session sees the message as ``\\Recent``.
        size: RFC822.SIZE in octets.
        internal_date: INTERNALDATE as Unix seconds (UTC).
        modseq: the message's MODSEQ (RFC 7162 §3.1).
    """

    @property
    def seq(self) -> int: ...

    @property
    def uid(self) -> int: ...

    @property
    def flags(self) -> tuple[str, ...]: ...

    @property
    def recent(self) -> bool: ...

    @property
    def size(self) -> int: ...

    @property
    def internal_date(self) -> int: ...

    @property
    def modseq(self) -> int: ...

    def header_values(self, name: str) -> list[str]:
        """The values (text after the colon) of every top-level header field ``name``.

        ``name`` is matched case-insensitively; values are unfolded and RFC 2047-decoded
        to str. An absent field gives ``[]``; a present but empty one gives ``[""]``.
        """
        ...

    def header_text(self) -> str:
        """All top-level header lines, decoded to str (for the TEXT key)."""
        ...

    def body_text(self) -> str:
        """The decoded text (transfer encoding and charset undone) of the text parts."""
        ...

    def sent_date(self) -> datetime.date | None:
        """The date of the Date: header in its own timezone, or None if absent/unparsable."""
        ...


_M = TypeVar("_M", bound=SearchableMessage)
_Predicate = Callable[[SearchableMessage], bool]


# -- public API ---------------------------------------------------------------------------


def matches(
    key: SearchKey,
    msg: SearchableMessage,
    *,
    max_seq: int,
    max_uid: int,
    saved: set[int] | None,
) -> bool:
    """Whether ``msg`` satisfies ``key`` (RFC 3501 §6.4.4).

    Args:
        key: the parsed search key (the top-level keys are one :class:`SearchAnd`).
        msg: the message to test.
        max_seq: what ``*`` means in a sequence set: the mailbox's highest sequence number.
        max_uid: what ``*`` means in a ``UID`` set: the mailbox's highest UID.
        saved: the RFC 5182 saved result (UIDs) that ``$`` stands for; None if nothing was
            saved, in which case ``$`` is the empty set (RFC 5182 §2.1).

    Returns:
        True if the message matches.
    """
    predicate = _compile(key, max_seq=max_seq, max_uid=max_uid, saved=saved)
    return predicate(_Memo(msg) if _reads_message(key) else msg)


def search(
    key: SearchKey,
    messages: Iterable[_M],
    *,
    max_seq: int,
    max_uid: int,
    saved: set[int] | None,
) -> list[_M]:
    """The messages that satisfy ``key``, in the order given.

    The key is compiled once (needles case-folded, sets merged and sorted), then applied to
    each message. Arguments as for :func:`matches`.

    Returns:
        The matching messages, in input order.
    """
    predicate = _compile(key, max_seq=max_seq, max_uid=max_uid, saved=saved)
    if _content_keys(key) > 1:
        return [msg for msg in messages if predicate(_Memo(msg))]
    # With at most one key reading the message, each accessor is called once anyway.
    return [msg for msg in messages if predicate(msg)]


def required_header_tests(key: SearchKey) -> list[tuple[str, Callable[[Sequence[str]], bool]]]:
    """Header tests every match of ``key`` passes: (field name in lower case, test of that
    field's decoded values, as ``SearchableMessage.header_values`` gives them) for each
    HEADER/BCC/CC/FROM/SUBJECT/TO key ANDed at the top of ``key``.

    A caller with a message's values of such a field at hand (a cache) can drop a message
    that fails one before it builds a :class:`SearchableMessage` for :func:`search`.
    """
    if isinstance(key, SearchHeader):
        return [(key.name.lower(), _values_test(key.value))]
    if isinstance(key, SearchAnd):
        return [test for sub in key.keys for test in required_header_tests(sub)]
    return []


def needs_headers(key: SearchKey) -> bool:
    """Whether evaluating ``key`` calls ``header_values``, ``header_text`` or ``sent_date``.

    True for HEADER/FROM/TO/CC/BCC/SUBJECT, SENTBEFORE/SENTON/SENTSINCE and TEXT.
    """
    return _any_key(key, _wants_headers)


def needs_content(key: SearchKey) -> bool:
    """Whether evaluating ``key`` calls ``body_text`` (the BODY and TEXT keys)."""
    return _any_key(key, lambda k: isinstance(k, SearchText))


def uses_modseq(key: SearchKey) -> bool:
    """Whether ``key`` contains MODSEQ.

    RFC 7162 §3.1.5: a SEARCH with MODSEQ must answer with the highest mod-sequence of the
    matching messages, so the server needs to know.
    """
    return _any_key(key, lambda k: isinstance(k, SearchModSeq))


# -- key analysis -----------------------------------------------------------------------


def _wants_headers(key: SearchKey) -> bool:
    match key:
        case SearchHeader():
            return True
        case SearchDate(sent=sent):
            return sent
        case SearchText(where=where):
            return where == "text"
        case _:
            return False


def _keys(key: SearchKey) -> Iterator[SearchKey]:
    """``key`` and every key nested in it (under NOT, OR and AND)."""
    stack: list[SearchKey] = [key]
    while stack:
        current = stack.pop()
        yield current
        match current:
            case SearchNot(key=inner):
                stack.append(inner)
            case SearchOr(left=left, right=right):
                stack.extend((left, right))
            case SearchAnd(keys=keys):
                stack.extend(keys)
            case _:
                pass


def _any_key(key: SearchKey, test: Callable[[SearchKey], bool]) -> bool:
    """Whether ``test`` holds for ``key`` or any key nested in it."""
    return any(test(current) for current in _keys(key))


def _content_keys(key: SearchKey) -> int:
    """How many keys in ``key`` read the message (headers or text)."""
    return sum(
        1 for current in _keys(key) if _wants_headers(current) or isinstance(current, SearchText)
    )


def _reads_message(key: SearchKey) -> bool:
    return needs_headers(key) or needs_content(key)


# -- compilation ----------------------------------------------------------------------------


def _compile(key: SearchKey, *, max_seq: int, max_uid: int, saved: set[int] | None) -> _Predicate:
    """Turn ``key`` into a predicate; all per-key work happens here, once."""

    def build(k: SearchKey) -> _Predicate:
        match k:
            case SearchAll():
                return _always
            case SearchSet(set=seq_set, uid=uid):
                return _set_predicate(seq_set, uid, max_uid if uid else max_seq, saved)
            case SearchFlag(flag=flag, present=present):
                return _flag_predicate(flag, present)
            case SearchDate(op=op, date=date, sent=sent):
                return _sent_predicate(op, date) if sent else _internal_predicate(op, date)
            case SearchSize(larger=larger, size=size):
                if larger:
                    return lambda m: m.size > size
                return lambda m: m.size < size
            case SearchHeader(name=name, value=value):
                return _header_predicate(name, value)
            case SearchText(where=where, value=value):
                return _text_predicate(where, value)
            case SearchModSeq(modseq=modseq):
                # RFC 7162 §3.1.5: "equal to or greater than"
                return lambda m: m.modseq >= modseq
            case SearchNot(key=inner):
                inner_p = build(inner)
                return lambda m: not inner_p(m)
            case SearchOr(left=left, right=right):
                left_p, right_p = build(left), build(right)
                return lambda m: left_p(m) or right_p(m)
            case SearchAnd(keys=keys):
                parts = tuple(build(sub) for sub in keys)
                if len(parts) == 1:
                    return parts[0]
                return lambda m: all(p(m) for p in parts)
            case _:
                assert_never(k)

    return build(key)


def _always(msg: SearchableMessage) -> bool:
    return True


def _set_predicate(
    seq_set: SequenceSet, uid: bool, star: int, saved: set[int] | None
) -> _Predicate:
    """RFC 3501 §9 sequence-set: ``*`` is ``star``; ``5:2`` is ``2:5``.

    RFC 5182 §2.1: ``$`` is the saved result, which is always kept as UIDs (also when it
    is used as a message sequence set), and the empty set if nothing was saved.
    """
    saved_uids: frozenset[int] = frozenset(saved or ()) if seq_set.last_result else frozenset()
    # Merge the ranges into disjoint sorted intervals so a set of thousands of ranges costs
    # a bisection per message rather than a scan.
    spans = sorted(
        (min(lo, hi), max(lo, hi))
        for lo, hi in (
            (star if lo_raw is None else lo_raw, star if hi_raw is None else hi_raw)
            for lo_raw, hi_raw in seq_set.ranges
        )
    )
    starts: list[int] = []
    ends: list[int] = []
    for lo, hi in spans:
        if ends and lo <= ends[-1] + 1:
            ends[-1] = max(ends[-1], hi)
        else:
            starts.append(lo)
            ends.append(hi)

    def in_ranges(value: int) -> bool:
        i = bisect.bisect_right(starts, value) - 1
        return i >= 0 and value <= ends[i]

    if uid:
        return lambda m: m.uid in saved_uids or in_ranges(m.uid)
    return lambda m: m.uid in saved_uids or in_ranges(m.seq)


def _flag_predicate(flag: str, present: bool) -> _Predicate:
    """ANSWERED, SEEN, KEYWORD k, ... and their UN- forms (RFC 3501 §6.4.4).

    Flags are atoms and atoms are case-insensitive (RFC 3501 §9 note 4), so ``\\SEEN``
    finds ``\\Seen``. RECENT reads ``msg.recent`` (RFC 3501 §2.3.2: \\Recent is per
    session, not stored).
    """
    folded = flag.casefold()
    if folded == _RECENT:
        return lambda m: m.recent == present

    def has_flag(m: SearchableMessage) -> bool:
        flags = m.flags
        return flag in flags or any(f.casefold() == folded for f in flags)

    if present:
        return has_flag
    return lambda m: not has_flag(m)


def _day_start(date: datetime.date) -> int:
    """Unix seconds of 00:00 UTC on ``date``."""
    return calendar.timegm((date.year, date.month, date.day, 0, 0, 0, 0, 0, 0))


def _internal_predicate(op: str, date: datetime.date) -> _Predicate:
    """BEFORE/ON/SINCE on INTERNALDATE, whose day is taken in UTC (RFC 3501 §6.4.4).

    Compares integer timestamps against day boundaries, so no datetime is built per
    message.
    """
    start = _day_start(date)
    end = start + _SECONDS_PER_DAY
    if op == "before":
        return lambda m: m.internal_date < start
    if op == "on":
        return lambda m: start <= m.internal_date < end
    return lambda m: m.internal_date >= start


def _sent_predicate(op: str, date: datetime.date) -> _Predicate:
    """SENTBEFORE/SENTON/SENTSINCE on the Date: header's date, ignoring time and timezone.

    RFC 3501 §6.4.4. A message without a usable Date: header matches none of the three
    (as in Courier); its negation matches.
    """

    def check(m: SearchableMessage) -> bool:
        sent = m.sent_date()
        if sent is None:
            return False
        if op == "before":
            return sent < date
        if op == "on":
            return sent == date
        return sent >= date

    return check


def _header_predicate(name: str, value: str) -> _Predicate:
    """HEADER name value, and BCC/CC/FROM/SUBJECT/TO (RFC 3501 §6.4.4)."""
    test = _values_test(value)
    return lambda m: test(m.header_values(name))


def _values_test(value: str) -> Callable[[Sequence[str]], bool]:
    """Whether a field's decoded values match ``value``; an empty value matches every
    message that has the field."""
    needle = value.casefold()
    if not needle:
        return bool
    return lambda values: any(needle in v.casefold() for v in values)


def _text_predicate(where: str, value: str) -> _Predicate:
    """BODY (text of the body) and TEXT (header or body), RFC 3501 §6.4.4.

    For TEXT the header and body are searched separately, so a match never straddles the
    boundary between them.
    """
    needle = value.casefold()
    if where == "body":
        return lambda m: needle in m.body_text().casefold()
    return lambda m: needle in m.header_text().casefold() or needle in m.body_text().casefold()


class _Memo:
    """A SearchableMessage that calls each lazy accessor of the wrapped one at most once."""

    __slots__ = ("_body", "_header_text", "_headers", "_msg", "_sent", "_sent_known")

    def __init__(self, msg: SearchableMessage) -> None:
        self._msg = msg
        self._headers: dict[str, list[str]] = {}
        self._header_text: str | None = None
        self._body: str | None = None
        self._sent: datetime.date | None = None
        self._sent_known = False

    @property
    def seq(self) -> int:
        return self._msg.seq

    @property
    def uid(self) -> int:
        return self._msg.uid

    @property
    def flags(self) -> tuple[str, ...]:
        return self._msg.flags

    @property
    def recent(self) -> bool:
        return self._msg.recent

    @property
    def size(self) -> int:
        return self._msg.size

    @property
    def internal_date(self) -> int:
        return self._msg.internal_date

    @property
    def modseq(self) -> int:
        return self._msg.modseq

    def header_values(self, name: str) -> list[str]:
        folded = name.casefold()
        values = self._headers.get(folded)
        if values is None:
            values = self._headers[folded] = self._msg.header_values(name)
        return values

    def header_text(self) -> str:
        if self._header_text is None:
            self._header_text = self._msg.header_text()
        return self._header_text

    def body_text(self) -> str:
        if self._body is None:
            self._body = self._msg.body_text()
        return self._body

    def sent_date(self) -> datetime.date | None:
        if not self._sent_known:
            self._sent = self._msg.sent_date()
            self._sent_known = True
        return self._sent
