"""WebDAV class 2 for CalDAV/CardDAV (RFC 4918 §6-7, §9.10-9.11): LOCK, UNLOCK and the lock
checks of PUT, DELETE and PROPPATCH.

The lock table, the lockinfo body, the lock XML and the ``If`` rules are the shared ones of
:mod:`rmail.web.davlocks`; this module maps DAV resources to lock paths, ``(kind,
collection)`` for a calendar or address book and ``(kind, collection, name)`` for a calendar
object or vCard, under the owner. Only existing collections and objects can be locked: LOCK
on an unmapped URL is refused with 404 (an empty body is not a valid calendar object or
vCard, so the empty resource RFC 4918 §7.3 asks for cannot be made); to reserve a new name,
lock the collection. Locks live in memory, as the drive's do.
"""

from __future__ import annotations

import asyncio
import urllib.parse
import xml.etree.ElementTree as ET

from aiohttp import web

from rmail.errors import InvalidInput, NotFound
from rmail.store.accounts import Account
from rmail.store.dav import DavStore, Kind
from rmail.web import davlocks
from rmail.web.dav.resources import Resource, collection_path, object_path, resolve
from rmail.web.davif import IfList, parse_if
from rmail.web.davlocks import LockConflict, LockTable, Path, parse_lockinfo, parse_timeout
from rmail.web.davxml import DAV, element, error_body, parse, to_bytes
from rmail.web.http import ApiError

__all__ = ["check_if", "drop", "enforce", "lock", "lock_path", "lockdiscovery", "unlock"]


def lock_path(resource: Resource) -> Path | None:
    """The lock path of a collection or an object, None for other resources."""
    if resource.kind is None or resource.collection is None or resource.inbox:
        return None  # the scheduling Inbox takes no locks: only the server adds to it
    if resource.type == "collection":
        return (resource.kind, resource.collection)
    if resource.type == "object" and resource.name is not None:
        return (resource.kind, resource.collection, resource.name)
    return None


def _href(user: str, path: Path) -> str:
    kind: Kind = "calendars" if path[0] == "calendars" else "addressbooks"
    if len(path) == 2:
        return collection_path(kind, user, path[1])
    return object_path(kind, user, path[1], path[2])


def lockdiscovery(table: LockTable, user: str, path: Path) -> ET.Element:
    """DAV:lockdiscovery of the locks that cover ``path``."""
    return davlocks.lockdiscovery(
        table.covering(user, path), table.remaining, lambda root: _href(user, root)
    )


def _if_lists(request: web.Request) -> list[IfList]:
    value = request.headers.get("If")
    if not value:
        return []
    try:
        return parse_if(value)
    except InvalidInput as exc:
        raise ApiError(400, str(exc)) from None


def _etag(store: DavStore, path: Path) -> str | None:
    try:
        collection = store.collection(path[1])
        if len(path) == 2:
            return collection.info().ctag
        return collection.get(path[2]).etag
    except NotFound:
        return None


async def check_if(
    request: web.Request, table: LockTable, account: Account, resource: Resource, store: DavStore
) -> None:
    """Evaluate the If header, if any: one of its lists must hold (RFC 4918 §10.4), else
    412 (400 when it cannot be parsed)."""
    path = lock_path(resource)
    lists = _if_lists(request)
    if path is None or not lists:
        return
    user = account.address

    def target_of(tag: str | None) -> Path | None:
        if tag is None:
            return path
        split = urllib.parse.urlsplit(tag)
        if split.netloc and split.netloc.lower() != request.host.lower():
            return None
        target = resolve(split.path)
        if target is None or target.owner != user:
            return None
        return lock_path(target)

    def holds() -> bool:
        return davlocks.if_holds(lists, user, table, target_of, lambda p: _etag(store, p))

    if not await asyncio.to_thread(holds):
        raise ApiError(412, "the If header does not hold")


async def enforce(
    request: web.Request,
    table: LockTable,
    account: Account,
    resource: Resource,
    store: DavStore,
    *,
    members: bool = False,
    tree: bool = False,
) -> None:
    """Check the If header (412 when present and false) and the locks (423 when one covers
    the resource and none of its tokens was submitted) before a change of ``resource``."""
    path = lock_path(resource)
    if path is None:
        return
    await check_if(request, table, account, resource, store)
    user = account.address
    given = davlocks.submitted_tokens(_if_lists(request))
    found = davlocks.blocking_lock(table, user, path, given, members=members, tree=tree)
    if found is not None:
        body = to_bytes(davlocks.lock_token_submitted(_href(user, found.path)))
        raise ApiError(423, "the resource is locked", xml=body)


def drop(table: LockTable, account: Account, resource: Resource) -> None:
    """Forget the locks on a deleted resource and below it."""
    path = lock_path(resource)
    if path is not None:
        table.drop_below(account.address, path)


def _precondition(status: int, condition: str) -> ApiError:
    return ApiError(status, condition, xml=error_body(condition))


def _answer(status: int, body: ET.Element, token: str | None = None) -> web.Response:
    headers = {"Lock-Token": f"<{token}>"} if token else {}
    return web.Response(
        status=status,
        body=to_bytes(element(f"{{{DAV}}}prop", None, body)),
        headers=headers,
        content_type="application/xml",
        charset="utf-8",
    )


def _exists(store: DavStore, resource: Resource) -> None:
    assert resource.collection is not None
    collection = store.collection(resource.collection)
    if resource.name is not None:
        collection.get(resource.name)


async def lock(
    request: web.Request, table: LockTable, account: Account, resource: Resource, store: DavStore
) -> web.Response:
    """LOCK (RFC 4918 §9.10): a new lock, or a refresh when the body is empty."""
    path = lock_path(resource)
    if path is None:
        raise ApiError(405, "only calendars, address books and their objects can be locked")
    user = account.address
    timeout = parse_timeout(request.headers.get("Timeout"))
    root = parse(await request.read())
    try:
        await asyncio.to_thread(_exists, store, resource)
    except NotFound:
        raise ApiError(404, "not found") from None
    await check_if(request, table, account, resource, store)
    if root is None:
        # A refresh: the token of a lock on this resource is in the If header.
        for token in davlocks.submitted_tokens(_if_lists(request)):
            found = table.get(user, token)
            if found is not None and found.covers(path):
                refreshed = table.refresh(user, token, timeout)
                assert refreshed is not None
                return _answer(200, lockdiscovery(table, user, path))
        raise _precondition(412, "lock-token-matches-request-uri")
    depth = request.headers.get("Depth", "infinity").strip().lower()
    if depth not in ("0", "infinity"):
        raise ApiError(400, "LOCK takes Depth 0 or infinity")
    try:
        scope, owner = parse_lockinfo(root)
    except InvalidInput as exc:
        raise ApiError(400, str(exc)) from None
    try:
        new = table.acquire(
            user, path, scope=scope, deep=depth == "infinity", owner=owner, timeout=timeout
        )
    except LockConflict:
        raise _precondition(423, "no-conflicting-lock") from None
    body = davlocks.lockdiscovery([new], table.remaining, lambda root: _href(user, root))
    return _answer(200, body, new.token)


async def unlock(
    request: web.Request, table: LockTable, account: Account, resource: Resource
) -> web.Response:
    """UNLOCK (RFC 4918 §9.11): the token must name a lock that covers the resource."""
    path = lock_path(resource)
    if path is None:
        raise ApiError(405, "only calendars, address books and their objects can be locked")
    token = request.headers.get("Lock-Token", "").strip().removeprefix("<").removesuffix(">")
    if not token:
        raise ApiError(400, "UNLOCK needs a Lock-Token header")
    found = table.get(account.address, token)
    if found is None or not found.covers(path):
        raise _precondition(409, "lock-token-matches-request-uri")
    table.release(account.address, token)
    return web.Response(status=204)
