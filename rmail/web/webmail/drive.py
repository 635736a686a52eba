"""Webmail drive pages: browse folders as tiles, upload (files, whole folders, drag and
drop), new folder, rename, move, delete (one or many, confirmed), downloads and share links.

Routes (all under ``/webmail``, all need the session; every POST carries the CSRF token):

- ``GET /drive/{path}``: a folder's page (``/drive/`` is the root); a file's path redirects
  to its download.
- ``POST /drive/{path}``: multipart/form-data is an upload into that folder, streamed part
  by part to :meth:`Drive.write` in a thread (never the whole file in memory). The CSRF
  token must come as the first part, before any file, so it is checked before a byte is
  stored; browsers send fields in document order and drive.js appends it first. Each
  file's name may hold ``/`` (a folder upload sends relative paths) and goes through the
  drive's path rules. Any other POST is an action: ``mkdir``, ``rename``, ``move``,
  ``delete`` (a confirmation page first unless ``confirmed=1``).
- ``GET /drive-file/{path}``: a download (attachment, nosniff, sandboxing CSP).
- ``GET /drive-shares`` (``?path=`` for one item's share dialog), ``POST /drive-shares``:
  create, update and revoke share links (:class:`rmail.store.shares.Shares`).

Only the session's own drive is reached: paths are relative to it, and shares are looked up
with their owner, so editing a URL cannot reach another user's file or share (404).
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import urllib.parse
from typing import Any, Final

import aiohttp_jinja2
from aiohttp import BodyPartReader, web

from rmail.errors import AlreadyExists, InvalidInput, NotFound, QuotaExceeded, RmailError
from rmail.store.drive import Drive, Entry, Totals, split_path
from rmail.store.shares import Share
from rmail.web.drive.base import DRIVES
from rmail.web.drive.base import PREFIX as PUBLIC_PREFIX
from rmail.web.drive.base import drive_of as _drive
from rmail.web.drive.base import owner_list as _owner_list
from rmail.web.drive.stream import pump
from rmail.web.webmail import AREAS, PREFIX, base_url, page
from rmail.web.webmail.mail import _context
from rmail.web.webmail.session import Session, check_csrf, load_session

__all__ = ["setup"]

CHUNK: Final = 256 * 1024
# The move target list walks the drive's folders; past this many it stops listing.
MAX_FOLDER_CHOICES: Final = 500
# Upper bound for the CSRF part of an upload (the token is 32 characters).
MAX_CSRF_BYTES: Final = 256
_KINDS: Final = {
    "image": "image",
    "audio": "audio",
    "video": "video",
    "text": "text",
    "application/pdf": "pdf",
    "application/zip": "archive",
    "application/gzip": "archive",
    "application/x-tar": "archive",
    "application/x-7z-compressed": "archive",
    "application/json": "code",
    "application/javascript": "code",
    "text/html": "code",
    "text/x-python": "code",
}


# -- helpers ---------------------------------------------------------------------------------


def _quoted(parts: list[str]) -> str:
    return "/".join(urllib.parse.quote(p, safe="") for p in parts)


def drive_url(request: web.Request, path: str, area: str = "drive") -> str:
    """The absolute URL of a drive path in the webmail (``area``: drive or drive-file)."""
    parts = split_path(path)
    tail = _quoted(parts)
    if area == "drive":
        return f"{base_url(request)}{PREFIX}/drive/{tail}" + ("/" if parts else "")
    return f"{base_url(request)}{PREFIX}/{area}/{tail}"


def _shares_url(request: web.Request, path: str | None = None) -> str:
    url = f"{base_url(request)}{PREFIX}/drive-shares"
    if path is not None:
        url += "?" + urllib.parse.urlencode({"path": path})
    return url


def _show(path: str) -> str:
    """The canonical ``/a/b`` form of a drive path (``/`` for the root)."""
    return "/" + "/".join(split_path(path))


def _join(folder: str, name: str) -> str:
    return "/".join([*split_path(folder), *split_path(name)])


def _kind(entry: Entry) -> str:
    if entry.type == "dir":
        return "folder"
    kind = entry.content_type.split(";")[0].strip().lower()
    return _KINDS.get(kind) or _KINDS.get(kind.split("/")[0]) or "file"


def _path_of(request: web.Request) -> str:
    raw = request.match_info.get("path", "")
    try:
        return "/".join(split_path(raw))
    except InvalidInput:
        raise web.HTTPNotFound(text="No such file or folder.") from None


def _status(exc: RmailError) -> int:
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, AlreadyExists):
        return 409
    if isinstance(exc, QuotaExceeded):
        return 413
    return 400


def _expires_at(day: str) -> float | None:
    """The end (UTC) of the ``YYYY-MM-DD`` day a share expires on; None for no expiry."""
    day = day.strip()
    if not day:
        return None
    try:
        date = datetime.date.fromisoformat(day)
    except ValueError:
        raise InvalidInput("the expiry is a date (YYYY-MM-DD)") from None
    end = datetime.datetime.combine(date, datetime.time(23, 59, 59), datetime.UTC)
    if end.timestamp() <= datetime.datetime.now(datetime.UTC).timestamp():
        raise InvalidInput("the expiry date has passed")
    return end.timestamp()


def _share_view(request: web.Request, share: Share) -> dict[str, Any]:
    link = f"{base_url(request)}{PUBLIC_PREFIX}/{share.uid}/{urllib.parse.quote(share.name)}"
    expires = (
        datetime.datetime.fromtimestamp(share.expires, datetime.UTC).date().isoformat()
        if share.expires is not None
        else ""
    )
    return {
        "uid": share.uid,
        "path": share.target_path,
        "name": share.name,
        "permissions": share.permissions,
        "expires": expires,
        "expired": share.expired,
        "link": link,
    }


def _form_text(form: Any, name: str) -> str:
    value = form.get(name, "")
    return value if isinstance(value, str) else ""


# -- the folder page -------------------------------------------------------------------------


async def _render_folder(
    request: web.Request,
    session: Session,
    path: str,
    *,
    error: str | None = None,
    status: int = 200,
) -> web.StreamResponse:
    drive = _drive(request, session.account.address)

    def work() -> tuple[list[Entry], Totals, list[str]]:
        entries, _, total = drive.listing(path)
        folders = [""]
        for rel, entry in drive.walk(""):
            if entry.type == "dir":
                folders.append(rel)
                if len(folders) >= MAX_FOLDER_CHOICES:
                    break
        return entries, total, folders

    try:
        entries, total, folders = await asyncio.to_thread(work)
    except NotFound:
        raise web.HTTPNotFound(text="No such folder.") from None
    parts = split_path(path)
    crumbs = [{"name": "Drive", "url": drive_url(request, "")}]
    for depth in range(1, len(parts) + 1):
        crumbs.append(
            {"name": parts[depth - 1], "url": drive_url(request, "/".join(parts[:depth]))}
        )
    tiles = []
    for entry in sorted(entries, key=lambda e: (e.type != "dir", e.name.lower())):
        child = "/".join([*parts, entry.name])
        tiles.append(
            {
                "name": entry.name,
                "path": "/" + child,
                "type": entry.type,
                "kind": _kind(entry),
                "size": entry.size,
                "mtime": datetime.datetime.fromtimestamp(entry.mtime, datetime.UTC).strftime(
                    "%Y-%m-%d %H:%M"
                ),
                "url": drive_url(request, child)
                if entry.type == "dir"
                else drive_url(request, child, "drive-file"),
                "share_url": _shares_url(request, "/" + child),
                "parent": "/" + "/".join(parts),
            }
        )
    uploaded = request.query.get("uploaded", "")
    notice = None
    if uploaded.isdigit():
        notice = f"{uploaded} file{'s' if uploaded != '1' else ''} uploaded."
        skipped = request.query.get("skipped", "")
        if skipped.isdigit() and skipped != "0":
            notice += f" {skipped} skipped (a name the drive does not allow)."
    context = _context(
        request,
        session,
        area="drive",
        area_page="drive",
        page_title="Drive" if not parts else parts[-1],
        path=_show(path),
        here=drive_url(request, path),
        crumbs=crumbs,
        tiles=tiles,
        total=total,
        folders=["/" + f for f in folders],
        shares_url=_shares_url(request),
        error=error,
        notice=notice,
    )
    return aiohttp_jinja2.render_template("drive.html", request, context, status=status)


@page
async def folder_page(request: web.Request, session: Session) -> web.StreamResponse:
    path = _path_of(request)
    if path:
        drive = _drive(request, session.account.address)
        try:
            entry = await asyncio.to_thread(drive.stat, path)
        except NotFound:
            raise web.HTTPNotFound(text="No such file or folder.") from None
        if entry.type == "file":
            raise web.HTTPSeeOther(drive_url(request, path, "drive-file"))
    return await _render_folder(request, session, path)


async def drive_root(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther(drive_url(request, ""))


@page
async def download(request: web.Request, session: Session) -> web.StreamResponse:
    path = _path_of(request)
    drive = _drive(request, session.account.address)
    try:
        entry = await asyncio.to_thread(drive.stat, path)
        if entry.type != "file":
            raise NotFound("not a file")
        file_path = await asyncio.to_thread(drive.file_path, path)
    except NotFound:
        raise web.HTTPNotFound(text="No such file.") from None
    return web.FileResponse(
        file_path,
        chunk_size=CHUNK,
        headers={
            "Content-Type": entry.content_type or "application/octet-stream",
            "Content-Disposition": "attachment; filename*=UTF-8''"
            + urllib.parse.quote(entry.name, safe=""),
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox; default-src 'none'",
        },
    )


# -- POST: upload or action ------------------------------------------------------------------


async def folder_post(request: web.Request) -> web.StreamResponse:
    if request.content_type.startswith("multipart/"):
        return await _upload(request)
    return await _action(request)


async def _upload(request: web.Request) -> web.StreamResponse:
    """Stream each file part of a multipart form into the folder of the URL."""
    session = await load_session(request)
    if session is None:
        raise web.HTTPForbidden(text="Your session has ended. Log in again.")
    reader = await request.multipart()
    first = await reader.next()
    token = None
    if isinstance(first, BodyPartReader) and first.name == "csrf" and not first.filename:
        raw = bytearray()
        while len(raw) <= MAX_CSRF_BYTES and (chunk := await first.read_chunk(MAX_CSRF_BYTES)):
            raw += chunk
        token = raw.decode("ascii", "replace")
    if not check_csrf(session, token):
        raise web.HTTPForbidden(text="The form has expired or was not sent by this site.")
    path = _path_of(request)
    drive = _drive(request, session.account.address)
    try:
        if path and (await asyncio.to_thread(drive.stat, path)).type != "dir":
            raise NotFound("not a folder")
    except NotFound:
        raise web.HTTPNotFound(text="No such folder.") from None
    stored = skipped = 0
    while True:
        part = await reader.next()
        if part is None:
            break
        if not isinstance(part, BodyPartReader) or not part.filename:
            continue
        try:
            # HTML §4.10.21.8 (multipart/form-data): browsers send '"' as %22 in a filename.
            target = _join(path, part.filename.replace("%22", '"'))
        except InvalidInput:
            skipped += 1
            continue
        try:
            await _store_part(drive, target, part)
        except QuotaExceeded:
            return await _render_folder(
                request, session, path, error="Not enough space: over quota.", status=413
            )
        except InvalidInput:
            skipped += 1
            continue
        stored += 1
    raise web.HTTPSeeOther(drive_url(request, path) + f"?uploaded={stored}&skipped={skipped}")


async def _store_part(drive: Drive, target: str, part: BodyPartReader) -> None:
    async def read() -> bytes:
        return await part.read_chunk(CHUNK)

    await pump(read, lambda chunks: drive.write(target, chunks))


@page
async def _action(request: web.Request, session: Session) -> web.StreamResponse:
    path = _path_of(request)
    form = await request.post()
    action = _form_text(form, "action")
    items = [i for i in form.getall("item", []) if isinstance(i, str) and i.strip("/")]
    drive = _drive(request, session.account.address)
    here = drive_url(request, path)
    try:
        if action == "mkdir":
            name = _form_text(form, "name").strip()
            await asyncio.to_thread(drive.mkdir, _join(path, name))
        elif action == "rename":
            if len(items) != 1:
                raise InvalidInput("choose one item to rename")
            source = split_path(items[0])
            name = _form_text(form, "name").strip()
            if len(split_path(name)) != 1:
                raise InvalidInput("a new name is one name, without '/'")
            target = "/".join([*source[:-1], name])
            if target != "/".join(source):
                await asyncio.to_thread(
                    lambda: drive.move("/".join(source), target, overwrite=False)
                )
        elif action == "move":
            if not items:
                raise InvalidInput("choose what to move")
            folder = split_path(_form_text(form, "target"))
            for item in items:
                source = split_path(item)
                target = "/".join([*folder, source[-1]])
                if target != "/".join(source):
                    await asyncio.to_thread(
                        functools.partial(drive.move, "/".join(source), target, overwrite=False)
                    )
        elif action == "delete":
            if not items:
                raise InvalidInput("choose what to delete")
            checked = ["/".join(split_path(i)) for i in items]
            if _form_text(form, "confirmed") != "1":
                return _confirm_delete(request, session, path, checked)
            for item in checked:
                await asyncio.to_thread(drive.delete, item)
        else:
            raise InvalidInput("unknown action")
    except RmailError as exc:
        message = "No such file or folder." if isinstance(exc, NotFound) else str(exc)
        if isinstance(exc, AlreadyExists):
            message = "Something with that name is already there."
        return await _render_folder(request, session, path, error=message, status=_status(exc))
    raise web.HTTPSeeOther(here)


def _confirm_delete(
    request: web.Request, session: Session, path: str, items: list[str]
) -> web.StreamResponse:
    context = _context(
        request,
        session,
        area="drive",
        area_page="drive",
        page_title="Delete?",
        items=["/" + i for i in items],
        shares_url=_shares_url(request),
        action_url=drive_url(request, path),
        back=drive_url(request, path),
    )
    return aiohttp_jinja2.render_template("drive_confirm.html", request, context)


# -- shares ----------------------------------------------------------------------------------


async def _render_shares(
    request: web.Request,
    session: Session,
    path: str | None,
    *,
    error: str | None = None,
    status: int = 200,
) -> web.StreamResponse:
    address = session.account.address
    services = request.app[DRIVES]
    owner_list = _owner_list(request, address)
    drive = _drive(request, address)
    entry = None
    if path is not None:
        try:
            entry = await asyncio.to_thread(drive.stat, path)
        except (NotFound, InvalidInput):
            raise web.HTTPNotFound(text="No such file or folder.") from None
        if not split_path(path):
            raise web.HTTPNotFound(text="The root folder is shared through its folders.")
    found = await asyncio.to_thread(services.shares.list, address, owner_list)
    if path is not None:
        found = [s for s in found if s.target_path == _show(path)]
    parent = "/".join(split_path(path or "")[:-1])
    context = _context(
        request,
        session,
        area="drive",
        area_page="drive" if path is not None else "shares",
        page_title="Share" if path is not None else "Shares",
        path=_show(path) if path is not None else None,
        entry=entry,
        shares=[_share_view(request, s) for s in found],
        shares_url=_shares_url(request),
        back=drive_url(request, parent),
        error=error,
        today=datetime.datetime.now(datetime.UTC).date().isoformat(),
    )
    return aiohttp_jinja2.render_template("drive_shares.html", request, context, status=status)


@page
async def shares_page(request: web.Request, session: Session) -> web.StreamResponse:
    path = request.query.get("path")
    return await _render_shares(request, session, path)


@page
async def shares_post(request: web.Request, session: Session) -> web.StreamResponse:
    address = session.account.address
    services = request.app[DRIVES]
    owner_list = _owner_list(request, address)
    drive = _drive(request, address)
    form = await request.post()
    action = _form_text(form, "action")
    path = _form_text(form, "path") or None
    letters = "".join(ch for ch in "CUD" if _form_text(form, f"perm_{ch}"))
    try:
        if action == "create":
            if path is None or not split_path(path):
                raise NotFound("choose a file or folder to share")
            entry = await asyncio.to_thread(drive.stat, path)
            if entry.type == "file" and set(letters) & {"C", "D"}:
                raise InvalidInput("create and delete apply to shared folders only")
            expires = _expires_at(_form_text(form, "expires"))
            target = _show(path)
            await asyncio.to_thread(
                lambda: services.shares.create(
                    address,
                    owner_list,
                    target,
                    name=entry.name,
                    permissions="R" + letters,
                    expires=expires,
                )
            )
        elif action in ("update", "revoke"):
            uid = _form_text(form, "uid")
            share = await asyncio.to_thread(services.shares.get_owned, address, uid)
            if action == "revoke":
                await asyncio.to_thread(services.shares.delete, address, owner_list, uid)
            else:
                kind = (await asyncio.to_thread(drive.stat, share.target_path)).type
                if kind == "file" and set(letters) & {"C", "D"}:
                    raise InvalidInput("create and delete apply to shared folders only")
                expires = _expires_at(_form_text(form, "expires"))
                await asyncio.to_thread(
                    lambda: services.shares.update(
                        address, uid, permissions="R" + letters, expires=expires
                    )
                )
        else:
            raise InvalidInput("unknown action")
    except NotFound:
        raise web.HTTPNotFound(text="No such share, file or folder.") from None
    except RmailError as exc:
        return await _render_shares(request, session, path, error=str(exc), status=_status(exc))
    raise web.HTTPSeeOther(_shares_url(request, path))


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get(PREFIX + "/drive", drive_root)
    r.add_get(PREFIX + "/drive/{path:.*}", folder_page)
    r.add_post(PREFIX + "/drive/{path:.*}", folder_post)
    r.add_get(PREFIX + "/drive-file/{path:.*}", download)
    r.add_get(PREFIX + "/drive-shares", shares_page)
    r.add_post(PREFIX + "/drive-shares", shares_post)
    app[AREAS].append(("drive", "Drive", False))
