"""LOCK and UNLOCK on the drive (RFC 4918 §9.10-9.11): exclusive and shared write locks,
Depth 0 or infinity, refresh by an empty LOCK with the token in ``If``. LOCK on a name
that does not exist creates an empty file there (201), as RFC 4918 §7.3 asks.
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET

from aiohttp import web

from rmail.errors import InvalidInput, NotFound
from rmail.store.drive import Drive, split_path
from rmail.web.davlocks import LockConflict, Scope, parse_lockinfo, parse_timeout
from rmail.web.davxml import DAV, element, parse, to_bytes
from rmail.web.drive.base import (
    DRIVES,
    check_if,
    precondition,
    require_unlocked,
    submitted_tokens,
)
from rmail.web.drive.propfind import read_body
from rmail.web.drive.xml import lockdiscovery
from rmail.web.http import ApiError

__all__ = ["lock", "unlock"]


def _answer(status: int, body: ET.Element, token: str | None = None) -> web.Response:
    headers = {"Lock-Token": f"<{token}>"} if token else {}
    prop = element(f"{{{DAV}}}prop", None, body)
    return web.Response(
        status=status,
        body=to_bytes(prop),
        headers=headers,
        content_type="application/xml",
        charset="utf-8",
    )


def _lockinfo(root: ET.Element) -> tuple[Scope, str]:
    try:
        return parse_lockinfo(root)
    except InvalidInput as exc:
        raise ApiError(400, str(exc)) from None


async def lock(request: web.Request, user: str, drive: Drive, path: str) -> web.Response:
    table = request.app[DRIVES].locks
    parts = tuple(split_path(path))
    timeout = parse_timeout(request.headers.get("Timeout"))
    root = parse(await read_body(request))
    check_if(request, user, drive, parts)
    if root is None:
        # A refresh: the token of a lock on this resource is in the If header.
        for token in submitted_tokens(request):
            found = table.get(user, token)
            if found is not None and found.covers(parts):
                refreshed = table.refresh(user, token, timeout)
                assert refreshed is not None
                return _answer(200, lockdiscovery([refreshed], table.remaining))
        raise precondition(412, "lock-token-matches-request-uri")
    depth = request.headers.get("Depth", "infinity").strip().lower()
    if depth not in ("0", "infinity"):
        raise ApiError(400, "LOCK takes Depth 0 or infinity")
    scope, owner = _lockinfo(root)
    created = False
    try:
        await asyncio.to_thread(drive.stat, path)
    except NotFound:
        if not parts:
            raise
        require_unlocked(request, user, parts, members=True)
        try:
            await asyncio.to_thread(drive.stat, "/".join(parts[:-1]))
        except NotFound:
            raise ApiError(409, "the parent folder does not exist") from None
        await asyncio.to_thread(drive.write, path, [], make_parents=False)
        created = True
    try:
        new = table.acquire(
            user, parts, scope=scope, deep=depth == "infinity", owner=owner, timeout=timeout
        )
    except LockConflict:
        raise precondition(423, "no-conflicting-lock") from None
    return _answer(201 if created else 200, lockdiscovery([new], table.remaining), new.token)


async def unlock(request: web.Request, user: str, drive: Drive, path: str) -> web.Response:
    table = request.app[DRIVES].locks
    parts = tuple(split_path(path))
    token = request.headers.get("Lock-Token", "").strip().removeprefix("<").removesuffix(">")
    if not token:
        raise ApiError(400, "UNLOCK needs a Lock-Token header")
    found = table.get(user, token)
    if found is None or not found.covers(parts):
        raise precondition(409, "lock-token-matches-request-uri")
    table.release(user, token)
    return web.Response(status=204)
