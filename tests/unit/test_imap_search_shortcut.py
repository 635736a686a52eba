"""The SEARCH TEXT/BODY shortcut may skip a message only when no decoding could match."""

from __future__ import annotations

import base64

from rmail.imap.fetch import ParsedMessage, body_text_as_stored, header_text_as_stored
from rmail.imap.parser.types import SearchAnd, SearchFlag, SearchNot, SearchOr, SearchText
from rmail.imap.state import _has_encoding, _lacks_a_word, _required_words, _text_keys


def lacks(raw: bytes, word: bytes) -> bool:
    return _lacks_a_word(raw, raw.lower(), [word])


def as_stored(raw: bytes) -> tuple[bool, bool]:
    parsed = ParsedMessage.parse(raw)
    return header_text_as_stored(parsed), body_text_as_stored(parsed)


def test_a_message_without_the_word_and_without_encodings_is_skipped() -> None:
    raw = b"Subject: hi\r\n\r\nhello world\r\n"
    assert lacks(raw, b"xylophone")
    assert not _has_encoding(raw.lower())


def test_the_word_in_any_case_is_found() -> None:
    assert not lacks(b"Subject: hi\r\n\r\nA XyLoPhOnE\r\n", b"xylophone")


def test_a_base64_body_is_never_skipped() -> None:
    body = base64.b64encode(b"the xylophone plays")
    raw = b"Content-Transfer-Encoding: base64\r\n\r\n" + body + b"\r\n"
    assert lacks(raw, b"xylophone") and _has_encoding(raw.lower())
    assert as_stored(raw) == (True, False)


def test_an_encoded_word_header_is_never_skipped() -> None:
    raw = b"Subject: =?utf-8?q?xylo?=\r\n\r\nx\r\n"
    assert lacks(raw, b"xylophone") and _has_encoding(raw.lower())
    assert as_stored(raw) == (False, True)


def test_a_base64_attachment_beside_a_plain_text_part_reads_as_stored() -> None:
    raw = (
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\nhello\r\n--b\r\n"
        b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.b64encode(b"xylophone")
        + b"\r\n--b--\r\n"
    )
    assert lacks(raw, b"xylophone") and _has_encoding(raw.lower())
    assert as_stored(raw) == (True, True)


def test_a_quoted_printable_utf16_or_8bit_latin1_text_part_does_not_read_as_stored() -> None:
    for header in (
        b"Content-Transfer-Encoding: quoted-printable\r\n",
        b"Content-Type: text/plain; charset=utf-16\r\n",
        b"Content-Type: text/plain; charset=iso-8859-1\r\n",
    ):
        raw = b"Subject: x\r\n" + header + b"\r\nxylo=\r\nphone \xe9\r\n"
        assert as_stored(raw) == (True, False), header


def test_sharp_s_may_fold_to_ss() -> None:
    assert not lacks("Subject: x\r\n\r\nStraße\r\n".encode(), b"strasse")
    raw = "Subject: x\r\nContent-Transfer-Encoding: base64\r\n\r\nStraße\r\n".encode()
    assert not lacks(raw, b"strasse")


def test_only_positive_top_level_words_are_required() -> None:
    key = SearchAnd((SearchText("text", "Alpha"), SearchFlag("\\Seen")))
    assert _required_words(key) == [b"alpha"]
    assert _required_words(SearchNot(SearchText("text", "alpha"))) == []
    assert _required_words(SearchText("body", "two words")) == []
    assert _required_words(SearchText("body", "grüße")) == []


def test_text_keys_are_counted_at_any_depth() -> None:
    key = SearchAnd((
        SearchText("text", "a"),
        SearchOr(SearchText("body", "b"), SearchNot(SearchText("text", "c"))),
    ))  # fmt: skip
    assert _text_keys(key) == 3
    assert len(_required_words(key)) == 1
