"""SORT and THREAD (RFC 5256): base subjects, sort criteria, both threading algorithms, and
the thread-list wire form.

``Msg`` below is test data: a dataclass holding what the
:class:`~rmail.imap.thread.SortableMessage` protocol asks for, its headers as
``(name, decoded value)`` pairs.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rmail.imap.parser.types import SortKey
from rmail.imap.thread import (
    SortableMessage,
    Thread,
    base_subject,
    message_id,
    references,
    render_threads,
    sort,
    thread_orderedsubject,
    thread_references,
)

# -- test data -------------------------------------------------------------------------------


def ts(day: int, hour: int = 12, minute: int = 0) -> int:
    return calendar.timegm((2024, 3, day, hour, minute, 0, 0, 0, 0))


def date_header(day: int, hour: int = 12, minute: int = 0, zone: str = "+0000") -> str:
    return f"{day} Mar 2024 {hour:02}:{minute:02}:00 {zone}"


@dataclass(frozen=True)
class Msg:
    seq: int
    uid: int = 0
    size: int = 100
    internal_date: int = ts(1)
    headers: tuple[tuple[str, str], ...] = ()

    def header_values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]


def mail(
    seq: int,
    *,
    subject: str = "",
    mid: str | None = None,
    refs: str | None = None,
    in_reply_to: str | None = None,
    day: int | None = None,
    **fields: str,
) -> Msg:
    """A message; ``day`` sets a Date: header at noon UTC that day, ordering by date."""
    headers = [("Subject", subject)]
    if mid is not None:
        headers.append(("Message-ID", mid))
    if refs is not None:
        headers.append(("References", refs))
    if in_reply_to is not None:
        headers.append(("In-Reply-To", in_reply_to))
    if day is not None:
        headers.append(("Date", date_header(day)))
    headers.extend((name.replace("_", "-"), value) for name, value in fields.items())
    return Msg(seq=seq, uid=seq * 10, headers=tuple(headers))


def parse_threads(data: bytes) -> list[Thread]:
    """Parse RFC 5256 §4 thread-list data back into Thread values (to compare trees)."""
    text = data.decode("ascii")
    pos = 0

    def thread_list() -> Thread:
        nonlocal pos
        assert text[pos] == "("
        pos += 1
        if text[pos] == "(":
            nested = []
            while text[pos] == "(":
                nested.append(thread_list())
            node = Thread(None, tuple(nested))
        else:
            numbers = []
            nested = []
            while True:
                end = pos
                while text[end].isdigit():
                    end += 1
                numbers.append(int(text[pos:end]))
                pos = end
                if text[pos] != " ":
                    break
                pos += 1
                if text[pos] == "(":
                    while text[pos] == "(":
                        nested.append(thread_list())
                    break
            node = Thread(numbers[-1], tuple(nested))
            for number in reversed(numbers[:-1]):
                node = Thread(number, (node,))
        assert text[pos] == ")"
        pos += 1
        return node

    threads = []
    while pos < len(text):
        threads.append(thread_list())
    return threads


def test_test_message_satisfies_the_protocol() -> None:
    msg: SortableMessage = mail(1)
    assert msg.seq == 1


# -- base subject (RFC 5256 §2.1) ------------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Re: [PATCH] Fw: foo (fwd)", "foo"),
        ("[blob] Re: re: Fwd:foo", "foo"),
        ("foo", "foo"),
        ("Re: foo", "foo"),
        ("RE:  foo", "foo"),
        ("re:re:re: foo", "foo"),
        ("Fw: foo", "foo"),
        ("FWD: foo", "foo"),
        ("Re[2]: foo", "foo"),
        ("Re [2] : foo", "foo"),
        ("foo (fwd)", "foo"),
        ("foo (FWD) (fwd)  ", "foo"),
        ("[fwd: foo]", "foo"),
        ("Re: [Fwd: Re: foo (fwd)]", "foo"),
        ("[Fwd: [fwd: foo]]", "foo"),
        ("[list] foo", "foo"),
        ("[list][other] foo", "foo"),
        ("[PATCH]", "[PATCH]"),
        ("[a] [b]", "[b]"),
        ("Re: [PATCH]", "[PATCH]"),
        ("  foo \t bar\r\n  baz  ", "foo bar baz"),
        ("Re:", ""),
        ("", ""),
        ("Fwd", "Fwd"),
        ("Reply: foo", "Reply: foo"),
        ("Re: Grüße", "Grüße"),
        ("foo [bar]", "foo [bar]"),
    ],
)
def test_base_subject(subject: str, expected: str) -> None:
    assert base_subject(subject) == expected


# -- SORT (RFC 5256 §3) ----------------------------------------------------------------------


def seqs(messages: list[Msg]) -> list[int]:
    return [m.seq for m in messages]


def test_sort_arrival_by_internal_date_then_sequence() -> None:
    box = [
        Msg(1, internal_date=ts(3)),
        Msg(2, internal_date=ts(1)),
        Msg(3, internal_date=ts(3)),
        Msg(4, internal_date=ts(2)),
    ]
    assert seqs(sort(box, [SortKey("ARRIVAL")])) == [2, 4, 1, 3]


def test_reverse_does_not_reverse_the_sequence_tie_break() -> None:
    box = [
        Msg(1, internal_date=ts(3)),
        Msg(2, internal_date=ts(1)),
        Msg(3, internal_date=ts(3)),
        Msg(4, internal_date=ts(2)),
    ]
    assert seqs(sort(box, [SortKey("ARRIVAL", reverse=True)])) == [1, 3, 4, 2]


def test_sort_size() -> None:
    box = [Msg(1, size=300), Msg(2, size=100), Msg(3, size=200), Msg(4, size=100)]
    assert seqs(sort(box, [SortKey("SIZE")])) == [2, 4, 3, 1]


def test_sort_date_normalizes_to_utc_and_falls_back_to_internal_date() -> None:
    box = [
        # 10:00 +0200 = 08:00 UTC
        Msg(1, headers=(("Date", date_header(5, 10, zone="+0200")),)),
        # 09:00 +0000
        Msg(2, headers=(("Date", date_header(5, 9)),)),
        # 03:30 -0500 = 08:30 UTC
        Msg(3, headers=(("Date", date_header(5, 3, 30, zone="-0500")),)),
        # no Date: internal date 08:15 UTC
        Msg(4, internal_date=ts(5, 8, 15)),
        # garbage Date: internal date 07:00 UTC
        Msg(5, internal_date=ts(5, 7), headers=(("Date", "yesterday-ish"),)),
    ]
    assert seqs(sort(box, [SortKey("DATE")])) == [5, 1, 4, 3, 2]
    assert seqs(sort(box, [SortKey("DATE", reverse=True)])) == [2, 3, 4, 1, 5]


def test_sort_subject_uses_the_base_subject_case_insensitively() -> None:
    box = [
        mail(1, subject="Re: banana"),
        mail(2, subject="apple"),
        mail(3, subject="[list] Fwd: APPLE"),
        mail(4, subject="Cherry (fwd)"),
        mail(5),
    ]
    assert seqs(sort(box, [SortKey("SUBJECT")])) == [5, 2, 3, 1, 4]


@pytest.mark.parametrize("field", ["From", "To", "Cc"])
def test_address_sorts_use_the_first_mailbox_local_part(field: str) -> None:
    box = [
        Msg(1, headers=((field, "Aaron <zed@a.example>"),)),
        Msg(2, headers=((field, "bob@z.example, aaa@x.example"),)),
        Msg(3, headers=((field, "Zoe <Alice@b.example>"),)),
        Msg(4, headers=()),
        Msg(5, headers=((field, "=?ignored?= Doe, John <carol@c.example>"),)),
        Msg(6, headers=((field, '"Zz, Aa" <Dave@d.example>, eve@e.example'),)),
    ]
    key = SortKey(field.upper())  # type: ignore[arg-type]  # the three names are valid keys
    assert seqs(sort(box, [key])) == [4, 3, 2, 5, 6, 1]


def test_sort_with_several_criteria() -> None:
    box = [
        Msg(1, size=10, internal_date=ts(1)),
        Msg(2, size=20, internal_date=ts(1)),
        Msg(3, size=10, internal_date=ts(2)),
        Msg(4, size=20, internal_date=ts(2)),
        Msg(5, size=20, internal_date=ts(1)),
    ]
    keys = [SortKey("SIZE", reverse=True), SortKey("ARRIVAL")]
    assert seqs(sort(box, keys)) == [2, 5, 4, 1, 3]
    keys = [SortKey("ARRIVAL", reverse=True), SortKey("SIZE", reverse=True)]
    assert seqs(sort(box, keys)) == [4, 3, 2, 5, 1]


def test_rfc5256_sort_example_subject_reverse_date() -> None:
    # RFC 5256 §3 A283 SORT (SUBJECT REVERSE DATE): "* SORT 5 3 4 1 2"
    box = [
        mail(1, subject="b", day=1),
        mail(2, subject="c", day=1),
        mail(3, subject="Re: a", day=2),
        mail(4, subject="a", day=1),
        mail(5, subject="a", day=3),
    ]
    assert seqs(sort(box, [SortKey("SUBJECT"), SortKey("DATE", reverse=True)])) == [5, 3, 4, 1, 2]


# -- the wire form (RFC 5256 §4) -------------------------------------------------------------

RFC5256_ORDEREDSUBJECT = (
    b"(166)(167)(168)(169)(172)(170)(171)(173)(174 (175)(176)(178)(181)(180))(179)(177 (183)"
    b"(182)(188)(184)(185)(186)(187)(189))(190)(191)(192)(193)(194 195)(196 (197)(198))(199)"
    b"(200 202)(201)(203)(204)(205)(206 207)(208)"
)
RFC5256_REFERENCES = (
    b"(166)(167)(168)(169)(172)((170)(179))(171)(173)((174)(175)(176)(178)(181)(180))((177)"
    b"(183)(182)(188 (184)(189))(185 186)(187))(190)(191)(192)(193)((194)(195 196))(197 198)"
    b"(199)(200 202)(201)(203)(204)(205 206 207)(208)"
)


def test_render_rfc5256_section4_example() -> None:
    tree = [
        Thread(2),
        Thread(
            3,
            (
                Thread(
                    6,
                    (
                        Thread(4, (Thread(23),)),
                        Thread(44, (Thread(7, (Thread(96),)),)),
                    ),
                ),
            ),
        ),
    ]
    assert render_threads(tree) == b"(2)(3 6 (4 23)(44 7 96))"


def test_render_dummy_parent() -> None:
    assert render_threads([Thread(None, (Thread(3), Thread(5)))]) == b"((3)(5))"


def test_render_empty_result() -> None:
    assert render_threads([]) == b""


@pytest.mark.parametrize("wire", [RFC5256_ORDEREDSUBJECT, RFC5256_REFERENCES])
def test_render_reproduces_the_rfc5256_example_responses(wire: bytes) -> None:
    assert render_threads(parse_threads(wire)) == wire


def test_rfc5256_example_trees_have_the_expected_shape() -> None:
    threads = parse_threads(RFC5256_REFERENCES)
    assert threads[5] == Thread(None, (Thread(170), Thread(179)))
    assert threads[-2] == Thread(205, (Thread(206, (Thread(207),)),))


# -- THREAD=ORDEREDSUBJECT (RFC 5256 §2.1) ---------------------------------------------------


def test_orderedsubject_groups_by_base_subject_under_the_first_message() -> None:
    box = [
        mail(1, subject="Lunch", day=5),
        mail(2, subject="Report", day=1),
        mail(3, subject="Re: lunch", day=6),
        mail(4, subject="Re: Report", day=3),
        mail(5, subject="RE: report", day=2),
        mail(6, subject="single", day=4),
    ]
    threads = thread_orderedsubject(box)
    assert render_threads(threads) == b"(2 (5)(4))(6)(1 3)"


def test_orderedsubject_can_answer_with_uids() -> None:
    box = [mail(1, subject="a", day=1), mail(2, subject="re: a", day=2)]
    assert render_threads(thread_orderedsubject(box, uid=True)) == b"(10 20)"


def test_orderedsubject_breaks_date_ties_by_sequence_number() -> None:
    box = [mail(3, subject="x", day=1), mail(1, subject="x", day=1), mail(2, subject="y", day=1)]
    assert render_threads(thread_orderedsubject(box)) == b"(1 3)(2)"


# -- THREAD=REFERENCES (RFC 5256 §2.2) -------------------------------------------------------


def test_references_builds_the_rfc5256_section4_example() -> None:
    box = [
        mail(2, subject="two", mid="<2@x>", day=1),
        mail(3, subject="three", mid="<3@x>", day=2),
        mail(6, subject="Re: three", mid="<6@x>", refs="<3@x>", day=3),
        mail(4, subject="four", mid="<4@x>", refs="<3@x> <6@x>", day=4),
        mail(44, subject="forty-four", mid="<44@x>", refs="<3@x> <6@x>", day=5),
        mail(23, subject="Re: four", mid="<23@x>", refs="<3@x> <6@x> <4@x>", day=6),
        mail(7, subject="seven", mid="<7@x>", in_reply_to="<44@x> (forty-four)", day=7),
        mail(96, subject="Re: seven", mid="<96@x>", refs="<44@x> <7@x>", day=8),
    ]
    assert render_threads(thread_references(box)) == b"(2)(3 6 (4 23)(44 7 96))"


def test_references_answer_with_uids() -> None:
    box = [
        mail(1, subject="a", mid="<1@x>", day=1),
        mail(2, subject="b", mid="<2@x>", refs="<1@x>", day=2),
    ]
    assert thread_references(box, uid=True) == [Thread(10, (Thread(20),))]


def test_missing_parent_becomes_a_dummy_with_the_replies_under_it() -> None:
    box = [
        mail(3, subject="Re: q", mid="<3@x>", refs="<gone@x>", day=1),
        mail(5, subject="Re: q", mid="<5@x>", refs="<gone@x>", day=2),
    ]
    assert render_threads(thread_references(box)) == b"((3)(5))"


def test_dummy_with_one_child_is_replaced_by_the_child() -> None:
    box = [
        mail(1, subject="Re: lonely", mid="<1@x>", refs="<gone@x>", day=1),
        mail(2, subject="other", mid="<2@x>", day=2),
    ]
    assert render_threads(thread_references(box)) == b"(1)(2)"


def test_dummies_inside_a_thread_are_spliced_out() -> None:
    # 1 <- (missing m) <- 2 and 3: the missing middle message disappears
    box = [
        mail(1, subject="root", mid="<1@x>", day=1),
        mail(2, subject="Re: root", mid="<2@x>", refs="<1@x> <m@x>", day=2),
        mail(3, subject="Re: root", mid="<3@x>", refs="<1@x> <m@x>", day=3),
    ]
    assert render_threads(thread_references(box)) == b"(1 (2)(3))"


def test_truncated_references_are_corrected_by_the_last_reference() -> None:
    # 3's References (truncated) make 4 a child of 1; 4's own References say its parent is 2
    box = [
        mail(1, subject="a", mid="<1@x>", day=1),
        mail(2, subject="Re: a", mid="<2@x>", refs="<1@x>", day=2),
        mail(3, subject="Re: a", mid="<3@x>", refs="<1@x> <4@x>", day=4),
        mail(4, subject="Re: a", mid="<4@x>", refs="<1@x> <2@x>", day=3),
    ]
    assert render_threads(thread_references(box)) == b"(1 2 4 3)"


def test_reference_loop_is_broken_not_followed() -> None:
    # 1 says it replies to 2, 2 says it replies to 1; 3 lists itself around 1
    box = [
        mail(1, subject="Re: loop", mid="<a@x>", refs="<b@x>", day=1),
        mail(2, subject="Re: loop", mid="<b@x>", refs="<a@x>", day=2),
        mail(3, subject="Re: loop", mid="<c@x>", refs="<c@x> <a@x> <c@x>", day=3),
    ]
    # 2 became 1's parent first; making 1 the parent of 2 too would close the loop
    assert render_threads(thread_references(box)) == b"(2 1 3)"


def test_message_listing_itself_in_references_is_not_its_own_parent() -> None:
    box = [
        mail(1, subject="a", mid="<1@x>", day=1),
        mail(2, subject="Re: a", mid="<2@x>", refs="<1@x> <2@x>", day=2),
    ]
    assert render_threads(thread_references(box)) == b"(1 2)"


def test_duplicate_message_id_belongs_to_the_lowest_sequence_number() -> None:
    box = [
        mail(1, subject="first", mid="<dup@x>", day=1),
        mail(2, subject="second", mid="<dup@x>", day=2),
        mail(3, subject="Re: first", mid="<3@x>", refs="<dup@x>", day=3),
    ]
    assert render_threads(thread_references(box)) == b"(1 3)(2)"


def test_messages_without_message_id_still_thread_by_subject() -> None:
    box = [
        mail(1, subject="hello", day=1),
        mail(2, subject="Re: hello", day=2),
        mail(3, subject="unrelated", mid="bogus-without-brackets", day=3),
    ]
    assert render_threads(thread_references(box)) == b"(1 2)(3)"


def test_subject_gathering_makes_siblings_of_non_replies_under_a_dummy() -> None:
    box = [
        mail(1, subject="Meeting", mid="<1@x>", day=1),
        mail(2, subject="meeting", mid="<2@x>", day=2),
        mail(3, subject="other", mid="<3@x>", day=3),
    ]
    assert render_threads(thread_references(box)) == b"((1)(2))(3)"


def test_subject_gathering_puts_a_reply_under_the_original() -> None:
    # 1 is a reply by subject only (no References); 2 is the original, sent later
    box = [
        mail(1, subject="Re: plan", mid="<1@x>", day=1),
        mail(2, subject="plan", mid="<2@x>", day=2),
    ]
    assert render_threads(thread_references(box)) == b"(2 1)"


def test_subject_gathering_joins_a_dummy_thread() -> None:
    box = [
        mail(1, subject="Re: q", mid="<1@x>", refs="<gone@x>", day=1),
        mail(2, subject="Re: q", mid="<2@x>", refs="<gone@x>", day=3),
        mail(3, subject="q", mid="<3@x>", day=2),
        mail(4, subject="Re: q", mid="<4@x>", refs="<gone2@x>", day=4),
        mail(5, subject="Re: q", mid="<5@x>", refs="<gone2@x>", day=5),
    ]
    # both dummies merge (children become siblings); 3 joins as a sibling; sorted by date
    assert render_threads(thread_references(box)) == b"((1)(3)(2)(4)(5))"


def test_empty_subjects_are_never_gathered() -> None:
    box = [mail(1, subject="", mid="<1@x>", day=1), mail(2, subject="Re:", mid="<2@x>", day=2)]
    assert render_threads(thread_references(box)) == b"(1)(2)"


def test_siblings_and_threads_are_ordered_by_sent_date() -> None:
    box = [
        mail(1, subject="late root", mid="<1@x>", day=9),
        mail(2, subject="early root", mid="<2@x>", day=1),
        mail(3, subject="Re: late root", mid="<3@x>", refs="<1@x>", day=12),
        mail(4, subject="Re: late root", mid="<4@x>", refs="<1@x>", day=10),
    ]
    assert render_threads(thread_references(box)) == b"(2)(1 (4)(3))"


def test_deep_reply_chain_does_not_hit_the_recursion_limit() -> None:
    depth = 5000
    box = [mail(1, subject="deep", mid="<1@x>")]
    for n in range(2, depth + 1):
        box.append(mail(n, subject="Re: deep", mid=f"<{n}@x>", refs=f"<1@x> <{n - 1}@x>"))
    rendered = render_threads(thread_references(box))
    assert rendered == b"(" + b" ".join(str(n).encode() for n in range(1, depth + 1)) + b")"


# -- header interpretation -------------------------------------------------------------------


def test_message_id_and_references_extraction() -> None:
    msg = mail(
        1,
        mid="  <abc@host> trailing",
        refs="<r1@h>\r\n <r2@h> junk <not-an-id> <r3@h>",
        in_reply_to="<irt@h>",
    )
    assert message_id(msg) == "<abc@host>"
    assert references(msg) == ["<r1@h>", "<r2@h>", "<r3@h>"]
    assert references(mail(2, in_reply_to="Your message <irt@h> of Monday <x@y>")) == ["<irt@h>"]
    assert references(mail(3)) == []
    assert message_id(mail(4)) is None


# -- properties ------------------------------------------------------------------------------

_prefixes = st.sampled_from(["", "Re: ", "re:", "Fw: ", "FWD:", "[list] ", "Re[3]: ", " "])


@given(base=st.from_regex(r"[a-z][a-z ]{0,10}[a-z]", fullmatch=True), prefixes=st.lists(_prefixes))
def test_reply_prefixes_never_change_the_base_subject(base: str, prefixes: list[str]) -> None:
    assert base_subject("".join(prefixes) + base) == base_subject(base)


@given(subject=st.text(max_size=40))
def test_base_subject_is_idempotent(subject: str) -> None:
    once = base_subject(subject)
    assert base_subject(once) == once


_graph = st.lists(
    st.tuples(st.integers(0, 6), st.lists(st.integers(0, 8), max_size=4), st.integers(1, 5)),
    min_size=1,
    max_size=12,
)


@given(graph=_graph)
def test_references_threads_contain_each_message_exactly_once(
    graph: list[tuple[int, list[int], int]],
) -> None:
    box = [
        mail(
            seq,
            subject=["a", "Re: a", "b", "Re: b", ""][subject % 5],
            mid=f"<{mid}@x>",
            refs=" ".join(f"<{r}@x>" for r in refs),
            day=subject,
        )
        for seq, (mid, refs, subject) in enumerate(graph, start=1)
    ]
    rendered = render_threads(thread_references(box))
    numbers = rendered.replace(b"(", b" ").replace(b")", b" ").split()
    assert sorted(int(n) for n in numbers) == list(range(1, len(box) + 1))
    assert render_threads(parse_threads(rendered)) == rendered
