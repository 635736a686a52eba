"""The SEARCH TEXT/BODY shortcut may skip a message only when no decoding could match."""

from __future__ import annotations

import base64

from rmail.imap.parser.types import SearchAnd, SearchFlag, SearchNot, SearchText
from rmail.imap.state import _may_contain, _required_words


def test_a_message_without_the_word_and_without_encodings_is_skipped() -> None:
    assert not _may_contain(b"Subject: hi\r\n\r\nhello world\r\n", [b"xylophone"])


def test_the_word_in_any_case_is_found() -> None:
    assert _may_contain(b"Subject: hi\r\n\r\nA XyLoPhOnE\r\n", [b"xylophone"])


def test_a_base64_body_is_never_skipped() -> None:
    body = base64.b64encode(b"the xylophone plays")
    raw = b"Content-Transfer-Encoding: base64\r\n\r\n" + body + b"\r\n"
    assert _may_contain(raw, [b"xylophone"])


def test_an_encoded_word_header_is_never_skipped() -> None:
    assert _may_contain(b"Subject: =?utf-8?q?xylo?=\r\n\r\nx\r\n", [b"xylophone"])


def test_sharp_s_may_fold_to_ss() -> None:
    assert _may_contain("Subject: x\r\n\r\nStraße\r\n".encode(), [b"strasse"])


def test_only_positive_top_level_words_are_required() -> None:
    key = SearchAnd((SearchText("text", "Alpha"), SearchFlag("\\Seen")))
    assert _required_words(key) == [b"alpha"]
    assert _required_words(SearchNot(SearchText("text", "alpha"))) == []
    assert _required_words(SearchText("body", "two words")) == []
    assert _required_words(SearchText("body", "grüße")) == []
