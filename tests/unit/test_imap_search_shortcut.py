"""The SEARCH TEXT/BODY shortcut may skip a message only when no decoding could match."""

from __future__ import annotations

import base64

from rmail.imap.fetch import ParsedMessage, text_as_stored
from rmail.imap.parser.types import SearchAnd, SearchFlag, SearchNot, SearchText
from rmail.imap.state import _may_contain, _required_words


def test_a_message_without_the_word_and_without_encodings_is_skipped() -> None:
    assert not _may_contain(b"Subject: hi\r\n\r\nhello world\r\n", [b"xylophone"])


def test_the_word_in_any_case_is_found() -> None:
    assert _may_contain(b"Subject: hi\r\n\r\nA XyLoPhOnE\r\n", [b"xylophone"])


def test_a_base64_body_is_never_skipped() -> None:
    body = base64.b64encode(b"the xylophone plays")
    raw = b"Content-Transfer-Encoding: base64\r\n\r\n" + body + b"\r\n"
    assert _may_contain(raw, [b"xylophone"]) is None
    assert not text_as_stored(ParsedMessage.parse(raw))


def test_an_encoded_word_header_is_never_skipped() -> None:
    raw = b"Subject: =?utf-8?q?xylo?=\r\n\r\nx\r\n"
    assert _may_contain(raw, [b"xylophone"]) is None
    assert not text_as_stored(ParsedMessage.parse(raw))


def test_a_base64_attachment_beside_a_plain_text_part_reads_as_stored() -> None:
    raw = (
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\nhello\r\n--b\r\n"
        b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.b64encode(b"xylophone")
        + b"\r\n--b--\r\n"
    )
    assert _may_contain(raw, [b"xylophone"]) is None
    assert text_as_stored(ParsedMessage.parse(raw))


def test_a_quoted_printable_or_utf16_text_part_does_not_read_as_stored() -> None:
    for header in (
        b"Content-Transfer-Encoding: quoted-printable\r\n",
        b"Content-Type: text/plain; charset=utf-16\r\n",
        b"Content-Type: text/plain; charset=iso-8859-1\r\n",
    ):
        raw = b"Subject: x\r\n" + header + b"\r\nxylo=\r\nphone \xe9\r\n"
        assert not text_as_stored(ParsedMessage.parse(raw)), header


def test_sharp_s_may_fold_to_ss() -> None:
    assert _may_contain("Subject: x\r\n\r\nStraße\r\n".encode(), [b"strasse"])
    raw = "Subject: x\r\nContent-Transfer-Encoding: base64\r\n\r\nStraße\r\n".encode()
    assert _may_contain(raw, [b"strasse"])


def test_only_positive_top_level_words_are_required() -> None:
    key = SearchAnd((SearchText("text", "Alpha"), SearchFlag("\\Seen")))
    assert _required_words(key) == [b"alpha"]
    assert _required_words(SearchNot(SearchText("text", "alpha"))) == []
    assert _required_words(SearchText("body", "two words")) == []
    assert _required_words(SearchText("body", "grüße")) == []
