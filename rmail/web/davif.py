"""The WebDAV ``If`` header (RFC 4918 §10.4): a pure parser, no I/O.

``If: <http://h/drive/a> (<opaquelocktoken:x> ["etag"]) (Not <DAV:no-lock>)`` becomes a
list of :class:`IfList`, each with its resource tag (None for the Request-URI) and its
conditions. Evaluating the lists against locks and ETags is the caller's business.
"""

from __future__ import annotations

from dataclasses import dataclass

from rmail.errors import InvalidInput

__all__ = ["Condition", "IfList", "parse_if"]


@dataclass(frozen=True, slots=True)
class Condition:
    negated: bool
    token: str | None  # a state token (Coded-URL without the brackets), or
    etag: str | None  # an entity tag, quotes included


@dataclass(frozen=True, slots=True)
class IfList:
    resource: str | None
    conditions: tuple[Condition, ...]


def parse_if(value: str) -> list[IfList]:
    """The lists of an If header, in order.

    Raises:
        InvalidInput: the header does not follow the grammar (HTTP 400).
    """
    lists: list[IfList] = []
    pos, end = 0, len(value)
    resource: str | None = None
    tagged: bool | None = None
    while True:
        pos = _skip(value, pos)
        if pos >= end:
            break
        ch = value[pos]
        if ch == "<":
            close = value.find(">", pos)
            if close < 0 or tagged is False:
                raise InvalidInput("bad If header: resource tag")
            resource, tagged = value[pos + 1 : close], True
            pos = close + 1
            pos = _skip(value, pos)
            if pos >= end or value[pos] != "(":
                raise InvalidInput("bad If header: a resource tag needs a list")
            continue
        if ch != "(":
            raise InvalidInput("bad If header: expected '('")
        if tagged is None:
            tagged = False
        conditions, pos = _list(value, pos + 1)
        lists.append(IfList(resource, tuple(conditions)))
    if not lists:
        raise InvalidInput("bad If header: no list")
    return lists


def _skip(value: str, pos: int) -> int:
    while pos < len(value) and value[pos] in " \t\r\n":
        pos += 1
    return pos


def _list(value: str, pos: int) -> tuple[list[Condition], int]:
    conditions: list[Condition] = []
    while True:
        pos = _skip(value, pos)
        if pos >= len(value):
            raise InvalidInput("bad If header: unclosed list")
        if value[pos] == ")":
            if not conditions:
                raise InvalidInput("bad If header: empty list")
            return conditions, pos + 1
        negated = False
        if value[pos : pos + 3].lower() == "not":
            negated = True
            pos = _skip(value, pos + 3)
        if pos < len(value) and value[pos] == "<":
            close = value.find(">", pos)
            if close < 0:
                raise InvalidInput("bad If header: state token")
            conditions.append(Condition(negated, value[pos + 1 : close], None))
            pos = close + 1
        elif pos < len(value) and value[pos] == "[":
            close = value.find("]", pos)
            if close < 0:
                raise InvalidInput("bad If header: entity tag")
            conditions.append(Condition(negated, None, value[pos + 1 : close].strip()))
            pos = close + 1
        else:
            raise InvalidInput("bad If header: expected a state token or an entity tag")
