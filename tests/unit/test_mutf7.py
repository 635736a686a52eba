"""Modified UTF-7 mailbox names (RFC 3501 §5.1.3): known vectors, strictness, round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rmail.imap import mutf7

# -- known vectors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "encoded"),
    [
        ("INBOX", "INBOX"),
        ("", ""),
        # RFC 3501 §5.1.3's own example
        ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
        ("&", "&-"),
        ("Tom & Jerry", "Tom &- Jerry"),
        ("Entwürfe", "Entw&APw-rfe"),
        ("Éléments envoyés", "&AMk-l&AOk-ments envoy&AOk-s"),
        ("Отправленные", "&BB4EQgQ,BEAEMAQyBDsENQQ9BD0ESwQ1-"),
        ("😀", "&2D3eAA-"),  # a surrogate pair in UTF-16
        ("tab\there", "tab&AAk-here"),  # a control character is not printable ASCII
    ],
)
def test_known_names_encode_and_decode_both_ways(text: str, encoded: str) -> None:
    assert mutf7.encode(text) == encoded
    assert mutf7.decode(encoded) == text


def test_ampersand_runs_stay_distinct_from_encoded_runs() -> None:
    assert mutf7.decode("&AOk-&-&AOk-") == "é&é"
    assert mutf7.encode("é&é") == "&AOk-&-&AOk-"


# -- strictness ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoded", "why"),
    [
        ("&U,BTFw", "not closed"),
        ("Drafts&", "not closed"),
        ("&AGE-", "printable ASCII"),  # "a" must stand for itself
        ("&ACY-", "printable ASCII"),  # "&" must be "&-"
        ("&AOk-&AOk-", "back to back"),  # canonical form is one run "&AOkA6Q-"
        ("café", "outside printable"),  # raw 8-bit: the client did not encode
        ("a\tb", "outside printable"),
        ("&AOl-", "padding bits"),
        ("&AOkA-", "length"),
        ("&A-", "length"),
        ("&2AA-", "UTF-16"),  # a lone high surrogate
        ("&Jjo!-", "character"),
        ("&U/BTFw-", "character"),  # "/" is "," in modified BASE64
    ],
)
def test_malformed_names_raise_value_error(encoded: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        mutf7.decode(encoded)


def test_lone_surrogate_cannot_be_encoded() -> None:
    with pytest.raises(ValueError):
        mutf7.encode("bad\udcff")


# -- properties ----------------------------------------------------------------------------

_names = st.text(max_size=40)  # hypothesis leaves out lone surrogates by default


@given(_names)
def test_any_name_round_trips(name: str) -> None:
    encoded = mutf7.encode(name)
    assert encoded.isascii()
    assert all(0x20 <= ord(char) <= 0x7E for char in encoded)
    assert mutf7.decode(encoded) == name


@given(st.text(st.sampled_from("&-AOkU,BTFwZeVnLIqe+/2D3eAa b"), max_size=30))
def test_decode_accepts_only_the_canonical_form(encoded: str) -> None:
    try:
        name = mutf7.decode(encoded)
    except ValueError:
        return
    assert mutf7.encode(name) == encoded
