"""PROPFIND on the drive: a 207 multistatus (RFC 4918 §9.1), or JSON for clients that send
``Accept: application/json`` and no body.

Depth 0 or 1; infinity (also the default when no Depth is sent) is refused with 403 and
``DAV:propfind-finite-depth``, so one request never walks a whole drive.
"""

from __future__ import annotations

import asyncio
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import quote
from xml.sax.saxutils import escape

from aiohttp import web

from rmail.store.drive import Drive, Entry, split_path
from rmail.web.davlocks import Lock, LockTable
from rmail.web.davxml import DAV, MAX_BODY, parse
from rmail.web.drive.base import DRIVES, href_of, precondition
from rmail.web.drive.xml import (
    ALLPROP_LIVE,
    LIVE,
    QUOTA_AVAILABLE,
    QUOTA_USED,
    empty_prop,
    live_prop,
    multistatus,
    plain_responses,
    response,
    response_template,
)
from rmail.web.http import ApiError

__all__ = ["propfind", "read_body", "render"]

_QUOTA: Final = frozenset((QUOTA_AVAILABLE, QUOTA_USED))
# Names that urllib.parse.quote(name, safe="") leaves as they are (RFC 3986 §2.3).
_UNRESERVED: Final = re.compile(r"[A-Za-z0-9_.~-]*").fullmatch


async def read_body(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise ApiError(413, "request body too large")
    body = await request.content.read(MAX_BODY + 1)
    if len(body) > MAX_BODY:
        raise ApiError(413, "request body too large")
    return body


def _wants_json(request: web.Request, body: bytes) -> bool:
    return not body.strip() and "application/json" in request.headers.get("Accept", "")


async def propfind(request: web.Request, user: str, drive: Drive, path: str) -> web.Response:
    body = await read_body(request)
    if _wants_json(request, body):
        return await _propfind_json(request, drive, path)
    root = parse(body)
    mode, names = _request(root)
    depth = request.headers.get("Depth", "infinity").strip().lower()
    if depth not in ("0", "1"):
        if depth != "infinity":
            raise ApiError(400, "Depth is 0, 1 or infinity")
        raise precondition(403, "propfind-finite-depth")
    table = request.app[DRIVES].locks
    cache = request.app[DRIVES].rendered
    # Not cached: answers that show locks or the quota, which change without the folder.
    cacheable = next(table.all(user), None) is None and not (set(names) & _QUOTA)
    key = (str(drive.root), path, "propfind", depth, mode, *names)
    version = await asyncio.to_thread(drive.version, path) if cacheable else ()
    cached = cache.get(key, version) if cacheable else None
    if cached is not None:
        return _multistatus_response(cached)
    entry = await asyncio.to_thread(drive.stat, path)
    parts = split_path(path)
    children: list[Entry] = []
    if entry.type == "dir" and depth == "1":
        children, _, _ = await asyncio.to_thread(drive.listing, path)
    body = render(
        user,
        table,
        parts=parts,
        entry=entry,
        children=children,
        asked=(mode, names),
        quota=_Lazy(drive.quota),
    )
    if cacheable:
        cache.put(key, version, body)
    return _multistatus_response(body)


def render(
    user: str,
    table: LockTable,
    *,
    parts: list[str],
    entry: Entry,
    children: list[Entry],
    asked: tuple[str, list[str]],
    quota: Callable[[], tuple[int, int | None]],
) -> bytes:
    """The multistatus of ``entry`` (at ``parts``) and its ``children``: the entry first,
    then the children in their order, folders before files, and those with dead
    properties or locks last (RFC 4918 leaves the order of responses open)."""
    locked = next(table.all(user), None) is not None
    responses = [
        _response(
            parts,
            entry,
            asked,
            locks=table.covering(user, tuple(parts)) if locked else [],
            quota=quota,
            remaining=table.remaining,
        )
    ]
    # Most children have no dead property and no lock: those go through one template per
    # kind, a column at a time (a 10,000-entry folder renders in a few milliseconds).
    plain: dict[tuple[bool, bool], list[Entry]] = {}  # by (is a file, has an ETag)
    special: list[tuple[Entry, list[Lock]]] = []
    for child in children:
        locks = table.covering(user, (*parts, child.name)) if locked else []
        if locks or child.props:
            special.append((child, locks))
        else:
            plain.setdefault((child.type != "dir", bool(child.etag)), []).append(child)
    prefix = escape(href_of(parts, True))
    for kind in sorted(plain):
        group = plain[kind]
        template = response_template(asked, not kind[0], kind[1])
        if template is None:  # the quota of a folder: read per folder
            special[:0] = [(child, []) for child in group]
            continue
        slash = "" if kind[0] else "/"
        names = [child.name for child in group]
        links = [
            prefix + (name if _UNRESERVED(name) else quote(name, safe="")) + slash for name in names
        ]
        responses.append(plain_responses(template, links, group))
    for child, locks in special:
        responses.append(
            _response(
                [*parts, child.name],
                child,
                asked,
                locks=locks,
                quota=quota,
                remaining=table.remaining,
            )
        )
    return multistatus(responses)


def _multistatus_response(body: bytes) -> web.Response:
    return web.Response(status=207, body=body, content_type="application/xml", charset="utf-8")


def _request(root: ET.Element | None) -> tuple[str, list[str]]:
    """("allprop" | "propname" | "prop", names asked for)."""
    if root is None:
        return "allprop", []
    if root.tag != f"{{{DAV}}}propfind":
        raise ApiError(400, "the body must be a DAV:propfind")
    for child in root:
        if child.tag == f"{{{DAV}}}allprop":
            return "allprop", []
        if child.tag == f"{{{DAV}}}propname":
            return "propname", []
        if child.tag == f"{{{DAV}}}prop":
            return "prop", [prop.tag for prop in child]
    raise ApiError(400, "propfind needs prop, allprop or propname")


class _Lazy:
    """The drive's quota figures, read once per request and only when asked for."""

    def __init__(self, read: Callable[[], tuple[int, int | None]]) -> None:
        self._read = read
        self._value: tuple[int, int | None] | None = None

    def __call__(self) -> tuple[int, int | None]:
        if self._value is None:
            self._value = self._read()
        return self._value


def _response(
    parts: list[str],
    entry: Entry,
    asked: tuple[str, list[str]],
    *,
    locks: list[Lock],
    quota: Callable[[], tuple[int, int | None]],
    remaining: Callable[[Lock], int],
) -> str:
    mode, names = asked
    link = href_of(parts, entry.type == "dir")
    if mode == "propname":
        found = [empty_prop(name) for name in (*ALLPROP_LIVE, *entry.props)]
        return response(link, found, [])
    wanted = [*ALLPROP_LIVE, *entry.props] if mode == "allprop" else names
    found, missing = [], []
    for name in wanted:
        text: str | None = None
        if name in LIVE:
            text = live_prop(name, entry, locks, quota, remaining)
        elif name in entry.props:
            text = entry.props[name]  # stored as XML text declaring its own namespaces
        if text is not None:
            found.append(text)
        elif mode == "prop":
            missing.append(name)
    return response(link, found, missing)


async def _propfind_json(request: web.Request, drive: Drive, path: str) -> web.Response:
    depth = request.headers.get("Depth", "1")
    if depth not in ("0", "1"):
        raise ApiError(403, "Depth must be 0 or 1")
    entry = await asyncio.to_thread(drive.stat, path)
    body: dict[str, Any] = {"path": "/" + "/".join(split_path(path)), **entry.to_json()}
    if entry.type == "dir":
        entries, own, total = await asyncio.to_thread(drive.listing, path)
        body["self"], body["totals"] = own.to_json(), total.to_json()
        if depth == "1":
            body["children"] = [e.to_json() for e in entries]
    return web.json_response(body, status=207)
