"""FETCH data (rmail.imap.fetch) and IMAP wire rendering (rmail.imap.responses).

The expected FETCH output comes from real behaviour: ``tests/data/dovecot_expected.json`` holds
what Dovecot 2.3 answered for every fixture in ``tests/data/`` (regenerate it with
``tests/data/dovecot_collect.py``), and RFC 3501 §7.4.2 gives one example of its own.
Responses are compared as parsed IMAP values, so quoted-versus-literal choices do not count.
Where rmail deliberately answers differently, the case is listed in ``KNOWN_DIFFERENCES``
with the reason, and rmail's own behaviour is pinned by a test of its own.
"""

from __future__ import annotations

import base64
import datetime
import json
import pathlib
import re
import time
from typing import Final, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rmail.imap import fetch, responses
from rmail.imap.fetch import ParsedMessage
from rmail.imap.parser.types import FetchAttr, Section
from rmail.imap.responses import Code

DATA: Final = pathlib.Path(__file__).resolve().parent.parent / "data"
EXPECTED: Final[dict[str, dict[str, list[str | None]]]] = {
    name: items
    for name, items in json.loads((DATA / "dovecot_expected.json").read_text()).items()
    if not name.startswith("_")
}

# (fixture pattern, item pattern, reason): cases where rmail answers differently on purpose.
# Patterns are matched with re.match against the fixture file name and the FETCH item.
KNOWN_DIFFERENCES: Final = [
    (
        r".*",
        r"BINARY\.(PEEK|SIZE)\[(TEXT)?\]",
        "BINARY of the whole message is its raw octets; Dovecot decodes every nested part and "
        "rewrites its Content-Transfer-Encoding header (RFC 3516 defines BINARY on parts)",
    ),
    (
        r"nested_multipart",
        r"BINARY\.PEEK\[1(\.2)?\]",
        "BINARY of a multipart part is its raw octets (its encoding is an identity one, RFC "
        "2046 §5.1); Dovecot decodes the parts inside",
    ),
    (
        r"nested_multipart",
        r"BINARY\.SIZE\[(1|1\.1|3)\]",
        "Dovecot fails every BINARY.SIZE with UNKNOWN-CTE once any part of the message has an "
        "unknown encoding; rmail only fails for that part",
    ),
    (
        r"forward_rfc822",
        r"BINARY\.SIZE\[2\]",
        "Dovecot's BINARY.SIZE of a message/rfc822 part (365) disagrees with the length of its "
        "own BINARY (393); rmail gives the length of what BINARY sends",
    ),
    (
        r"rfc822_base64",
        r"BINARY\.(PEEK|SIZE)\[1\]",
        "a base64 message/rfc822 part (forbidden by RFC 2046 §5.2.1) is decoded by BINARY; "
        "Dovecot sends it encoded and says its size is 0",
    ),
    (
        r"boundary_edge_cases",
        r"BODY|BINARY",
        "a line that only starts with the delimiter (--Xtra) is content, RFC 2046 §5.1.1; "
        "Dovecot takes it for a delimiter",
    ),
    (
        r"mime_edge_cases",
        r"BODY(STRUCTURE)?$",
        "a Content-Type without subtype is invalid and means text/plain (RFC 2045 §5.2); "
        'Dovecot answers ("text" "")',
    ),
    (
        r"header_only",
        r"BODY\.PEEK\[HEADER\.FIELDS\.NOT",
        "HEADER.FIELDS.NOT always ends with the blank line, like HEADER.FIELDS; Dovecot omits "
        "it when the message has no body",
    ),
    (
        r"address_edge_cases",
        r"ENVELOPE",
        "the first Subject counts when there are two (Dovecot: the last) and empty address "
        "list elements are skipped, RFC 5322 §4.4 (Dovecot: MISSING_MAILBOX)",
    ),
]


# -- a small IMAP value reader, for comparing responses ---------------------------------------

ImapValue = None | int | bytes | list["ImapValue"]

_LITERAL_RE: Final = re.compile(rb"~?\{(\d+)\}\r\n")
_TOKEN_RE: Final = re.compile(rb"[^ ()\r\n]+")


def read_value(data: bytes, pos: int = 0) -> tuple[ImapValue, int]:
    """One IMAP value at ``pos``: NIL, number, string (quoted or literal) or list."""
    while data[pos : pos + 1] == b" ":
        pos += 1
    first = data[pos : pos + 1]
    if first == b"(":
        items: list[ImapValue] = []
        pos += 1
        while True:
            while data[pos : pos + 1] == b" ":
                pos += 1
            if data[pos : pos + 1] == b")":
                return items, pos + 1
            if pos >= len(data):
                raise ValueError("unterminated list")
            item, pos = read_value(data, pos)
            items.append(item)
    if first == b'"':
        out = bytearray()
        pos += 1
        while data[pos : pos + 1] != b'"':
            if pos >= len(data) or data[pos : pos + 1] in (b"\r", b"\n"):
                raise ValueError("bad quoted string")
            if data[pos : pos + 1] == b"\\":
                pos += 1
            out += data[pos : pos + 1]
            pos += 1
        return bytes(out), pos + 1
    literal = _LITERAL_RE.match(data, pos)
    if literal is not None:
        size = int(literal.group(1))
        if literal.end() + size > len(data):
            raise ValueError("short literal")
        return data[literal.end() : literal.end() + size], literal.end() + size
    token = _TOKEN_RE.match(data, pos)
    if token is None:
        raise ValueError(f"no value at {pos}: {data[pos : pos + 20]!r}")
    if token.group() == b"NIL":
        return None, token.end()
    if token.group().isdigit():
        return int(token.group()), token.end()
    return token.group(), token.end()


def read_all(data: bytes) -> ImapValue:
    value, end = read_value(data)
    assert end == len(data), f"trailing data: {data[end:]!r}"
    return value


def split_item(item: bytes) -> tuple[bytes, ImapValue]:
    """``NAME value`` of a FETCH item, the name including any ``[section]<origin>``."""
    match = re.match(rb"[A-Z0-9.]+(?:\[[^\]]*\])?(?:<\d+>)? ", item)
    assert match is not None, item
    return match.group().rstrip(), read_all(item[match.end() :])


_WHOLE_ITEMS: Final[
    tuple[
        Literal["ENVELOPE", "BODY", "BODYSTRUCTURE", "RFC822", "RFC822.HEADER", "RFC822.TEXT"], ...
    ]
] = ("ENVELOPE", "BODY", "BODYSTRUCTURE", "RFC822", "RFC822.HEADER", "RFC822.TEXT")
_ITEM_NAMES: Final[dict[str, Literal["BODY[]", "BINARY[]", "BINARY.SIZE[]"]]] = {
    "BODY.PEEK": "BODY[]",
    "BINARY.PEEK": "BINARY[]",
    "BINARY.SIZE": "BINARY.SIZE[]",
}


def fetch_attr(item: str) -> FetchAttr | None:
    """The FetchAttr for a FETCH item as the collection script wrote it."""
    for name in _WHOLE_ITEMS:
        if item == name:
            return FetchAttr(name)
    match = re.fullmatch(
        r"(BODY\.PEEK|BINARY\.PEEK|BINARY\.SIZE)\[([^\]]*)\](?:<(\d+)\.(\d+)>)?", item
    )
    if match is None:
        return None
    kind, spec, offset, length = match.groups()
    fields: tuple[str, ...] = ()
    field_list = re.search(r" \((.*)\)$", spec)
    if field_list is not None:
        fields = tuple(field_list.group(1).split())
        spec = spec[: field_list.start()]
    numbers: list[int] = []
    text: str | None = None
    for piece in spec.split(".") if spec else []:
        if piece.isdigit() and text is None:
            numbers.append(int(piece))
        else:
            text = piece if text is None else f"{text}.{piece}"
    return FetchAttr(
        _ITEM_NAMES[kind],
        Section(tuple(numbers), text, fields),  # type: ignore[arg-type]  # from Dovecot's list
        (int(offset), int(length)) if offset is not None else None,
        peek=kind != "BINARY.SIZE",
    )


def load(name: str) -> ParsedMessage:
    return ParsedMessage.parse((DATA / name).read_bytes())


def rendered(msg: ParsedMessage, item: str) -> bytes | None:
    """rmail's FETCH item, None when it answers NO [UNKNOWN-CTE]."""
    attr = fetch_attr(item)
    assert attr is not None
    try:
        return fetch.render_item(attr, msg)
    except fetch.UnknownTransferEncoding:
        return None


def _known_difference(fixture: str, item: str) -> str | None:
    for fixture_pattern, item_pattern, reason in KNOWN_DIFFERENCES:
        if re.match(fixture_pattern, fixture) and re.match(item_pattern, item):
            return reason
    return None


def _cases(known: bool) -> list[tuple[str, str]]:
    return [
        (fixture, item)
        for fixture, items in sorted(EXPECTED.items())
        for item in items
        if fetch_attr(item) is not None and (_known_difference(fixture, item) is not None) == known
    ]


def _same_as_dovecot(fixture: str, item: str) -> bool:
    status, text = EXPECTED[fixture][item]
    assert status is not None
    mine = rendered(load(fixture), item)
    if text is None or not status.startswith("OK"):
        return mine is None and "UNKNOWN-CTE" in status
    return mine is not None and split_item(mine) == split_item(text.encode("latin-1"))


# -- Dovecot parity ---------------------------------------------------------------------------


def test_every_fixture_has_dovecot_output() -> None:
    fixtures = {path.name for path in DATA.glob("*.eml")}
    assert fixtures == set(EXPECTED)


@pytest.mark.parametrize(("fixture", "item"), _cases(known=False))
def test_fetch_item_matches_dovecot(fixture: str, item: str) -> None:
    status, text = EXPECTED[fixture][item]
    mine = rendered(load(fixture), item)
    assert status is not None
    if text is None or not status.startswith("OK"):
        assert "UNKNOWN-CTE" in status
        assert mine is None
        return
    assert mine is not None
    assert split_item(mine) == split_item(text.encode("latin-1"))


@pytest.mark.parametrize(
    ("fixture_pattern", "item_pattern", "reason"),
    KNOWN_DIFFERENCES,
    ids=[f"{f}:{i}" for f, i, _ in KNOWN_DIFFERENCES],
)
def test_each_known_difference_is_real(
    fixture_pattern: str, item_pattern: str, reason: str
) -> None:
    matching = [
        (fixture, item)
        for fixture, item in _cases(known=True)
        if re.match(fixture_pattern, fixture) and re.match(item_pattern, item)
    ]
    assert matching, reason
    assert any(not _same_as_dovecot(fixture, item) for fixture, item in matching), reason


# -- RFC 3501 §7.4.2 example ----------------------------------------------------------------


def test_rfc3501_example_envelope_is_reproduced_exactly() -> None:
    msg = load("rfc3501_example.eml")
    assert fetch.envelope(msg) == (
        b'("Wed, 17 Jul 1996 02:23:25 -0700 (PDT)" "IMAP4rev1 WG mtg summary and minutes" '
        b'(("Terry Gray" NIL "gray" "cac.washington.edu")) '
        b'(("Terry Gray" NIL "gray" "cac.washington.edu")) '
        b'(("Terry Gray" NIL "gray" "cac.washington.edu")) '
        b'((NIL NIL "imap" "cac.washington.edu")) '
        b'((NIL NIL "minutes" "CNRI.Reston.VA.US")("John Klensin" NIL "KLENSIN" "MIT.EDU")) '
        b'NIL NIL "<B27397-0100000@cac.washington.edu>")'
    )


def test_rfc3501_example_body_matches_up_to_case() -> None:
    # The RFC shows upper case; Dovecot (and rmail) write the text/plain default in lower
    # case. Body type strings are case-insensitive (RFC 2045 §5.1).
    body = fetch.bodystructure(load("rfc3501_example.eml"), extensible=False)
    assert body.upper() == b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 3028 92)'


# -- sections -------------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", sorted(EXPECTED))
def test_header_and_text_sections_split_the_message_exactly(fixture: str) -> None:
    msg = load(fixture)
    whole = fetch.section(msg, Section())
    assert whole == (DATA / fixture).read_bytes()
    assert (
        fetch.section(msg, Section(text="HEADER")) + fetch.section(msg, Section(text="TEXT"))
        == whole
    )


def test_part_sections_are_slices_of_the_stored_bytes() -> None:
    msg = load("forward_rfc822.eml")
    raw = msg.raw
    for path in [(1,), (2,), (2, 1), (2, 2), (3,)]:
        for text in (None, "MIME"):
            data = fetch.section(msg, Section(path, text))
            assert data in raw
    assert fetch.section(msg, Section((2,), "HEADER")) + fetch.section(
        msg, Section((2,), "TEXT")
    ) == fetch.section(msg, Section((2,)))


def test_header_fields_keep_folding_and_message_order() -> None:
    msg = load("simple_text.eml")
    data = fetch.section(msg, Section(text="HEADER.FIELDS", fields=("subject", "FROM")))
    assert data == (
        b"From: Alice Example <alice@example.org>\r\n"
        b"Subject: Hello\r\n there, folded subject\r\n"
        b"\r\n"
    )


def test_header_fields_not_always_ends_with_a_blank_line() -> None:
    msg = load("header_only.eml")
    data = fetch.section(msg, Section(text="HEADER.FIELDS.NOT", fields=("From", "Subject")))
    assert data == b"To: x@example.com\r\n\r\n"


def test_missing_part_is_empty() -> None:
    msg = load("multipart_alternative.eml")
    assert fetch.section(msg, Section((7,))) == b""
    assert fetch.section(msg, Section((1, 2))) == b""
    assert fetch.section(msg, Section((1,), "HEADER")) == b""  # not a message/rfc822 part


def test_part_one_of_a_single_part_message_is_its_body() -> None:
    msg = load("simple_text.eml")
    assert fetch.section(msg, Section((1,))) == msg.text
    assert fetch.section(msg, Section((1,), "MIME")) == msg.header


def test_nested_message_parts_are_numbered_inside_the_message() -> None:
    msg = load("rfc822_toplevel.eml")
    inner = b"Inner body line 1\r\nInner body line 2\r\n"
    assert fetch.section(msg, Section((1, 1))) == inner
    assert fetch.section(msg, Section((1,), "TEXT")) == inner
    assert fetch.section(msg, Section((1,), "HEADER")).startswith(b"From: inner@example.org")


def test_partial_gives_empty_octets_past_the_end() -> None:
    assert fetch.partial(b"abcdef", 2, 3) == b"cde"
    assert fetch.partial(b"abcdef", 4, 10) == b"ef"
    assert fetch.partial(b"abcdef", 10, 1) == b""


def test_line_that_only_starts_with_the_delimiter_is_content() -> None:
    msg = load("boundary_edge_cases.eml")
    first = fetch.section(msg, Section((1,)))
    assert b"--Xtra is not a boundary" in first
    assert len(msg.root.children) == 2


# -- ENVELOPE ------------------------------------------------------------------------------


def test_first_subject_counts_and_empty_list_elements_are_skipped() -> None:
    envelope = read_all(fetch.envelope(load("address_edge_cases.eml")))
    assert isinstance(envelope, list)
    assert envelope[1] == b'=?utf-8?q?partially?= encoded and "quoted" \\back'
    assert envelope[5] == [
        [None, None, b"bare", b"example.org"],
        [None, None, b"empty", b"example.org"],
        [None, None, b"a", b"example.org"],
        [None, None, b"c", b"example.org"],
    ]


def test_group_syntax_gives_start_and_end_markers() -> None:
    envelope = read_all(fetch.envelope(load("group_address.eml")))
    assert isinstance(envelope, list)
    assert envelope[5] == [[None, None, b"undisclosed-recipients", None], [None] * 4]
    assert envelope[6] == [
        [None, None, b"Team A", None],
        [None, None, b"alice", b"example.org"],
        [b"Bob B.", None, b"bob", b"example.org"],
        [None] * 4,
        [None, None, b"solo", b"example.net"],
    ]


def test_eight_bit_envelope_strings_are_quoted_once_utf8_is_enabled() -> None:
    msg = load("utf8_headers.eml")
    assert b"{" in fetch.envelope(msg)
    utf8 = fetch.envelope(msg, utf8=True)
    assert b"{" not in utf8
    assert '"Jürgen Müller" NIL "juergen" "example.de"'.encode() in utf8


def test_envelope_of_a_message_without_header_fields_is_all_nil() -> None:
    assert (
        fetch.envelope(ParsedMessage.parse(b"\r\nbody\r\n"))
        == b"(" + b" ".join([b"NIL"] * 10) + b")"
    )


_atom = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)


@given(
    st.lists(
        st.tuples(
            st.none() | st.lists(_atom, min_size=1, max_size=3).map(" ".join),
            st.lists(_atom, min_size=1, max_size=3).map(".".join),
            st.lists(_atom, min_size=1, max_size=3).map(".".join),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_address_lists_round_trip(addresses: list[tuple[str | None, str, str]]) -> None:
    value = ", ".join(
        f"{local}@{domain}" if name is None else f"{name} <{local}@{domain}>"
        for name, local, domain in addresses
    )
    raw = f"From: {value}\r\n\r\n".encode()
    envelope = read_all(fetch.envelope(ParsedMessage.parse(raw)))
    assert isinstance(envelope, list)
    assert envelope[2] == [
        [None if name is None else name.encode(), None, local.encode(), domain.encode()]
        for name, local, domain in addresses
    ]


@given(st.text(alphabet='ab .@<>,"();:\\[]\t', max_size=30))
def test_fast_address_path_agrees_with_the_full_parser(value: str) -> None:
    simple = fetch._simple_address_list(value)
    if simple is not None:
        assert simple == fetch._parse_address_tokens(value)


# -- BODYSTRUCTURE ----------------------------------------------------------------------------


def test_content_type_without_subtype_means_text_plain() -> None:
    body = read_all(fetch.bodystructure(load("mime_edge_cases.eml"), extensible=False))
    assert isinstance(body, list)
    assert body[0] == [b"text", b"plain", [b"charset", b"us-ascii"], None, None, b"7bit", 10, 0]


def test_multipart_digest_parts_default_to_message_rfc822() -> None:
    body = read_all(fetch.bodystructure(load("multipart_digest.eml"), extensible=True))
    assert isinstance(body, list)
    first = body[0]
    assert isinstance(first, list)
    assert first[:2] == [b"message", b"rfc822"]


def test_deep_nesting_is_cut_off_without_recursion_errors() -> None:
    raw = b"".join(
        b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i) for i in range(300)
    )
    msg = ParsedMessage.parse(raw + b"\r\nleaf\r\n")
    read_all(fetch.bodystructure(msg, extensible=True))
    rfc822 = ParsedMessage.parse(b"Content-Type: message/rfc822\r\n\r\n" * 300 + b"x")
    body = fetch.bodystructure(rfc822, extensible=False)
    read_all(body)
    assert b'"application" "octet-stream"' in body


def _mime_tree(depth: int) -> st.SearchStrategy[object]:
    line = st.text(alphabet="abc xyz=.", max_size=12)
    leaf = st.lists(line, max_size=4).map(lambda lines: "\r\n".join(lines).encode())
    if depth == 0:
        return leaf
    return leaf | st.lists(_mime_tree(depth - 1), min_size=1, max_size=3)


def _render_tree(tree: object, path: str, leaves: dict[tuple[int, ...], bytes]) -> bytes:
    """A MIME entity (header + body) for a generated tree; records each leaf's body."""
    if isinstance(tree, bytes):
        key = tuple(int(n) for n in path.split(".") if n)
        leaves[key or (1,)] = tree
        return b"Content-Type: text/plain\r\n\r\n" + tree
    assert isinstance(tree, list)
    boundary = b"=_b" + path.encode()
    out = [b'Content-Type: multipart/mixed; boundary="' + boundary + b'"\r\n\r\n']
    for index, child in enumerate(tree, start=1):
        child_path = f"{path}.{index}" if path else str(index)
        out.append(b"--" + boundary + b"\r\n" + _render_tree(child, child_path, leaves) + b"\r\n")
    out.append(b"--" + boundary + b"--\r\n")
    return b"".join(out)


@given(_mime_tree(3))
def test_generated_mime_trees_give_back_every_part(tree: object) -> None:
    leaves: dict[tuple[int, ...], bytes] = {}
    msg = ParsedMessage.parse(b"Subject: t\r\n" + _render_tree(tree, "", leaves))
    read_all(fetch.bodystructure(msg, extensible=True))
    for path, body in leaves.items():
        assert fetch.section(msg, Section(path)) == body


# -- BINARY (RFC 3516) ------------------------------------------------------------------------


def test_binary_decodes_base64_and_sends_a_literal8_for_binary_data() -> None:
    msg = load("multipart_mixed_attachment.eml")
    item = fetch.render_item(FetchAttr("BINARY[]", Section((2,))), msg)
    assert item.startswith(b"BINARY[2] ~{768}\r\n")
    assert item.endswith(bytes(range(256)))
    assert fetch.binary_size(msg, Section((2,))) == 768


def test_binary_sends_decoded_8bit_text_as_a_plain_literal() -> None:
    # RFC 3516 §4.3: 8bit data without NUL SHOULD be a string (Dovecot uses literal8).
    item = fetch.render_item(FetchAttr("BINARY[]", Section((1,))), load("odd_headers.eml"))
    assert item == b"BINARY[1] {8}\r\nbody \xe9\r\n"


def test_binary_of_a_multipart_is_its_raw_octets() -> None:
    msg = load("nested_multipart.eml")
    assert fetch.binary_section(msg, Section((1,))) == fetch.section(msg, Section((1,)))


def test_binary_size_of_a_message_part_is_the_length_of_its_binary() -> None:
    msg = load("forward_rfc822.eml")
    data = fetch.binary_section(msg, Section((2,)))
    assert data is not None
    assert fetch.binary_size(msg, Section((2,))) == len(data) == 393


def test_binary_decodes_an_encoded_message_rfc822_part() -> None:
    msg = load("rfc822_base64.eml")
    assert fetch.binary_section(msg, Section((1,))) == b"Subject: inner\r\n\r\nhello\r\n"


def test_binary_of_an_unknown_encoding_says_unknown_cte() -> None:
    msg = load("nested_multipart.eml")
    assert fetch.binary_section(msg, Section((2,))) is None
    assert fetch.binary_size(msg, Section((2,))) is None
    with pytest.raises(fetch.UnknownTransferEncoding):
        fetch.render_item(FetchAttr("BINARY[]", Section((2,))), msg)


def test_quoted_printable_soft_breaks_and_padding_are_removed() -> None:
    raw = (
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        b"a=3Db soft=  \r\nbreak\r\ntrailing   \r\n"
    )
    msg = ParsedMessage.parse(raw)
    assert fetch.binary_section(msg, Section((1,))) == b"a=b softbreak\r\ntrailing\r\n"


def test_base64_with_junk_and_missing_padding_still_decodes() -> None:
    encoded = base64.b64encode(b"hello world").rstrip(b"=")
    raw = b"Content-Transfer-Encoding: base64\r\n\r\n" + encoded[:6] + b"\r\n*" + encoded[6:]
    assert fetch.binary_section(ParsedMessage.parse(raw), Section((1,))) == b"hello world"


# -- render_item ----------------------------------------------------------------------------


def test_partial_fetch_echoes_only_the_origin() -> None:
    msg = load("simple_text.eml")
    item = fetch.render_item(FetchAttr("BODY[]", Section(), (0, 6), peek=True), msg)
    assert item == b"BODY[]<0> {6}\r\nReturn"


def test_header_fields_item_echoes_the_field_names() -> None:
    msg = load("simple_text.eml")
    attr = FetchAttr("BODY[]", Section((), "HEADER.FIELDS", ("From", "X Y")))
    item = fetch.render_item(attr, msg)
    assert item.startswith(b'BODY[HEADER.FIELDS (From "X Y")] {')


def test_rfc822_items_keep_their_names() -> None:
    msg = load("simple_text.eml")
    assert fetch.render_item(FetchAttr("RFC822"), msg) == b"RFC822 " + responses.literal(msg.raw)
    header = fetch.render_item(FetchAttr("RFC822.HEADER"), msg)
    assert header == b"RFC822.HEADER " + responses.literal(msg.header)
    text = fetch.render_item(FetchAttr("RFC822.TEXT"), msg)
    assert text == b"RFC822.TEXT " + responses.literal(msg.text)


def test_index_items_are_left_to_the_server() -> None:
    with pytest.raises(ValueError, match="FLAGS"):
        fetch.render_item(FetchAttr("FLAGS"), load("simple_text.eml"))


_FRAGMENTS = st.sampled_from(
    [
        b"Content-Type: multipart/mixed; boundary=x\r\n", b"--x\r\n", b"--x--\r\n", b"\r\n",
        b"From: a@b\r\n", b"To: \"q\\\" <\r\n", b"Content-Type: message/rfc822\r\n", b"text\r\n",
        b"Content-Transfer-Encoding: base64\r\n", b"Content-Disposition: a; b*0*=x\r\n",
        b"=?x?q?y?=", b"\n", b"\r", b"(", b'"', b"<", b">", b"@", b",", b";", b":", b" ",
        b"\x00", b"\xff", b"Content-Transfer-Encoding: (x)\r\n", b"Date: ", b"99", b"-0000",
        b"Content-Type: text/plain; charset=base64\r\n", b"Content-Type: (c)\r\n",
    ]
)  # fmt: skip


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=300)
@given(st.lists(_FRAGMENTS | st.binary(max_size=4), max_size=40).map(b"".join))
def test_any_bytes_give_well_formed_fetch_data(raw: bytes) -> None:
    msg = ParsedMessage.parse(raw)
    read_all(fetch.envelope(msg))
    read_all(fetch.bodystructure(msg, extensible=True))
    read_all(fetch.bodystructure(msg, extensible=False))
    for path in [(), (1,), (1, 1), (2,), (1, 2, 1)]:
        for text in (None, "MIME", "HEADER", "TEXT"):
            spec = Section(path, text)
            assert fetch.section(msg, spec) in raw
            fetch.binary_section(msg, spec)
    fetch.header_value(msg, "subject")
    fetch.text_content(msg)
    fetch.sent_date(msg)


# -- decoded values for SEARCH and SORT ------------------------------------------------------


def test_header_value_decodes_encoded_words() -> None:
    msg = load("encoded_word_subject.eml")
    assert fetch.header_value(msg, "Subject") == ["Ça va bien ? et toi?"]
    assert fetch.header_value(msg, "from") == ["Renée Dupont <renee@example.fr>"]
    assert fetch.header_value(msg, "X-Missing") == []


def test_header_value_reads_raw_utf8_and_lists_every_occurrence() -> None:
    assert fetch.header_value(load("utf8_headers.eml"), "From") == [
        "Jürgen Müller <juergen@example.de>"
    ]
    assert fetch.header_value(load("address_edge_cases.eml"), "subject")[1] == (
        "second subject header"
    )


def test_text_content_decodes_transfer_encoding_and_charset() -> None:
    assert "Bonjour André,\r\nÇa va?" in fetch.text_content(load("encoded_word_subject.eml"))
    text = fetch.text_content(load("multipart_alternative.eml"))
    assert "Café menu: soup = good." in text
    assert "<html><body><p>Café menu" in text
    forward = fetch.text_content(load("forward_rfc822.eml"))
    assert "Inner plain text." in forward
    assert "iVBOR" not in forward  # the image is not text


def test_sent_date_is_timezone_aware() -> None:
    when = fetch.sent_date(load("rfc3501_example.eml"))
    assert when == datetime.datetime(
        1996, 7, 17, 2, 23, 25, tzinfo=datetime.timezone(datetime.timedelta(hours=-7))
    )
    unknown_zone = fetch.sent_date(ParsedMessage.parse(b"Date: 1 Jan 2024 10:00 -0000\r\n\r\n"))
    assert unknown_zone == datetime.datetime(2024, 1, 1, 10, 0, tzinfo=datetime.UTC)
    assert fetch.sent_date(load("odd_headers.eml")) is None
    assert fetch.sent_date(load("header_only.eml")) is None


def test_header_addresses_for_sort() -> None:
    assert fetch.header_addresses(load("simple_text.eml"), "To") == [
        fetch.Address("Bob", None, "bob", "example.com"),
        fetch.Address(None, None, "carol", "example.com"),
    ]


# -- performance ----------------------------------------------------------------------------


def test_fetch_envelope_of_5000_messages_is_fast() -> None:
    raws = [path.read_bytes() for path in sorted(DATA.glob("*.eml"))]
    messages = (raws * (5000 // len(raws) + 1))[:5000]
    attr = FetchAttr("ENVELOPE")
    start = time.perf_counter()
    for raw in messages:
        fetch.render_item(attr, ParsedMessage.parse(raw))
    elapsed = time.perf_counter() - start
    assert elapsed < 3.0, f"{elapsed:.2f}s for 5000 ENVELOPEs"  # about 0.2s on a laptop


# -- responses ------------------------------------------------------------------------------


def test_quoted_escapes_quotes_and_backslashes() -> None:
    assert responses.quoted('say "hi" \\o/') == b'"say \\"hi\\" \\\\o/"'
    assert responses.quoted("") == b'""'


def test_quoted_falls_back_to_a_literal_when_unsafe() -> None:
    assert responses.quoted(b"a\r\nb") == b"{4}\r\na\r\nb"
    assert responses.quoted(b"a\x00b") == b"{3}\r\na\x00b"
    assert responses.quoted("é") == b"{2}\r\n\xc3\xa9"
    assert responses.quoted("é", utf8=True) == b'"\xc3\xa9"'


def test_literal8_is_announced_with_a_tilde() -> None:
    assert responses.literal(b"\x00\x01", binary=True) == b"~{2}\r\n\x00\x01"
    assert responses.literal(b"") == b"{0}\r\n"


def test_astring_is_an_atom_when_it_can_be() -> None:
    assert responses.astring("INBOX") == b"INBOX"
    assert responses.astring("a]b") == b"a]b"
    assert responses.astring("a b") == b'"a b"'
    assert responses.astring("") == b'""'
    assert responses.astring("nil") == b'"nil"'
    assert responses.astring("a%") == b'"a%"'


def test_nstring_and_string() -> None:
    assert responses.nstring(None) == b"NIL"
    assert responses.nstring("x") == b'"x"'
    assert responses.string("NIL") == b'"NIL"'


def test_flags_list_renders_system_flags_and_keywords() -> None:
    assert responses.flags_list(["\\Seen", "$Forwarded", "\\*"]) == b"(\\Seen $Forwarded \\*)"
    assert responses.flags_list([]) == b"()"
    with pytest.raises(ValueError, match="flag"):
        responses.flags_list(["bad flag"])


def test_internaldate_uses_english_months_and_the_zone() -> None:
    assert responses.internaldate(0) == b'"01-Jan-1970 00:00:00 +0000"'
    # RFC 3501 §7.4.2 example: 17-Jul-1996 02:44:25 -0700
    ts = int(datetime.datetime(1996, 7, 17, 9, 44, 25, tzinfo=datetime.UTC).timestamp())
    assert responses.internaldate(ts, -420) == b'"17-Jul-1996 02:44:25 -0700"'
    assert responses.internaldate(ts, 330) == b'"17-Jul-1996 15:14:25 +0530"'


def test_sequence_set_compacts_runs() -> None:
    assert responses.sequence_set([1, 2, 3, 4, 5, 7, 9, 10]) == b"1:5,7,9:10"
    assert responses.sequence_set([10, 9, 1, 1]) == b"1,9:10"
    assert responses.sequence_set([5, 6, 2, 3], sort=False) == b"5:6,2:3"
    with pytest.raises(ValueError, match="empty"):
        responses.sequence_set([])
    with pytest.raises(ValueError, match="start at 1"):
        responses.sequence_set([0, 1])


def _expand(sequence_set: bytes) -> list[int]:
    out: list[int] = []
    for item in sequence_set.split(b","):
        low, _, high = item.partition(b":")
        out.extend(range(int(low), int(high or low) + 1))
    return out


@given(st.lists(st.integers(min_value=1, max_value=200), min_size=1))
def test_sequence_set_round_trips(numbers: list[int]) -> None:
    assert _expand(responses.sequence_set(numbers)) == sorted(set(numbers))
    assert _expand(responses.sequence_set(numbers, sort=False)) == numbers


_ASTRING_ATOM_RE: Final = re.compile(rb'[^\x00-\x20\x7f-\xff(){%*"\\]+')


@given(st.binary(max_size=40), st.booleans())
def test_quoted_and_astring_round_trip(data: bytes, utf8: bool) -> None:
    assert read_all(responses.quoted(data, utf8=utf8)) == data
    rendered = responses.astring(data, utf8=utf8)
    if rendered == data:
        assert _ASTRING_ATOM_RE.fullmatch(data)
        assert data.upper() != b"NIL"
    else:
        assert read_all(rendered) == data


@given(st.text(max_size=60))
def test_header_decoding_never_fails(value: str) -> None:
    raw = (
        b"Subject: "
        + value.encode("utf-8", "surrogatepass")
        + b"\r\nDate: "
        + (value.encode("utf-8", "surrogatepass") + b"\r\n\r\n")
    )
    msg = ParsedMessage.parse(raw)
    fetch.header_value(msg, "subject")
    fetch.header_text(msg)
    fetch.sent_date(msg)
    read_all(fetch.envelope(msg))


def test_tagged_untagged_and_continuation_lines() -> None:
    assert responses.tagged("A1", "OK", "done") == b"A1 OK done\r\n"
    assert (
        responses.tagged(b"A2", "NO", "no such mailbox", code=Code.TRYCREATE)
        == b"A2 NO [TRYCREATE] no such mailbox\r\n"
    )
    code = responses.response_code(Code.COPYUID, 7, responses.sequence_set([1, 2]), b"5:6")
    assert (
        responses.tagged("A3", "OK", "copied", code=code) == b"A3 OK [COPYUID 7 1:2 5:6] copied\r\n"
    )
    assert responses.untagged(b"3 EXISTS") == b"* 3 EXISTS\r\n"
    assert (
        responses.untagged_status("OK", "UIDs valid", responses.response_code(Code.UIDVALIDITY, 9))
        == b"* OK [UIDVALIDITY 9] UIDs valid\r\n"
    )
    assert responses.continuation() == b"+ \r\n"
    assert responses.continuation(b"idling") == b"+ idling\r\n"
    fetched = responses.fetch_response(4, [b"UID 9", b"BODY[] " + responses.literal(b"hi")])
    assert fetched == b"* 4 FETCH (UID 9 BODY[] {2}\r\nhi)\r\n"
    assert responses.fetch_response(4, []) == b"* 4 FETCH ()\r\n"


def test_response_text_cannot_start_a_new_line() -> None:
    line = responses.tagged("A1", "NO", "bad\r\n* BYE injected")
    assert line == b"A1 NO bad  * BYE injected\r\n"
    assert line.count(b"\r\n") == 1


def test_codes_use_their_wire_names() -> None:
    assert Code.READ_ONLY.value == "READ-ONLY"
    assert Code.UNKNOWN_CTE.value == "UNKNOWN-CTE"
    wanted = [
        "ALERT",
        "BADCHARSET",
        "CAPABILITY",
        "PARSE",
        "PERMANENTFLAGS",
        "READ-ONLY",
        "READ-WRITE",
        "TRYCREATE",
        "UIDNEXT",
        "UIDVALIDITY",
        "UNSEEN",
        "APPENDUID",
        "COPYUID",
        "UIDNOTSTICKY",
        "HIGHESTMODSEQ",
        "NOMODSEQ",
        "MODIFIED",
        "CLOSED",
        "NONEXISTENT",
        "ALREADYEXISTS",
        "OVERQUOTA",
        "NOPERM",
        "INUSE",
        "CANNOT",
        "LIMIT",
        "AUTHENTICATIONFAILED",
        "UNAVAILABLE",
        "SERVERBUG",
        "CLIENTBUG",
        "TOOBIG",
        "EXPUNGEISSUED",
        "CONTACTADMIN",
        "PRIVACYREQUIRED",
        "UNKNOWN-CTE",
        "HASCHILDREN",
    ]
    assert sorted(code.value for code in Code) == sorted(wanted)
