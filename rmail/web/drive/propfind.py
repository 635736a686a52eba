"""PROPFIND on the drive: a 207 multistatus (RFC 4918 §9.1), or JSON for clients that send
``Accept: application/json`` and no body.

Depth 0 or 1; infinity (also the default when no Depth is sent) is refused with 403 and
``DAV:propfind-finite-depth``, so one request never walks a whole drive.
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any, Final

from aiohttp import web

from rmail.store.drive import Drive, Entry, split_path
from rmail.web.davlocks import Lock
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
    response,
)
from rmail.web.http import ApiError

__all__ = ["propfind", "read_body"]

_QUOTA: Final = frozenset((QUOTA_AVAILABLE, QUOTA_USED))


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
    targets: list[tuple[list[str], Entry]] = [(parts, entry)]
    if entry.type == "dir" and depth == "1":
        children, _, _ = await asyncio.to_thread(drive.listing, path)
        targets += [([*parts, child.name], child) for child in children]
    quota = _Lazy(drive.quota)
    responses = []
    for p, e in targets:
        locks = table.covering(user, tuple(p))
        responses.append(
            _response(p, e, (mode, names), locks=locks, quota=quota, remaining=table.remaining)
        )
    body = multistatus(responses)
    if cacheable:
        cache.put(key, version, body)
    return _multistatus_response(body)


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
