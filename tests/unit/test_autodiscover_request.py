"""The Outlook autodiscover request parser: bytes in, an address or InvalidInput out."""

from __future__ import annotations

from xml.sax.saxutils import escape

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rmail.errors import InvalidInput
from rmail.web.autoconfig import AUTODISCOVER_REQUEST_NS, parse_autodiscover_request

REQUEST = (
    f'<Autodiscover xmlns="{AUTODISCOVER_REQUEST_NS}"><Request>'
    "<EMailAddress> alice@example.test </EMailAddress>"
    "<AcceptableResponseSchema>urn:x</AcceptableResponseSchema>"
    "</Request></Autodiscover>"
)


def test_request_gives_address_and_schema() -> None:
    assert parse_autodiscover_request(REQUEST.encode()) == (" alice@example.test ", "urn:x")


def test_request_without_schema_gives_none() -> None:
    body = REQUEST.replace("<AcceptableResponseSchema>urn:x</AcceptableResponseSchema>", "")
    assert parse_autodiscover_request(body.encode())[1] is None


def test_external_entity_is_refused_not_fetched() -> None:
    body = '<!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]>' + REQUEST.replace(
        "alice@example.test", "&x;"
    )
    with pytest.raises(InvalidInput, match="DTD"):
        parse_autodiscover_request(body.encode())


@given(st.binary(max_size=512))
def test_any_bytes_give_a_request_or_invalid_input(body: bytes) -> None:
    try:
        address, _ = parse_autodiscover_request(body)
    except InvalidInput:
        return
    assert address.strip()


@given(st.text(max_size=80))
def test_any_address_text_round_trips_or_is_invalid(text: str) -> None:
    body = REQUEST.replace(" alice@example.test ", escape(text)).encode()
    try:
        address, _ = parse_autodiscover_request(body)
    except InvalidInput:
        return
    # XML 1.0 §2.11: a parser turns CR LF and lone CR into LF.
    assert address == text.replace("\r\n", "\n").replace("\r", "\n")
