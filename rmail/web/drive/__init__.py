"""The drive over HTTP: ``/drive/{path}`` for the owner, ``/drive/{uid}/{name}`` for a share.

Owner methods (HTTP Basic or a bearer token): GET/HEAD (a folder: JSON listing; a file: its
bytes with ETag, If-None-Match → 304, Range → 206), PUT (parents created; If-Match,
If-None-Match: *), POST ``?action=mkdir`` or a multipart upload (each part's filename,
which may hold ``/`` for folder uploads, lands at ``{path}/{filename}``), DELETE (file or
tree), MKCOL, and WebDAV class 1 and 2: PROPFIND (XML, or JSON with ``Accept:
application/json``; propfind.py), PROPPATCH (dead properties; proppatch.py), COPY and MOVE
(copymove.py), LOCK and UNLOCK (lock.py, with the in-memory table of locks.py; the If
header is parsed in ifheader.py and checked in base.py). Share management: ``POST/GET
/drive/_share``, ``GET/PATCH/DELETE /drive/_share/{uid}``.

A share link needs no login: GET/HEAD always (R); C lets visitors create files and
folders below a shared folder, U overwrite files, D delete below the share root (never the
root). Expired or revoked links answer 404, as does any path that is not below the share.
Downloads carry ``X-Content-Type-Options: nosniff``; from a share, HTML, SVG and XML are
sent as attachments under a sandboxing CSP, so a shared file cannot run script on this
origin.

Bodies stream: uploads go to disk as they arrive, downloads are sent from the file
(``sendfile``).
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import urllib.parse
from collections.abc import Callable, Coroutine
from typing import Any, Final

from aiohttp import hdrs, web
from aiohttp.helpers import ETag

from rmail.errors import AlreadyExists, InvalidInput, NotFound
from rmail.store.accounts import Account
from rmail.store.drive import Drive, Entry, PreconditionFailedError, split_path
from rmail.store.shares import Share, Shares, is_share_uid
from rmail.web.api import API
from rmail.web.auth import authenticate
from rmail.web.davlocks import LockTable
from rmail.web.drive.base import (
    DRIVES,
    PREFIX,
    DriveServices,
    check_if,
    drive_of,
    owner_list,
    require_unlocked,
)
from rmail.web.drive.copymove import copy_or_move
from rmail.web.drive.listing import listing_json
from rmail.web.drive.lock import lock, unlock
from rmail.web.drive.propfind import propfind
from rmail.web.drive.proppatch import proppatch
from rmail.web.drive.stream import pump, read_piece, wide_reads
from rmail.web.http import ApiError, field, json_body

__all__ = ["setup"]

CHUNK: Final = 256 * 1024
_ACTIVE_TYPES: Final = (
    "text/html",
    "image/svg+xml",
    "application/xhtml+xml",
    "text/xml",
    "application/xml",
    "text/javascript",
    "application/javascript",
)
ALLOW: Final = (
    "OPTIONS, GET, HEAD, PUT, POST, DELETE, MKCOL, COPY, MOVE, PROPFIND, PROPPATCH, LOCK, UNLOCK"
)
DAV_HEADERS: Final = {"DAV": "1, 2", "MS-Author-Via": "DAV", "Allow": ALLOW}


# -- streaming helpers -----------------------------------------------------------------------


class _ContentFile(web.FileResponse):
    """A file response whose ETag is the drive's content hash, not aiohttp's mtime-size."""

    def __init__(self, path: Any, etag: str, **kwargs: Any) -> None:
        super().__init__(path, chunk_size=CHUNK, **kwargs)
        self._content_etag = etag

    @property
    def etag(self) -> ETag | None:
        return ETag(value=self._content_etag.strip('"'))

    @etag.setter
    def etag(self, value: Any) -> None:
        self.headers[hdrs.ETAG] = self._content_etag


async def _send_file(
    request: web.Request, drive: Drive, path: str, public: bool
) -> web.StreamResponse:
    entry = await asyncio.to_thread(drive.stat, path)
    if entry.type != "file":
        raise ApiError(404, "not a file")
    if request.headers.get("If-None-Match", "") in (entry.etag, "*"):
        return web.Response(status=304, headers={"ETag": entry.etag})
    file_path = await asyncio.to_thread(drive.file_path, path)
    headers = {"Content-Type": entry.content_type, "X-Content-Type-Options": "nosniff"}
    if public and entry.content_type.split(";")[0] in _ACTIVE_TYPES:
        headers["Content-Disposition"] = _disposition(entry.name)
        headers["Content-Security-Policy"] = "sandbox; default-src 'none'"
    response = _ContentFile(file_path, entry.etag, headers=headers)
    return response


def _disposition(name: str) -> str:
    return f"attachment; filename*=UTF-8''{urllib.parse.quote(name, safe='')}"


async def _get(
    request: web.Request, drive: Drive, path: str, *, shown: str | None = None
) -> web.StreamResponse:
    """A file's bytes or a folder's listing; ``shown`` is the path a share visitor sees
    (relative to the share), None for the owner."""

    def look() -> tuple[Entry, tuple[int, ...]]:
        entry = drive.stat(path)
        return entry, drive.version(path) if entry.type == "dir" else ()

    entry, version = await asyncio.to_thread(look)  # one thread trip for both
    if entry.type == "file":
        return await _send_file(request, drive, path, public=shown is not None)
    shown_path = path if shown is None else shown
    services = request.app[DRIVES]
    key = (str(drive.root), path, "json", shown_path)
    body = services.rendered.get(key, version)
    if body is None:
        entries, own, total = await asyncio.to_thread(drive.listing, path)
        shown = "/" + "/".join(split_path(shown_path))
        body = listing_json(shown, entries, own, total)
        services.rendered.put(key, version, body)
    return web.Response(body=body, content_type="application/json")


async def _put(
    request: web.Request,
    drive: Drive,
    path: str,
    *,
    allow_create: bool = True,
    allow_update: bool = True,
) -> web.Response:
    if_match = request.headers.get("If-Match")
    if_none_match = request.headers.get("If-None-Match", "").strip() == "*"
    try:
        existing = await asyncio.to_thread(drive.stat, path)
    except NotFound:
        existing = None
    if existing is None and not allow_create:
        raise ApiError(403, "this share does not allow creating files")
    if existing is not None and not allow_update:
        raise ApiError(403, "this share does not allow changing files")
    try:
        # What has arrived, as it arrives: joining it into bigger blocks, here or in the
        # writer, cost more CPU (docs/performance.md, Drive).
        with wide_reads(request.transport):
            entry, created = await pump(
                functools.partial(read_piece, request.content),
                lambda chunks: drive.write(
                    path,
                    chunks,
                    if_match=if_match,
                    if_none_match=if_none_match,
                    size_hint=request.content_length,
                ),
            )
    except AlreadyExists:
        raise ApiError(412, "the file exists (If-None-Match: *)") from None
    except PreconditionFailedError as exc:
        raise ApiError(412, str(exc)) from None
    return web.json_response(
        entry.to_json(), status=201 if created else 200, headers={"ETag": entry.etag}
    )


async def _upload(
    request: web.Request, drive: Drive, path: str, *, allow_update: bool = True
) -> web.Response:
    """POST multipart/form-data: every part with a filename is stored below ``path``."""
    if not request.content_type.startswith("multipart/"):
        raise ApiError(400, "send multipart/form-data, or ?action=mkdir")
    reader = await request.multipart()
    stored: list[dict[str, Any]] = []
    base = split_path(path)
    while True:
        part = await reader.next()
        if part is None:
            break
        filename = getattr(part, "filename", None)
        if not filename:
            continue
        target = "/".join([*base, *split_path(filename)])
        if not allow_update:
            try:
                await asyncio.to_thread(drive.stat, target)
            except NotFound:
                pass
            else:
                raise ApiError(403, "this share does not allow changing files")
        entry = await _store_part(drive, target, part)
        stored.append({"path": "/" + target, **entry.to_json()})
    if not stored:
        raise ApiError(400, "no file in the upload (parts need a filename)")
    return web.json_response({"stored": stored}, status=201)


async def _store_part(drive: Drive, target: str, part: Any) -> Entry:
    async def read() -> bytes:
        chunk: bytes = await part.read_chunk(CHUNK)
        return chunk

    entry, _ = await pump(read, lambda chunks: drive.write(target, chunks))
    return entry


# -- the owner's drive -----------------------------------------------------------------------


async def owner_request(request: web.Request, account: Account, path: str) -> web.StreamResponse:
    drive = drive_of(request, account.address)
    user = account.address
    method = request.method
    handler = _DAV_METHODS.get(method)
    if handler is not None:
        return await handler(request, user, drive, path)
    if method in ("GET", "HEAD"):
        return await _get(request, drive, path)
    parts = tuple(split_path(path))
    if method in ("PUT", "POST", "MKCOL", "DELETE"):
        await asyncio.to_thread(check_if, request, user, drive, parts)
        # Replacing a file leaves its folder's membership alone; anything else changes it.
        members = method != "PUT" or not await _exists(drive, path)
        require_unlocked(request, user, parts, members=members, tree=method != "PUT")
    if method == "PUT":
        return await _put(request, drive, path)
    if method == "POST":
        if request.query.get("action") == "mkdir":
            entry = await asyncio.to_thread(drive.mkdir, path)
            return web.json_response(entry.to_json(), status=201)
        return await _upload(request, drive, path)
    if method == "MKCOL":
        if await request.content.read(1):
            raise ApiError(415, "MKCOL with a body is not supported")
        try:
            entry = await asyncio.to_thread(drive.mkdir, path)
        except AlreadyExists:
            raise ApiError(405, "it exists") from None
        except NotFound:
            raise ApiError(409, "the parent folder does not exist") from None
        except InvalidInput:
            if parts and await _exists(drive, "/".join(parts)):
                raise ApiError(405, "it exists") from None
            raise
        return web.json_response(entry.to_json(), status=201)
    if method == "DELETE":
        if not parts:
            raise ApiError(403, "the root folder cannot be deleted")
        try:
            await asyncio.to_thread(
                lambda: drive.delete(path, if_match=request.headers.get("If-Match"))
            )
        except PreconditionFailedError as exc:
            raise ApiError(412, str(exc)) from None
        request.app[DRIVES].locks.drop_below(user, parts)
        return web.Response(status=204)
    raise ApiError(405, f"{method} is not supported here", {"Allow": ALLOW})


async def _exists(drive: Drive, path: str) -> bool:
    try:
        await asyncio.to_thread(drive.stat, path)
    except NotFound:
        return False
    return True


_DAV_METHODS: Final[
    dict[str, Callable[[web.Request, str, Drive, str], Coroutine[Any, Any, web.Response]]]
] = {
    "PROPFIND": propfind,
    "PROPPATCH": proppatch,
    "COPY": copy_or_move,
    "MOVE": copy_or_move,
    "LOCK": lock,
    "UNLOCK": unlock,
}


# -- share management ------------------------------------------------------------------------


def _expires(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            parsed = datetime.datetime.fromisoformat(value)
        except ValueError:
            raise ApiError(400, "expires is an ISO 8601 time or Unix seconds") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=datetime.UTC)
        return parsed.timestamp()
    raise ApiError(400, "expires is an ISO 8601 time or Unix seconds")


def _share_json(request: web.Request, share: Share) -> dict[str, Any]:
    url = f"{request.scheme}://{request.host}{PREFIX}/{share.uid}/"
    url += urllib.parse.quote(share.name)
    return {**share.to_json(), "url": url, "expired": share.expired}


async def shares_request(request: web.Request, account: Account, rest: str) -> web.StreamResponse:
    services = request.app[DRIVES]
    listing = owner_list(request, account.address)
    drive = drive_of(request, account.address)
    if rest == "":
        if request.method == "GET":
            found = await asyncio.to_thread(services.shares.list, account.address, listing)
            return web.json_response({"shares": [_share_json(request, s) for s in found]})
        if request.method != "POST":
            raise ApiError(405, "GET or POST", {"Allow": "GET, POST"})
        data = await json_body(request)
        target = field(data, "path", str)
        entry = await asyncio.to_thread(drive.stat, target)
        name = field(data, "name", str, required=False) or entry.name or "drive"
        split_path(name)  # a share name is one valid path component
        permissions = field(data, "permissions", str, required=False) or "R"
        if entry.type == "file" and set(permissions.upper()) & {"C", "D"}:
            raise ApiError(400, "C and D apply to shared folders only")
        expires = _expires(data.get("expires"))
        share = await asyncio.to_thread(
            lambda: services.shares.create(
                account.address,
                listing,
                "/" + "/".join(split_path(target)),
                name=name,
                permissions=permissions,
                expires=expires,
            )
        )
        return web.json_response(_share_json(request, share), status=201)
    uid = rest
    if request.method == "GET":
        share = await asyncio.to_thread(services.shares.get_owned, account.address, uid)
        return web.json_response(_share_json(request, share))
    if request.method == "PATCH":
        data = await json_body(request)
        changes: dict[str, Any] = {}
        if "permissions" in data:
            changes["permissions"] = field(data, "permissions", str)
        if "expires" in data:
            changes["expires"] = _expires(data["expires"])
        if "name" in data:
            name = field(data, "name", str)
            split_path(name)
            changes["name"] = name
        share = await asyncio.to_thread(
            lambda: services.shares.update(account.address, uid, **changes)
        )
        return web.json_response(_share_json(request, share))
    if request.method == "DELETE":
        await asyncio.to_thread(services.shares.delete, account.address, listing, uid)
        return web.Response(status=204)
    raise ApiError(405, "GET, PATCH or DELETE", {"Allow": "GET, PATCH, DELETE"})


# -- public share links ----------------------------------------------------------------------


async def share_request(request: web.Request, share: Share, parts: list[str]) -> web.StreamResponse:
    """``parts`` are what follows ``/drive/{uid}/``: the share name, then a sub-path."""
    if not parts or parts[0] != share.name:
        raise ApiError(404, "not found")
    drive = drive_of(request, share.owner)
    root = split_path(share.target_path)
    sub = parts[1:]
    path = "/".join(root + sub)
    root_entry = await asyncio.to_thread(drive.stat, share.target_path)
    if root_entry.type == "file" and sub:
        raise ApiError(404, "not found")
    method = request.method
    if method in ("GET", "HEAD"):
        return await _get(request, drive, path, shown="/".join(sub))
    if method in ("PUT", "POST", "MKCOL", "DELETE"):
        # A visitor holds no lock token: a locked file or folder is read-only to the link.
        require_unlocked(request, share.owner, tuple(split_path(path)), members=True, tree=True)
    if method == "PUT":
        return await _put(
            request,
            drive,
            path,
            allow_create=share.allows("C") and bool(sub),
            allow_update=share.allows("U"),
        )
    if method == "POST" and root_entry.type == "dir":
        if not share.allows("C"):
            raise ApiError(403, "this share does not allow creating files")
        if request.query.get("action") == "mkdir":
            entry = await asyncio.to_thread(drive.mkdir, path)
            return web.json_response(entry.to_json(), status=201)
        return await _upload(request, drive, path, allow_update=share.allows("U"))
    if method == "MKCOL" and root_entry.type == "dir":
        if not share.allows("C"):
            raise ApiError(403, "this share does not allow creating folders")
        try:
            entry = await asyncio.to_thread(drive.mkdir, path)
        except AlreadyExists:
            raise ApiError(405, "it exists") from None
        return web.json_response(entry.to_json(), status=201)
    if method == "DELETE":
        if not share.allows("D"):
            raise ApiError(403, "this share does not allow deleting")
        if not sub:
            raise ApiError(403, "the shared item itself cannot be deleted through its link")
        await asyncio.to_thread(drive.delete, path)
        return web.Response(status=204)
    raise ApiError(405, f"{method} is not allowed on a share link", {"Allow": "GET, HEAD"})


# -- the entry point -------------------------------------------------------------------------


async def dispatch(request: web.Request) -> web.StreamResponse:
    if request.method == "OPTIONS":
        return web.Response(headers=DAV_HEADERS)
    if "#" in request.raw_path:
        raise ApiError(400, "a request URI has no fragment")
    raw = request.match_info.get("path", "")
    segments = [urllib.parse.unquote(s) for s in raw.split("/") if s != ""]
    try:
        for segment in segments:
            if "/" in segment or segment in (".", ".."):
                raise InvalidInput("bad path")
    except InvalidInput:
        raise ApiError(400, "bad path") from None
    path = "/".join(segments)
    authorized = "Authorization" in request.headers
    first = segments[0] if segments else ""
    if first == "_share":
        account = await authenticate(request, "drive")
        if len(segments) > 2:
            raise ApiError(404, "not found")
        return await shares_request(request, account, segments[1] if len(segments) == 2 else "")
    if is_share_uid(first) and not authorized:
        share = await asyncio.to_thread(request.app[DRIVES].shares.get, first)
        return await share_request(request, share, segments[1:])
    account = await authenticate(request, "drive")
    if is_share_uid(first):
        try:
            await asyncio.to_thread(drive_of(request, account.address).stat, first)
        except NotFound:
            share = await asyncio.to_thread(request.app[DRIVES].shares.get, first)
            return await share_request(request, share, segments[1:])
    return await owner_request(request, account, path)


def setup(app: web.Application) -> None:
    store = app[API].store
    app[DRIVES] = DriveServices(Shares(store.root, fsync=store.fsync), {}, LockTable())
    app.router.add_route("*", PREFIX, _redirect_root)
    app.router.add_route("*", PREFIX + "/{path:.*}", dispatch)


async def _redirect_root(request: web.Request) -> web.StreamResponse:
    raise web.HTTPPermanentRedirect(PREFIX + "/")
