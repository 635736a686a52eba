"""SEARCH key evaluation (RFC 3501 §6.4.4, RFC 7162 §3.1.5, RFC 5182) over plain messages.

``Msg`` below is test data: a dataclass holding exactly what the
:class:`~rmail.imap.search.SearchableMessage` protocol asks for, its headers as
``(name, decoded value)`` pairs.
"""

from __future__ import annotations

import calendar
import datetime
import email.utils
from dataclasses import dataclass, field
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
from rmail.imap.search import (
    SearchableMessage,
    matches,
    needs_content,
    needs_headers,
    required_header_tests,
    search,
    uses_modseq,
)

# -- test data -------------------------------------------------------------------------------


def ts(year: int, month: int, day: int, hms: tuple[int, int, int] = (0, 0, 0)) -> int:
    """Unix seconds of the given UTC date and time of day."""
    return calendar.timegm((year, month, day, *hms, 0, 0, 0))


@dataclass(frozen=True)
class Msg:
    seq: int
    uid: int
    flags: tuple[str, ...] = ()
    recent: bool = False
    size: int = 1000
    internal_date: int = ts(2024, 1, 15, (12, 0, 0))
    modseq: int = 1
    headers: tuple[tuple[str, str], ...] = ()
    body: str = ""

    def header_values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]

    def header_text(self) -> str:
        return "".join(f"{key}: {value}\r\n" for key, value in self.headers)

    def body_text(self) -> str:
        return self.body

    def sent_date(self) -> datetime.date | None:
        for value in self.header_values("Date")[:1]:
            try:
                return email.utils.parsedate_to_datetime(value).date()
            except (TypeError, ValueError):
                return None
        return None


@dataclass(frozen=True)
class IndexOnlyMsg(Msg):
    """A message whose file must not be opened: every lazy accessor fails the test."""

    def header_values(self, name: str) -> list[str]:
        raise AssertionError(f"header_values({name!r}) read for an index-only search")

    def header_text(self) -> str:
        raise AssertionError("header_text() read for an index-only search")

    def body_text(self) -> str:
        raise AssertionError("body_text() read for an index-only search")

    def sent_date(self) -> datetime.date | None:
        raise AssertionError("sent_date() read for an index-only search")


@dataclass(frozen=True)
class CountingMsg(Msg):
    calls: dict[str, int] = field(default_factory=dict)

    def _count(self, what: str) -> None:
        self.calls[what] = self.calls.get(what, 0) + 1

    def header_values(self, name: str) -> list[str]:
        self._count(f"header_values:{name.lower()}")
        return super().header_values(name)

    def body_text(self) -> str:
        self._count("body_text")
        return super().body_text()


MAILBOX: list[Msg] = [
    Msg(
        seq=1,
        uid=10,
        flags=("\\Seen", "\\Answered"),
        size=500,
        internal_date=ts(2024, 1, 1, (0, 0, 0)),
        modseq=5,
        headers=(
            ("From", "Jörg Müller <joerg@example.de>"),
            ("To", "alice@example.com"),
            ("Subject", "Grüße aus Berlin"),
            ("Date", "Mon, 1 Jan 2024 23:30:00 -0500"),
        ),
        body="Viele Grüße, Jörg",
    ),
    Msg(
        seq=2,
        uid=20,
        flags=("\\Flagged", "$Important"),
        recent=True,
        size=2000,
        internal_date=ts(2023, 12, 31, (23, 59, 59)),
        modseq=7,
        headers=(
            ("From", "Bob <bob@example.com>"),
            ("Cc", "carol@example.com"),
            ("Subject", "Quarterly report"),
            ("X-Priority", ""),
            ("Date", "Sun, 31 Dec 2023 10:00:00 +0000"),
        ),
        body="Numbers attached.",
    ),
    Msg(
        seq=3,
        uid=30,
        flags=("\\Deleted", "\\Draft"),
        size=1000,
        internal_date=ts(2024, 1, 2, (0, 0, 0)),
        modseq=9,
        headers=(
            ("From", "carol@example.com"),
            ("Bcc", "dave@example.com"),
            ("Subject", "Lunch?"),
        ),
        body="Pizza at noon",
    ),
    Msg(
        seq=4,
        uid=45,
        flags=(),
        recent=True,
        size=1001,
        internal_date=ts(2024, 1, 1, (23, 59, 59)),
        modseq=9,
        headers=(("Subject", "GRÜSSE zurück"), ("Date", "not a date")),
        body="",
    ),
]
MAX_SEQ = 4
MAX_UID = 45


def run(key: SearchKey, saved: set[int] | None = None) -> list[int]:
    """The sequence numbers that match ``key`` in MAILBOX."""
    found = search(key, MAILBOX, max_seq=MAX_SEQ, max_uid=MAX_UID, saved=saved)
    return [m.seq for m in found]


def seqset(*ranges: tuple[int | None, int | None]) -> SequenceSet:
    return SequenceSet(ranges=tuple(ranges))


# -- the protocol ----------------------------------------------------------------------------


def test_test_message_satisfies_the_protocol() -> None:
    msg: SearchableMessage = MAILBOX[0]
    assert msg.uid == 10


# -- ALL, sequence sets, UID sets, $ ---------------------------------------------------------


def test_all_matches_every_message() -> None:
    assert run(SearchAll()) == [1, 2, 3, 4]


def test_empty_and_matches_everything() -> None:
    assert run(SearchAnd(())) == [1, 2, 3, 4]


def test_sequence_set_ranges_and_single_numbers() -> None:
    assert run(SearchSet(seqset((1, 1), (3, 4)))) == [1, 3, 4]


def test_sequence_set_star_is_the_highest_sequence_number() -> None:
    assert run(SearchSet(seqset((None, None)))) == [4]
    assert run(SearchSet(seqset((3, None)))) == [3, 4]


def test_backwards_range_means_the_same_as_forwards() -> None:
    assert run(SearchSet(seqset((4, 2)))) == [2, 3, 4]


def test_sequence_numbers_beyond_the_mailbox_match_nothing() -> None:
    assert run(SearchSet(seqset((5, 9)))) == []


def test_uid_set_compares_uids() -> None:
    assert run(SearchSet(seqset((20, 30)), uid=True)) == [2, 3]
    assert run(SearchSet(seqset((1, 4)), uid=True)) == []


def test_uid_range_from_above_the_highest_uid_to_star_includes_the_last_message() -> None:
    # RFC 3501 §6.4.8: "n:*" with n > the highest UID still means the highest UID's message
    assert run(SearchSet(seqset((100, None)), uid=True)) == [4]


def test_many_ranges_are_merged_and_bisected() -> None:
    odd = tuple((n, n) for n in range(1, 100_000, 2))
    assert run(SearchSet(SequenceSet(ranges=odd))) == [1, 3]
    assert run(SearchSet(seqset((1, 2), (2, 3), (3, 3)))) == [1, 2, 3]


def test_dollar_is_the_saved_result_of_uids() -> None:
    dollar = SequenceSet(ranges=(), last_result=True)
    assert run(SearchSet(dollar, uid=True), saved={20, 45}) == [2, 4]


def test_dollar_in_a_sequence_set_still_means_saved_uids() -> None:
    # RFC 5182 §2.1: the saved result is UIDs whatever command refers to it
    dollar = SequenceSet(ranges=(), last_result=True)
    assert run(SearchSet(dollar), saved={10, 30}) == [1, 3]


def test_dollar_without_a_saved_result_is_empty() -> None:
    dollar = SequenceSet(ranges=(), last_result=True)
    assert run(SearchSet(dollar, uid=True), saved=None) == []
    assert run(SearchNot(SearchSet(dollar, uid=True)), saved=None) == [1, 2, 3, 4]


# -- flags -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "with_flag"),
    [
        ("\\Answered", [1]),
        ("\\Deleted", [3]),
        ("\\Draft", [3]),
        ("\\Flagged", [2]),
        ("\\Seen", [1]),
        ("$Important", [2]),
    ],
)
def test_system_flags_and_keywords_and_their_un_forms(flag: str, with_flag: list[int]) -> None:
    assert run(SearchFlag(flag)) == with_flag
    assert run(SearchFlag(flag, present=False)) == [s for s in (1, 2, 3, 4) if s not in with_flag]


def test_flags_match_case_insensitively() -> None:
    assert run(SearchFlag("\\SEEN")) == [1]
    assert run(SearchFlag("$important")) == [2]
    assert run(SearchFlag("\\seen", present=False)) == [2, 3, 4]


def test_recent_comes_from_the_session_not_the_flags() -> None:
    assert run(SearchFlag("\\Recent")) == [2, 4]
    # OLD = NOT RECENT
    assert run(SearchFlag("\\Recent", present=False)) == [1, 3]


def test_new_is_recent_and_unseen() -> None:
    new = SearchAnd((SearchFlag("\\Recent"), SearchFlag("\\Seen", present=False)))
    assert run(new) == [2, 4]


def test_unseen_over_the_index_never_opens_a_message() -> None:
    mailbox = [
        IndexOnlyMsg(seq=n, uid=n, flags=("\\Seen",) if n % 2 else ()) for n in range(1, 1001)
    ]
    key = SearchAnd(
        (
            SearchFlag("\\Seen", present=False),
            SearchOr(SearchSize(larger=True, size=10), SearchModSeq(1)),
            SearchDate("since", datetime.date(2000, 1, 1)),
            SearchSet(seqset((1, None)), uid=True),
        )
    )
    assert not needs_headers(key)
    assert not needs_content(key)
    found = search(key, mailbox, max_seq=1000, max_uid=1000, saved=None)
    assert [m.uid for m in found] == list(range(2, 1001, 2))


# -- dates -----------------------------------------------------------------------------------


def test_internal_date_before_on_since_at_day_boundaries() -> None:
    day = datetime.date(2024, 1, 1)
    # seq 1 arrived at 00:00:00 on Jan 1, seq 4 at 23:59:59 on Jan 1,
    # seq 2 one second before Jan 1, seq 3 at 00:00:00 on Jan 2 (all UTC)
    assert run(SearchDate("on", day)) == [1, 4]
    assert run(SearchDate("before", day)) == [2]
    assert run(SearchDate("since", day)) == [1, 3, 4]
    assert run(SearchDate("since", datetime.date(2024, 1, 2))) == [3]
    assert run(SearchDate("before", datetime.date(2024, 1, 2))) == [1, 2, 4]


def test_sent_dates_use_the_date_header_in_its_own_timezone() -> None:
    # seq 1 was sent at 23:30 -0500 on Jan 1, which is Jan 2 in UTC: RFC 3501 says Jan 1
    jan1 = datetime.date(2024, 1, 1)
    assert run(SearchDate("on", jan1, sent=True)) == [1]
    assert run(SearchDate("on", datetime.date(2024, 1, 2), sent=True)) == []
    assert run(SearchDate("before", jan1, sent=True)) == [2]
    assert run(SearchDate("since", jan1, sent=True)) == [1]
    assert run(SearchDate("since", datetime.date(2023, 12, 31), sent=True)) == [1, 2]


def test_message_without_usable_date_header_matches_no_sent_key() -> None:
    # seq 3 has no Date:, seq 4 an unparsable one
    ops: tuple[Literal["before", "on", "since"], ...] = ("before", "on", "since")
    for op in ops:
        key = SearchDate(op, datetime.date(2024, 1, 1), sent=True)
        assert 3 not in run(key)
        assert 4 not in run(key)
        assert {3, 4} <= set(run(SearchNot(key)))


# -- sizes and MODSEQ ------------------------------------------------------------------------


def test_larger_and_smaller_are_strict() -> None:
    assert run(SearchSize(larger=True, size=1000)) == [2, 4]
    assert run(SearchSize(larger=False, size=1000)) == [1]
    assert run(SearchSize(larger=False, size=1001)) == [1, 3]


def test_modseq_matches_equal_or_greater() -> None:
    assert run(SearchModSeq(7)) == [2, 3, 4]
    assert run(SearchModSeq(10)) == []
    assert uses_modseq(SearchOr(SearchAll(), SearchNot(SearchModSeq(1))))
    assert not uses_modseq(SearchAll())


# -- headers and text ------------------------------------------------------------------------


def test_header_keys_are_case_insensitive_substrings() -> None:
    assert run(SearchHeader("From", "EXAMPLE.COM")) == [2, 3]
    assert run(SearchHeader("from", "bob")) == [2]
    assert run(SearchHeader("To", "alice")) == [1]
    assert run(SearchHeader("Cc", "carol")) == [2]
    assert run(SearchHeader("Bcc", "dave")) == [3]
    assert run(SearchHeader("Subject", "report")) == [2]
    assert run(SearchHeader("Subject", "nothing like this")) == []


def test_non_ascii_matching_uses_case_folding() -> None:
    # "Grüße".casefold() == "grüsse" == "GRÜSSE".casefold()
    assert run(SearchHeader("Subject", "GRÜSSE")) == [1, 4]
    assert run(SearchHeader("Subject", "grüße")) == [1, 4]
    assert run(SearchHeader("From", "MÜLLER")) == [1]
    assert run(SearchText("body", "GRÜSSE")) == [1]


def test_header_with_empty_value_means_the_field_is_present() -> None:
    assert run(SearchHeader("X-Priority", "")) == [2]
    assert run(SearchHeader("Cc", "")) == [2]
    assert run(SearchHeader("X-Missing", "")) == []


def test_body_searches_only_the_body() -> None:
    assert run(SearchText("body", "pizza")) == [3]
    assert run(SearchText("body", "Lunch")) == []


def test_text_searches_header_and_body() -> None:
    assert run(SearchText("text", "lunch")) == [3]
    assert run(SearchText("text", "PIZZA")) == [3]
    assert run(SearchText("text", "subject:")) == [1, 2, 3, 4]


def test_needs_headers_and_needs_content_classify_keys() -> None:
    assert needs_headers(SearchHeader("Subject", "x"))
    assert not needs_content(SearchHeader("Subject", "x"))
    assert needs_headers(SearchDate("on", datetime.date(2024, 1, 1), sent=True))
    assert not needs_headers(SearchDate("on", datetime.date(2024, 1, 1)))
    assert needs_content(SearchText("body", "x"))
    assert not needs_headers(SearchText("body", "x"))
    assert needs_content(SearchText("text", "x"))
    assert needs_headers(SearchText("text", "x"))
    nested = SearchNot(SearchOr(SearchAll(), SearchAnd((SearchText("body", "x"),))))
    assert needs_content(nested)
    assert not needs_headers(nested)


def test_each_lazy_accessor_is_read_once_per_message() -> None:
    msg = CountingMsg(seq=1, uid=1, headers=(("Subject", "hello"),), body="world")
    key = SearchAnd(
        (
            SearchOr(SearchHeader("Subject", "x"), SearchHeader("subject", "hell")),
            SearchText("body", "wor"),
            SearchNot(SearchText("body", "nope")),
        )
    )
    assert matches(key, msg, max_seq=1, max_uid=1, saved=None)
    assert msg.calls == {"header_values:subject": 1, "body_text": 1}


# -- boolean structure -----------------------------------------------------------------------


def test_not_or_and_nest() -> None:
    seen = SearchFlag("\\Seen")
    flagged = SearchFlag("\\Flagged")
    assert run(SearchOr(seen, flagged)) == [1, 2]
    assert run(SearchNot(SearchOr(seen, flagged))) == [3, 4]
    assert run(SearchAnd((SearchNot(seen), SearchNot(flagged)))) == [3, 4]
    assert run(SearchOr(SearchNot(seen), SearchAnd((seen, SearchSet(seqset((1, 1))))))) == [
        1,
        2,
        3,
        4,
    ]
    deep = SearchOr(
        SearchAnd((SearchFlag("\\Recent"), SearchOr(flagged, SearchModSeq(9)))),
        SearchNot(SearchNot(SearchHeader("From", "carol"))),
    )
    assert run(deep) == [2, 3, 4]


def test_matches_agrees_with_search() -> None:
    key = SearchOr(SearchFlag("\\Seen"), SearchHeader("Subject", "lunch"))
    for msg in MAILBOX:
        expected = msg.seq in run(key)
        assert matches(key, msg, max_seq=MAX_SEQ, max_uid=MAX_UID, saved=None) is expected


# -- properties ------------------------------------------------------------------------------

_WORDS = ["grüße", "GRÜSSE", "report", "a", "", "ß", "x"]
_FLAGS = ["\\Seen", "\\Flagged", "\\Deleted", "\\Recent", "$Junk", "\\SEEN"]
_DAYS = st.dates(min_value=datetime.date(2023, 12, 30), max_value=datetime.date(2024, 1, 3))
_NUMBER = st.none() | st.integers(min_value=1, max_value=12)

_leaf_keys: st.SearchStrategy[SearchKey] = st.one_of(
    st.just(SearchAll()),
    st.builds(SearchFlag, st.sampled_from(_FLAGS), st.booleans()),
    st.builds(SearchDate, st.sampled_from(["before", "on", "since"]), _DAYS, st.booleans()),
    st.builds(SearchSize, st.booleans(), st.integers(min_value=0, max_value=3000)),
    st.builds(
        SearchHeader, st.sampled_from(["Subject", "From", "X-Missing"]), st.sampled_from(_WORDS)
    ),
    st.builds(SearchText, st.sampled_from(["body", "text"]), st.sampled_from(_WORDS)),
    st.builds(SearchModSeq, st.integers(min_value=0, max_value=12)),
    st.builds(
        SearchSet,
        st.builds(
            SequenceSet,
            st.lists(st.tuples(_NUMBER, _NUMBER), max_size=3).map(tuple),
            st.booleans(),
        ),
        st.booleans(),
    ),
)
search_keys: st.SearchStrategy[SearchKey] = st.recursive(
    _leaf_keys,
    lambda inner: st.one_of(
        st.builds(SearchNot, inner),
        st.builds(SearchOr, inner, inner),
        st.builds(SearchAnd, st.lists(inner, max_size=3).map(tuple)),
    ),
    max_leaves=8,
)

_messages = st.lists(
    st.builds(
        Msg,
        seq=st.just(0),
        uid=st.integers(min_value=1, max_value=12),
        flags=st.lists(
            st.sampled_from(["\\Seen", "\\Flagged", "\\Deleted", "$junk"]), max_size=3
        ).map(tuple),
        recent=st.booleans(),
        size=st.integers(min_value=0, max_value=3000),
        internal_date=st.integers(min_value=ts(2023, 12, 30), max_value=ts(2024, 1, 4)),
        modseq=st.integers(min_value=1, max_value=12),
        headers=st.lists(
            st.tuples(
                st.sampled_from(["Subject", "From", "Date"]),
                st.sampled_from([*_WORDS, "Mon, 1 Jan 2024 23:30:00 -0500"]),
            ),
            max_size=3,
        ).map(tuple),
        body=st.sampled_from(_WORDS),
    ),
    max_size=8,
)


def _numbered(raw: list[Msg]) -> list[Msg]:
    """Give the drawn messages sequence numbers 1..n and strictly ascending UIDs."""
    out = []
    uid = 0
    for seq, msg in enumerate(raw, start=1):
        uid += msg.uid
        out.append(
            Msg(
                seq=seq,
                uid=uid,
                flags=msg.flags,
                recent=msg.recent,
                size=msg.size,
                internal_date=msg.internal_date,
                modseq=msg.modseq,
                headers=msg.headers,
                body=msg.body,
            )
        )
    return out


@settings(max_examples=300)
@given(key=search_keys, raw=_messages, saved=st.none() | st.sets(st.integers(1, 40)))
def test_not_k_is_the_complement_of_k(
    key: SearchKey, raw: list[Msg], saved: set[int] | None
) -> None:
    mailbox = _numbered(raw)
    max_seq, max_uid = len(mailbox), (mailbox[-1].uid if mailbox else 0)
    hits = search(key, mailbox, max_seq=max_seq, max_uid=max_uid, saved=saved)
    misses = search(SearchNot(key), mailbox, max_seq=max_seq, max_uid=max_uid, saved=saved)
    assert {m.seq for m in hits}.isdisjoint(m.seq for m in misses)
    assert sorted(m.seq for m in [*hits, *misses]) == [m.seq for m in mailbox]
    for msg in mailbox:
        assert matches(key, msg, max_seq=max_seq, max_uid=max_uid, saved=saved) is (msg in hits)


def test_required_header_tests_are_the_top_level_header_keys_and_agree_with_search() -> None:
    key = SearchAnd((
        SearchHeader("From", "ALICE"),
        SearchOr(SearchHeader("to", "x"), SearchFlag("\\Seen")),
        SearchNot(SearchHeader("subject", "y")),
        SearchHeader("cc", ""),
    ))  # fmt: skip
    tests = required_header_tests(key)
    assert [name for name, _test in tests] == ["from", "cc"]
    from_test, cc_test = (test for _name, test in tests)
    assert from_test(["Alice <a@example.test>"]) and not from_test(["Bob", "bob@x"])
    assert cc_test(["anything"]) and not cc_test([])
    assert required_header_tests(SearchNot(SearchHeader("from", "a"))) == []
