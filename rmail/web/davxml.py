"""WebDAV XML, shared by CalDAV/CardDAV and the drive: reading request bodies (defusedxml
only) and writing multistatus answers.

Element names are Clark notation (``{DAV:}prop``). Requests are parsed with defusedxml, so a
DTD, an entity or an external reference is refused instead of expanded.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable
from typing import Final

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from rmail.errors import InvalidInput

__all__ = [
    "APPLE",
    "CALDAV",
    "CARDDAV",
    "CS",
    "DAV",
    "element",
    "error_body",
    "href",
    "multistatus",
    "parse",
    "propstat_response",
    "status_response",
    "to_bytes",
]

DAV: Final = "DAV:"
CALDAV: Final = "urn:ietf:params:xml:ns:caldav"
CARDDAV: Final = "urn:ietf:params:xml:ns:carddav"
CS: Final = "http://calendarserver.org/ns/"
APPLE: Final = "http://apple.com/ns/ical/"

for prefix, uri in (("d", DAV), ("c", CALDAV), ("card", CARDDAV), ("cs", CS), ("ical", APPLE)):
    ET.register_namespace(prefix, uri)

# Request bodies larger than this are refused before parsing (a calendar-multiget of a
# thousand hrefs is about 100 KB).
MAX_BODY: Final = 4 * 1024 * 1024


def parse(body: bytes) -> ET.Element | None:
    """The root element of a request body, or None for an empty body.

    Raises:
        InvalidInput: malformed XML, or XML with a DTD or entities.
    """
    if not body.strip():
        return None
    try:
        root = SafeET.fromstring(body, forbid_dtd=True)
    except DefusedXmlException:
        raise InvalidInput("XML with a DTD or entities is not accepted") from None
    except ET.ParseError as exc:
        raise InvalidInput(f"malformed XML: {exc}") from None
    assert isinstance(root, ET.Element)
    return root


def element(tag: str, text: str | None = None, *children: ET.Element) -> ET.Element:
    node = ET.Element(tag)
    if text is not None:
        node.text = text
    node.extend(children)
    return node


def href(path: str) -> ET.Element:
    return element(f"{{{DAV}}}href", path)


def _status(code: int) -> ET.Element:
    reasons = {200: "OK", 201: "Created", 204: "No Content", 403: "Forbidden",
               404: "Not Found", 409: "Conflict", 412: "Precondition Failed", 423: "Locked",
               424: "Failed Dependency", 502: "Bad Gateway",
               507: "Insufficient Storage"}  # fmt: skip
    return element(f"{{{DAV}}}status", f"HTTP/1.1 {code} {reasons.get(code, '')}".rstrip())


def propstat_response(
    path: str, found: Iterable[ET.Element], missing: Iterable[str], forbidden: Iterable[str] = ()
) -> ET.Element:
    """A ``response`` with a 200 propstat for ``found`` and 404/403 ones for the others."""
    response = element(f"{{{DAV}}}response", None, href(path))
    groups: list[tuple[int, list[ET.Element]]] = [
        (200, list(found)),
        (404, [ET.Element(tag) for tag in missing]),
        (403, [ET.Element(tag) for tag in forbidden]),
    ]
    for code, props in groups:
        if props:
            propstat = element(f"{{{DAV}}}propstat", None, element(f"{{{DAV}}}prop", None, *props))
            propstat.append(_status(code))
            response.append(propstat)
    return response


def status_response(path: str, code: int) -> ET.Element:
    return element(f"{{{DAV}}}response", None, href(path), _status(code))


def multistatus(responses: Iterable[ET.Element], sync_token: str | None = None) -> bytes:
    root = element(f"{{{DAV}}}multistatus", None, *responses)
    if sync_token is not None:
        root.append(element(f"{{{DAV}}}sync-token", sync_token))
    return to_bytes(root)


def error_body(condition: str, namespace: str = DAV) -> bytes:
    """An ``error`` body naming a failed precondition (RFC 4918 §16)."""
    return to_bytes(element(f"{{{DAV}}}error", None, ET.Element(f"{{{namespace}}}{condition}")))


def to_bytes(root: ET.Element) -> bytes:
    text = ET.tostring(root, encoding="unicode")
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + text.encode("utf-8")
