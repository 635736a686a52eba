"""WebDAV XML of the drive: live properties of an entry, lock discovery, dead properties.

Pure builders: an Entry (and the locks on it) in, ElementTree elements out.
"""

from __future__ import annotations

import datetime
import email.utils
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass
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
    "ResponseTemplate",
    "empty_prop",
    "http_date",
    "iso_date",
    "live_prop",
    "lockdiscovery",
    "multistatus",
    "plain_responses",
    "response",
    "response_template",
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


_DAYS: Final = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS: Final = ("Jan", "Feb", "Mar", "Apr", "May", "Jun",
                  "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")  # fmt: skip


_TWO: Final = tuple(f"{n:02d}" for n in range(60))
_MINUTES: Final = tuple(f"{h:02d}:{m:02d}:" for h in range(24) for m in range(60))  # of a day
_DAY_TEXT: dict[int, tuple[str, str]] = {}  # day since 1970 -> both formats' date parts


def _day_and_time(ts: float) -> tuple[tuple[str, str], str] | None:
    """The date parts (HTTP, ISO) and ``HH:MM:SS`` of ``ts``, or None where only
    ``datetime`` gets it right: it rounds to the microsecond (so a time within a
    microsecond before a full second is that second), and years outside 1000-9999."""
    whole = int(ts)
    if ts < 0 or ts - whole >= 0.999999:
        return None
    days, seconds = divmod(whole, 86400)
    parts = _DAY_TEXT.get(days)
    if parts is None:
        moment = time.gmtime(days * 86400)
        if not 1000 <= moment.tm_year <= 9999:
            return None
        parts = (
            f"{_DAYS[moment.tm_wday]}, {moment.tm_mday:02d} {_MONTHS[moment.tm_mon - 1]} "
            f"{moment.tm_year} ",
            f"{moment.tm_year}-{moment.tm_mon:02d}-{moment.tm_mday:02d}T",
        )
        if len(_DAY_TEXT) >= 4096:
            _DAY_TEXT.clear()
        _DAY_TEXT[days] = parts
    minute, second = divmod(seconds, 60)
    return parts, _MINUTES[minute] + _TWO[second]


def http_date(ts: float) -> str:
    """RFC 9110 §5.6.7 IMF-fixdate: the text of ``email.utils.formatdate(ts, usegmt=True)``
    at a fraction of its cost (a listing formats one per entry)."""
    found = _day_and_time(ts)
    if found is None:
        return email.utils.formatdate(ts, usegmt=True)
    return found[0][0] + found[1] + " GMT"


def iso_date(ts: float) -> str:
    """RFC 3339 (``creationdate``, RFC 4918 §15.1): the text of
    ``datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")``."""
    found = _day_and_time(ts)
    if found is None:
        return datetime.datetime.fromtimestamp(ts, tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return found[0][1] + found[1] + "Z"


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
        value = http_date(entry.mtime)
    elif local == "creationdate":
        value = iso_date(entry.mtime)
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


@dataclass(frozen=True, slots=True)
class ResponseTemplate:
    """The ``D:response`` of every entry of one kind (file or folder, with or without an
    ETag) that has no dead properties and no lock, for one PROPFIND: fixed texts around
    the texts of the entry it needs (see :func:`plain_responses`). A listing renders
    10,000 entries through it a column at a time instead of building each property in
    turn."""

    pieces: tuple[str, ...]  # the fixed texts, one more than fields
    fields: tuple[int, ...]  # which text of the entry goes between two pieces (see _FIELD)


# The texts of an entry that a template may need; 0 is the (escaped) href.
_FIELD: Final = {
    "displayname": 1,
    "getcontentlength": 2,
    "getcontenttype": 3,
    "getetag": 4,
    "getlastmodified": 5,
    "creationdate": 6,
}


def response_template(
    asked: tuple[str, list[str]], is_dir: bool, has_etag: bool
) -> ResponseTemplate | None:
    """The template for entries of a kind without dead properties or locks, for a PROPFIND
    asking ``asked`` (mode, names); None when a property asked for needs more than the
    entry (the quota of a folder). It renders what :func:`live_prop`, :func:`empty_prop`
    and :func:`response` would."""
    mode, names = asked
    found: list[str | int] = []
    missing: list[str | int] = []
    if mode == "propname":
        found = [empty_prop(name) for name in ALLPROP_LIVE]
    else:
        for name in ALLPROP_LIVE if mode == "allprop" else names:
            if name in (QUOTA_USED, QUOTA_AVAILABLE):
                if is_dir:
                    return None
                present = False
            elif name in LIVE:
                local = name[len(DAV) + 2 :]
                field = _FIELD.get(local)
                if field is None:  # resourcetype, supportedlock, lockdiscovery: fixed texts
                    plain = Entry("", "dir" if is_dir else "file", 0, "", 0.0, "")
                    found.append(live_prop(name, plain, [], _no_quota, _no_lock) or "")
                    continue
                present = not ((field in (2, 3) and is_dir) or (field == 4 and not has_etag))
                if present:
                    found += [f"<D:{local}>", field, f"</D:{local}>"]
                    continue
            else:
                present = False
            if mode == "prop":
                missing.append(empty_prop(name))
    items: list[str | int] = ["<D:response><D:href>", 0, "</D:href>"]
    if found:
        items += ["<D:propstat><D:prop>", *found]
        items.append("</D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat>")
    if missing:
        items += ["<D:propstat><D:prop>", *missing]
        items.append("</D:prop><D:status>HTTP/1.1 404 Not Found</D:status></D:propstat>")
    items.append("</D:response>")
    pieces, fields, text = [], [], ""
    for item in items:
        if isinstance(item, int):
            pieces.append(text)
            fields.append(item)
            text = ""
        else:
            text += item
    pieces.append(text)
    return ResponseTemplate(tuple(pieces), tuple(fields))


def plain_responses(template: ResponseTemplate, links: list[str], entries: list[Entry]) -> str:
    """A ``D:response`` for each of ``entries`` (all of the template's kind), in their
    order; ``links`` are their hrefs, already escaped.

    A column of texts per field, each built by one comprehension, interleaved with the
    fixed pieces by slice assignment and joined once: 10,000 entries in about 7 ms, where
    a ``%`` format per entry took 19.
    """
    count = len(entries)
    stride = 2 * len(template.fields) + 1
    out = [""] * (count * stride)
    for at, piece in enumerate(template.pieces):
        out[2 * at :: stride] = [piece] * count
    for at, field in enumerate(template.fields):
        out[2 * at + 1 :: stride] = links if field == 0 else _column(field, entries)
    return "".join(out)


def _column(field: int, entries: list[Entry]) -> list[str]:
    if field == 1:
        return [_text(e.name) for e in entries]
    if field == 2:
        return [str(e.size) for e in entries]
    if field == 3:
        types: dict[str, str] = {}  # a folder holds few types: escape each once
        return [
            types.get(e.content_type)
            or types.setdefault(e.content_type, escape(e.content_type or _OCTETS))
            for e in entries
        ]
    if field == 4:
        return [_text(e.etag) for e in entries]
    if field == 5:
        return [http_date(e.mtime) for e in entries]
    return [iso_date(e.mtime) for e in entries]


_OCTETS: Final = "application/octet-stream"


def _text(value: str) -> str:
    """``value`` escaped for XML character data; most names and ETags need nothing."""
    if "&" in value or "<" in value or ">" in value:
        return escape(value)
    return value


def _no_quota() -> tuple[int, int | None]:
    raise AssertionError("not asked for")


def _no_lock(lock: Lock) -> int:
    raise AssertionError("no lock")


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
