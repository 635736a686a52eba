"""PROPPATCH on the drive (RFC 4918 §9.2): dead properties, set and removed in document
order, all or nothing.

A dead property is kept as the XML text of its element in the entry of the file or folder
(``props`` in the parent folder's index, snapshot and journal; the root's in the root's), so it
follows the resource through MOVE and COPY. Live properties are protected (403
``cannot-modify-protected-property``; the other changes then fail with 424).
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from typing import Final

from aiohttp import web

from rmail.store.drive import Drive, split_path
from rmail.web.davxml import DAV, element, multistatus, parse
from rmail.web.drive.base import check_if, href_of, require_unlocked
from rmail.web.drive.propfind import read_body
from rmail.web.drive.xml import LIVE
from rmail.web.http import ApiError

__all__ = ["proppatch"]

MAX_PROPS: Final = 1000  # dead properties per resource
MAX_VALUE: Final = 64 * 1024  # bytes of XML per property


async def proppatch(request: web.Request, user: str, drive: Drive, path: str) -> web.Response:
    parts = tuple(split_path(path))
    entry = await asyncio.to_thread(drive.stat, path)
    check_if(request, user, drive, parts)
    require_unlocked(request, user, parts)
    root = parse(await read_body(request))
    if root is None or root.tag != f"{{{DAV}}}propertyupdate":
        raise ApiError(400, "the body must be a DAV:propertyupdate")
    changes: list[tuple[str, str | None]] = []
    for action in root:
        if action.tag not in (f"{{{DAV}}}set", f"{{{DAV}}}remove"):
            continue
        for prop in action.findall(f"{{{DAV}}}prop"):
            for node in prop:
                value = None
                if action.tag == f"{{{DAV}}}set":
                    value = ET.tostring(node, encoding="unicode")
                    if len(value) > MAX_VALUE:
                        raise ApiError(413, "property value too large")
                changes.append((node.tag, value))
    protected = {name for name, _ in changes if name in LIVE}
    if len({*entry.props, *(n for n, _ in changes)}) > MAX_PROPS:
        raise ApiError(507, "too many properties")
    if not protected:
        await asyncio.to_thread(drive.set_props, path, changes)
    link = href_of(list(parts), entry.type == "dir")
    response = element(f"{{{DAV}}}response", None, element(f"{{{DAV}}}href", link))
    names = list(dict.fromkeys(name for name, _ in changes))
    if protected:
        failed = [n for n in names if n in protected]
        _propstat(response, failed, "403 Forbidden", "cannot-modify-protected-property")
        others = [n for n in names if n not in protected]
        _propstat(response, others, "424 Failed Dependency")
    else:
        _propstat(response, names, "200 OK")
    return web.Response(
        status=207, body=multistatus([response]), content_type="application/xml", charset="utf-8"
    )


def _propstat(
    response: ET.Element, names: list[str], status: str, condition: str | None = None
) -> None:
    if not names:
        return
    prop = element(f"{{{DAV}}}prop", None, *(ET.Element(n) for n in names))
    propstat = element(
        f"{{{DAV}}}propstat", None, prop, element(f"{{{DAV}}}status", f"HTTP/1.1 {status}")
    )
    if condition:
        error = element(f"{{{DAV}}}error", None, ET.Element(f"{{{DAV}}}{condition}"))
        propstat.append(error)
    response.append(propstat)
