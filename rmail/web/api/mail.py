"""Folders, messages and flags of the logged-in user.

Original routes: ``GET /folders``; ``GET|POST /folders/{folder}/messages``;
``GET|DELETE /folders/{folder}/messages/{uid}``; ``PATCH .../{uid}/flags``. Added: folder
create/rename/delete, ``?format=json`` parsed messages, attachments, search in listings,
flag add/remove, move and copy. A folder in a path is one segment: ``Archive%2F2024``.

Listings are newest first (highest UID first). Flags use IMAP names (``\\Seen``,
``\\Flagged``, ``$Forwarded``...).
"""

from __future__ import annotations

import asyncio
import datetime
import re
import urllib.parse
from collections.abc import Iterator
from typing import Any, Final

from aiohttp import web

from rmail.errors import InvalidInput, NotFound
from rmail.events import FlagsChanged, MessageAdded, MessagesExpunged
from rmail.message import Summary, attachment_bytes, parse, sanitize_html
from rmail.store.accounts import Account
from rmail.store.maildir import SPECIAL_USE, Folder, Mailbox
from rmail.store.mailindex import MessageMeta
from rmail.web.api import API, current_account
from rmail.web.http import ApiError, field, json_body
from rmail.web.mailsearch import SUMMARIES, matches, parse_search

MAX_LIMIT: Final = 1000
DEFAULT_LIMIT: Final = 50
# A flag: a system flag or an IMAP keyword atom (RFC 3501 §9 flag-keyword).
_FLAG = re.compile(
    r"^(\\(?i:seen|answered|flagged|deleted|draft)|[^\x00-\x20(){%*\"\\\]\x7f]{1,100})$"
)


def _mailbox(request: web.Request, account: Account) -> Mailbox:
    return request.app[API].store.mailbox(account.address)


def _folder_name(request: web.Request) -> str:
    return request.match_info["folder"]


def _uid(request: web.Request) -> int:
    try:
        uid = int(request.match_info["uid"])
    except ValueError:
        raise ApiError(400, "uid must be a number") from None
    if not 0 < uid < 2**32:
        raise ApiError(400, "uid out of range")
    return uid


def _flags(value: Any, name: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(f, str) for f in value):
        raise ApiError(400, f"field {name!r} must be a list of flag names")
    for flag in value:
        if not _FLAG.match(flag) or flag.lower() == "\\recent":
            raise ApiError(400, f"invalid flag {flag!r}")
    return list(value)


def _iso(epoch: int) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).isoformat()


# -- folders ---------------------------------------------------------------------------------


async def list_folders(request: web.Request) -> web.Response:
    account = await current_account(request)

    def work() -> list[dict[str, Any]]:
        return [
            {
                "name": info.name,
                "total": total,
                "unread": unseen,
                "special_use": info.special_use,
                "subscribed": info.subscribed,
            }
            for info, total, unseen in _mailbox(request, account).folder_counts()
        ]

    return web.json_response({"folders": await asyncio.to_thread(work)})


async def create_folder(request: web.Request) -> web.Response:
    account = await current_account(request)
    data = await json_body(request)
    name = field(data, "name", str)
    special = field(data, "special_use", str, required=False)
    if special is not None and special not in SPECIAL_USE:
        raise ApiError(400, f"special_use must be one of {', '.join(sorted(SPECIAL_USE))}")
    await asyncio.to_thread(_mailbox(request, account).create_folder, name, special)
    return web.json_response({"name": name}, status=201)


async def rename_folder(request: web.Request) -> web.Response:
    account = await current_account(request)
    data = await json_body(request)
    new = field(data, "name", str)
    await asyncio.to_thread(_mailbox(request, account).rename_folder, _folder_name(request), new)
    return web.json_response({"name": new})


async def delete_folder(request: web.Request) -> web.Response:
    account = await current_account(request)
    await asyncio.to_thread(_mailbox(request, account).delete_folder, _folder_name(request))
    return web.Response(status=204)


# -- listing and search ----------------------------------------------------------------------


def _newest_first(folder: Folder) -> Iterator[MessageMeta]:
    index = folder.index
    for pos in range(len(index) - 1, -1, -1):
        yield index.meta_at(pos)


def _item(folder: Folder, meta: MessageMeta) -> dict[str, Any]:
    try:
        summary = SUMMARIES.get(folder, meta)
    except NotFound:  # expunged by another session meanwhile
        summary = Summary("", [], [], None, False, "")
    return {
        "uid": meta.uid,
        "subject": summary.subject,
        "from": [a.to_json() for a in summary.from_],
        "to": [a.to_json() for a in summary.to],
        "date": summary.date,
        "internal_date": _iso(meta.date),
        "size": meta.size,
        "flags": list(meta.flags),
        "has_attachments": summary.has_attachments,
        "preview": summary.preview,
    }


async def list_messages(request: web.Request) -> web.Response:
    account = await current_account(request)
    query = request.query
    try:
        offset = int(query.get("offset", "0"))
        limit = int(query.get("limit", str(DEFAULT_LIMIT)))
    except ValueError:
        raise ApiError(400, "offset and limit must be numbers") from None
    if offset < 0:
        raise ApiError(400, "offset must be 0 or more")
    if not 1 <= limit <= MAX_LIMIT:
        raise ApiError(400, f"limit must be 1 to {MAX_LIMIT}")
    search = parse_search(query)
    name = _folder_name(request)

    def work() -> dict[str, Any]:
        folder = _mailbox(request, account).folder(name)
        if search.empty:
            total = len(folder.index)
            metas = []
            for pos in range(total - 1 - offset, max(-1, total - 1 - offset - limit), -1):
                metas.append(folder.index.meta_at(pos))
        else:
            matched = [m for m in _newest_first(folder) if matches(folder, m, search)]
            total = len(matched)
            metas = matched[offset : offset + limit]
        return {
            "folder": folder.name,
            "total": total,
            "offset": offset,
            "limit": limit,
            "messages": [_item(folder, m) for m in metas],
        }

    return web.json_response(await asyncio.to_thread(work))


# -- one message -----------------------------------------------------------------------------


async def append_message(request: web.Request) -> web.Response:
    account = await current_account(request)
    services = request.app[API]
    limit = services.max_message_size
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "message too large")
    raw = await request.content.read(limit + 1)
    if len(raw) > limit:
        raise ApiError(413, "message too large")
    if not raw.strip():
        raise ApiError(400, "empty message")
    flags = _flags(request.query.getall("flag", []), "flag")
    name = _folder_name(request)

    def work() -> tuple[str, int]:
        folder = _mailbox(request, account).folder(name)
        return folder.name, folder.append(raw, flags).uid

    folder_name, uid = await asyncio.to_thread(work)
    services.events.publish(MessageAdded(account.address, folder_name, uid))
    return web.json_response({"folder": folder_name, "uid": uid}, status=201)


async def get_message(request: web.Request) -> web.StreamResponse:
    account = await current_account(request)
    name, uid = _folder_name(request), _uid(request)
    query = request.query
    as_json = query.get("format", "raw") == "json"
    if query.get("format", "raw") not in ("raw", "json"):
        raise ApiError(400, "format must be raw or json")

    def work() -> tuple[bytes, MessageMeta]:
        folder = _mailbox(request, account).folder(name)
        return folder.read(uid), folder.index.get(uid)

    raw, meta = await asyncio.to_thread(work)
    if not as_json:
        return web.Response(body=raw, content_type="message/rfc822")
    try:
        max_bytes = int(query.get("maxBytes", "0"))
    except ValueError:
        raise ApiError(400, "maxBytes must be a number") from None
    raw_html = query.get("raw_html", "") in ("1", "true")
    parsed = await asyncio.to_thread(parse, raw)
    text = parsed.text
    truncated = False
    if text is not None and max_bytes > 0:
        encoded = text.encode("utf-8")
        if len(encoded) > max_bytes:
            text = encoded[:max_bytes].decode("utf-8", "ignore")
            truncated = True
    html = parsed.html
    if html is not None and not raw_html:
        html = await asyncio.to_thread(sanitize_html, html)
    body = {
        "uid": uid,
        "folder": name,
        "flags": list(meta.flags),
        "size": meta.size,
        "internal_date": _iso(meta.date),
        "subject": parsed.subject,
        "from": [a.to_json() for a in parsed.from_],
        "to": [a.to_json() for a in parsed.to],
        "cc": [a.to_json() for a in parsed.cc],
        "bcc": [a.to_json() for a in parsed.bcc],
        "reply_to": [a.to_json() for a in parsed.reply_to],
        "date": parsed.date,
        "message_id": parsed.message_id,
        "in_reply_to": parsed.in_reply_to,
        "references": parsed.references,
        "headers": [{"name": n, "value": v} for n, v in parsed.headers],
        "text": text,
        "text_truncated": truncated,
        "html": html,
        "attachments": [a.to_json() for a in parsed.attachments],
    }
    return web.json_response(body)


async def get_attachment(request: web.Request) -> web.StreamResponse:
    account = await current_account(request)
    name, uid, part = _folder_name(request), _uid(request), request.match_info["part"]
    raw = await asyncio.to_thread(lambda: _mailbox(request, account).folder(name).read(uid))
    found = await asyncio.to_thread(attachment_bytes, raw, part)
    if found is None:
        raise ApiError(404, f"no part {part} in message {uid}")
    content, content_type, filename = found
    disposition = "attachment"
    if filename:
        quoted = urllib.parse.quote(filename, safe="")
        disposition += f"; filename*=UTF-8''{quoted}"
    return web.Response(
        body=content,
        content_type=content_type,
        headers={
            "Content-Disposition": disposition,
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox",
        },
    )


async def delete_message(request: web.Request) -> web.Response:
    account = await current_account(request)
    name, uid = _folder_name(request), _uid(request)

    def work() -> tuple[str, list[MessageMeta]]:
        folder = _mailbox(request, account).folder(name)
        folder.index.get(uid)  # NotFound before anything changes
        return folder.name, folder.expunge([uid])

    folder_name, gone = await asyncio.to_thread(work)
    if gone:
        request.app[API].events.publish(
            MessagesExpunged(account.address, folder_name, tuple(m.uid for m in gone))
        )
    return web.Response(status=204)


async def change_flags(request: web.Request) -> web.Response:
    account = await current_account(request)
    name, uid = _folder_name(request), _uid(request)
    data = await json_body(request)
    ops: list[tuple[str, list[str]]] = []
    if "flags" in data:
        ops.append(("set", _flags(data["flags"], "flags")))
    for key, op in (("add", "add"), ("remove", "remove")):
        if key in data:
            ops.append((op, _flags(data[key], key)))
    if not ops:
        raise ApiError(400, "give flags (replace), add or remove")
    if "flags" in data and len(ops) > 1:
        raise ApiError(400, "flags replaces all flags: do not combine it with add or remove")

    def work() -> tuple[str, MessageMeta, bool]:
        folder = _mailbox(request, account).folder(name)
        changed = False
        after = folder.index.get(uid)
        for op, flags in ops:
            before, after = folder.change_flags(uid, op, flags)  # type: ignore[arg-type]
            changed = changed or before.modseq != after.modseq
        return folder.name, after, changed

    folder_name, after, changed = await asyncio.to_thread(work)
    if changed:
        request.app[API].events.publish(
            FlagsChanged(account.address, folder_name, uid, after.modseq)
        )
    return web.json_response({"uid": uid, "flags": list(after.flags)})


async def _transfer(request: web.Request, move: bool) -> web.Response:
    account = await current_account(request)
    name, uid = _folder_name(request), _uid(request)
    data = await json_body(request)
    target = field(data, "folder", str)

    def work() -> tuple[str, str, int]:
        box = _mailbox(request, account)
        source = box.folder(name)
        dest = box.folder(target)
        if source.dir == dest.dir:
            raise InvalidInput("source and target folder are the same")
        source.index.get(uid)
        pairs = source.move_to([uid], dest) if move else source.copy_to([uid], dest)
        if not pairs:
            raise NotFound(f"no message with UID {uid}")
        return source.name, dest.name, pairs[0][1]

    source_name, dest_name, new_uid = await asyncio.to_thread(work)
    events = request.app[API].events
    events.publish(MessageAdded(account.address, dest_name, new_uid))
    if move:
        events.publish(MessagesExpunged(account.address, source_name, (uid,)))
    return web.json_response({"folder": dest_name, "uid": new_uid}, status=201)


async def move_message(request: web.Request) -> web.Response:
    """Body ``{"folder": target}``; 201 ``{folder, uid}`` with the UID in the target."""
    return await _transfer(request, move=True)


async def copy_message(request: web.Request) -> web.Response:
    """Body ``{"folder": target}``; 201 ``{folder, uid}`` of the copy."""
    return await _transfer(request, move=False)


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/folders", list_folders)
    r.add_post("/folders", create_folder)
    r.add_patch("/folders/{folder}", rename_folder)
    r.add_delete("/folders/{folder}", delete_folder)
    r.add_get("/folders/{folder}/messages", list_messages)
    r.add_post("/folders/{folder}/messages", append_message)
    r.add_get("/folders/{folder}/messages/{uid}", get_message)
    r.add_delete("/folders/{folder}/messages/{uid}", delete_message)
    r.add_patch("/folders/{folder}/messages/{uid}/flags", change_flags)
    r.add_post("/folders/{folder}/messages/{uid}/move", move_message)
    r.add_post("/folders/{folder}/messages/{uid}/copy", copy_message)
    r.add_get("/folders/{folder}/messages/{uid}/attachments/{part}", get_attachment)
