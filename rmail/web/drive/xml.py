"""WebDAV XML of the drive: live properties of an entry, lock discovery, dead properties.

Pure builders: an Entry (and the locks on it) in, ElementTree elements out.
"""

from __future__ import annotations

import datetime
import email.utils
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from typing import Final
from xml.sax.saxutils import escape

from rmail.store.drive import Entry
from rmail.web import davlocks
from rmail.web.davlocks import Lock, supportedlock
from rmail.web.davxml import DAV
from rmail.web.drive.base import href_of

__all__ = [
    "ALLPROP_LIVE",
    "LIVE",
    "QUOTA_AVAILABLE",
    "QUOTA_USED",
    "empty_prop",
    "live_prop",
    "lockdiscovery",
    "multistatus",
    "response",
    "supportedlock",
]

_QUOTE: Final = {'"': "&quot;"}


def _d(name: str) -> str:
    return f"{{{DAV}}}{name}"


QUOTA_USED: Final = _d("quota-used-bytes")
QUOTA_AVAILABLE: Final = _d("quota-available-bytes")
# Live properties, in the order allprop lists them; the quota ones (RFC 4331) are only sent
# when asked for by name.
ALLPROP_LIVE: Final = tuple(
    _d(name)
    for name in (
        "resourcetype",
        "displayname",
        "getcontentlength",
        "getcontenttype",
        "getetag",
        "getlastmodified",
        "creationdate",
        "supportedlock",
        "lockdiscovery",
    )
)
LIVE: Final = frozenset((*ALLPROP_LIVE, QUOTA_USED, QUOTA_AVAILABLE))


def _http_date(ts: float) -> str:
    return email.utils.formatdate(ts, usegmt=True)


def _iso_date(ts: float) -> str:
    moment = datetime.datetime.fromtimestamp(ts, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def live_prop(
    name: str,
    entry: Entry,
    locks: list[Lock],
    quota: Callable[[], tuple[int, int | None]],
    remaining: Callable[[Lock], int],
) -> str | None:
    """Live property ``name`` as XML text (``D:`` is DAV:), or None when the entry has no
    such value."""
    is_dir = entry.type == "dir"
    local = name[len(DAV) + 2 :]
    if local == "resourcetype":
        return "<D:resourcetype><D:collection/></D:resourcetype>" if is_dir else "<D:resourcetype/>"
    value: str | None = None
    if local == "displayname":
        value = entry.name
    elif local == "getcontentlength":
        value = None if is_dir else str(entry.size)
    elif local == "getcontenttype":
        value = None if is_dir else entry.content_type or "application/octet-stream"
    elif local == "getetag":
        value = entry.etag or None
    elif local == "getlastmodified":
        value = _http_date(entry.mtime)
    elif local == "creationdate":
        value = _iso_date(entry.mtime)
    elif local == "supportedlock":
        return _fragment(supportedlock())
    elif local == "lockdiscovery":
        return _fragment(lockdiscovery(locks, remaining)) if locks else "<D:lockdiscovery/>"
    elif name in (QUOTA_USED, QUOTA_AVAILABLE) and is_dir:
        used, available = quota()
        value = str(used) if name == QUOTA_USED else None
        if name == QUOTA_AVAILABLE and available is not None:
            value = str(available)
    if value is None:
        return None
    return f"<D:{local}>{escape(value)}</D:{local}>"


def _fragment(node: ET.Element) -> str:
    """An element as XML text that declares its own namespaces."""
    return ET.tostring(node, encoding="unicode")


def empty_prop(name: str) -> str:
    """``<name/>`` for a Clark name, declaring its namespace."""
    if name.startswith("{"):
        uri, local = name[1:].split("}", 1)
        if uri == DAV:
            return f"<D:{local}/>"
        return f'<X:{local} xmlns:X="{escape(uri, _QUOTE)}"/>'
    return f"<{name}/>"


def response(link: str, found: list[str], missing: list[str]) -> str:
    """One ``D:response`` with a 200 propstat for ``found`` (XML texts) and a 404 one for
    ``missing`` (Clark names)."""
    out = [f"<D:response><D:href>{escape(link)}</D:href>"]
    if found:
        out.append("<D:propstat><D:prop>")
        out.extend(found)
        out.append("</D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat>")
    if missing:
        out.append("<D:propstat><D:prop>")
        out.extend(empty_prop(name) for name in missing)
        out.append("</D:prop><D:status>HTTP/1.1 404 Not Found</D:status></D:propstat>")
    out.append("</D:response>")
    return "".join(out)


def multistatus(responses: Iterable[str]) -> bytes:
    head = '<?xml version="1.0" encoding="utf-8"?>\n<D:multistatus xmlns:D="DAV:">'
    return (head + "".join(responses) + "</D:multistatus>").encode("utf-8")


def lockdiscovery(locks: Iterable[Lock], remaining: Callable[[Lock], int]) -> ET.Element:
    return davlocks.lockdiscovery(locks, remaining, lambda path: href_of(path, False))
