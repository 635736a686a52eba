"""WebDAV XML of the drive: live properties of an entry, lock discovery, dead properties.

Pure builders: an Entry (and the locks on it) in, ElementTree elements out.
"""

from __future__ import annotations

import datetime
import email.utils
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from typing import Final

from rmail.store.drive import Entry
from rmail.web.davxml import DAV, element, href
from rmail.web.drive.base import href_of
from rmail.web.drive.locks import Lock

__all__ = [
    "ALLPROP_LIVE",
    "LIVE",
    "activelock",
    "dead_prop",
    "live_prop",
    "lockdiscovery",
    "supportedlock",
]


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
) -> ET.Element | None:
    """The element for live property ``name``, or None when the entry has no such value."""
    is_dir = entry.type == "dir"
    if name == _d("resourcetype"):
        node = element(name)
        if is_dir:
            node.append(element(_d("collection")))
        return node
    if name == _d("displayname"):
        return element(name, entry.name)
    if name == _d("getcontentlength"):
        return None if is_dir else element(name, str(entry.size))
    if name == _d("getcontenttype"):
        return None if is_dir else element(name, entry.content_type or "application/octet-stream")
    if name == _d("getetag"):
        return element(name, entry.etag) if entry.etag else None
    if name == _d("getlastmodified"):
        return element(name, _http_date(entry.mtime))
    if name == _d("creationdate"):
        return element(name, _iso_date(entry.mtime))
    if name == _d("supportedlock"):
        return supportedlock()
    if name == _d("lockdiscovery"):
        return lockdiscovery(locks, remaining)
    if name in (QUOTA_USED, QUOTA_AVAILABLE) and is_dir:
        used, available = quota()
        if name == QUOTA_USED:
            return element(name, str(used))
        return element(name, str(available)) if available is not None else None
    return None


def dead_prop(text: str) -> ET.Element:
    """A stored dead property back as an element."""
    node = ET.fromstring(text)
    return node


def supportedlock() -> ET.Element:
    node = element(_d("supportedlock"))
    for scope in ("exclusive", "shared"):
        node.append(
            element(
                _d("lockentry"),
                None,
                element(_d("lockscope"), None, element(_d(scope))),
                element(_d("locktype"), None, element(_d("write"))),
            )
        )
    return node


def activelock(lock: Lock, remaining: int) -> ET.Element:
    node = element(
        _d("activelock"),
        None,
        element(_d("locktype"), None, element(_d("write"))),
        element(_d("lockscope"), None, element(_d(lock.scope))),
        element(_d("depth"), "infinity" if lock.deep else "0"),
    )
    if lock.owner:
        node.append(ET.fromstring(lock.owner))
    node.append(element(_d("timeout"), f"Second-{remaining}"))
    node.append(element(_d("locktoken"), None, href(lock.token)))
    node.append(element(_d("lockroot"), None, href(href_of(lock.path, False))))
    return node


def lockdiscovery(locks: Iterable[Lock], remaining: Callable[[Lock], int]) -> ET.Element:
    return element(_d("lockdiscovery"), None, *(activelock(lk, remaining(lk)) for lk in locks))
