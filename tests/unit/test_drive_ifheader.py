"""The WebDAV If header parser of the drive."""

from __future__ import annotations

import pytest

from rmail.errors import InvalidInput
from rmail.web.davif import Condition, IfList, parse_if


def test_untagged_lists_with_not_and_etags_parse_in_order() -> None:
    lists = parse_if('(<opaquelocktoken:a> ["e1"]) (Not <DAV:no-lock> [W/"e2"])')
    assert lists == [
        IfList(None, (Condition(False, "opaquelocktoken:a", None), Condition(False, None, '"e1"'))),
        IfList(None, (Condition(True, "DAV:no-lock", None), Condition(False, None, 'W/"e2"'))),
    ]


def test_tagged_lists_keep_their_resource() -> None:
    lists = parse_if("<http://h/drive/a> (<t1>) <http://h/drive/b> (Not <t2>) (<t3>)")
    assert [(x.resource, x.conditions[0].token) for x in lists] == [
        ("http://h/drive/a", "t1"),
        ("http://h/drive/b", "t2"),
        ("http://h/drive/b", "t3"),
    ]


@pytest.mark.parametrize("value", ["", "(", "()", "<x>", "(<t>) <x> (<u>)", "(junk)", "(<t>"])
def test_malformed_if_headers_are_refused(value: str) -> None:
    with pytest.raises(InvalidInput):
        parse_if(value)
