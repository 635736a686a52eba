"""Webmail mail pages: login and logout, the folder sidebar, message lists with paging and
search, the message view (HTML in a sandboxed frame), attachments, bulk actions, compose
with reply and forward, and folder management."""

from __future__ import annotations

import asyncio
import datetime
import re
import urllib.parse
from typing import Any, Final

import aiohttp_jinja2
from aiohttp import web

from rmail.errors import InvalidInput, NotFound, PermissionDenied, RateLimited, RmailError
from rmail.events import FlagsChanged, MessageAdded, MessagesExpunged
from rmail.message import attachment_bytes, parse, sanitize_html
from rmail.store.accounts import Account
from rmail.store.maildir import Mailbox
from rmail.web.api import API
from rmail.web.api.send import special_folder
from rmail.web.mailsearch import SUMMARIES, matches, parse_search
from rmail.web.webmail import AREAS, PREFIX, base_url, page
from rmail.web.webmail.session import Session, end_session, load_session, start_session

__all__ = ["setup"]

PAGE_SIZE: Final = 50
_CID = re.compile(r"""(src\s*=\s*["'])cid:([^"']+)(["'])""", re.IGNORECASE)
_REMOTE_SRC = re.compile(r"""(<img\b[^>]*?\s)src\s*=(?=\s*["']?\s*(?:https?:)?//)""", re.IGNORECASE)
_REMOTE_IMG = re.compile(r"""<img\b[^>]*\bsrc\s*=\s*["']https?://""", re.IGNORECASE)


def _box(request: web.Request, account: Account) -> Mailbox:
    return request.app[API].store.mailbox(account.address)


def _url(request: web.Request, *parts: str, **query: Any) -> str:
    path = PREFIX + "".join("/" + urllib.parse.quote(p, safe="") for p in parts)
    if query:
        path += "?" + urllib.parse.urlencode(
            {k: v for k, v in query.items() if v not in (None, "")}
        )
    return base_url(request) + path


def _context(request: web.Request, session: Session, **extra: Any) -> dict[str, Any]:
    areas = [
        (name, label)
        for name, label, admin_only in request.app[AREAS]
        if session.account.admin or not admin_only
    ]
    return {
        "account": session.account,
        "csrf": session.csrf,
        "base": base_url(request),
        "url": lambda *p, **q: _url(request, *p, **q),
        "area": "mail",
        "extra_areas": areas,
        **extra,
    }


async def _folders(request: web.Request, account: Account) -> list[dict[str, Any]]:
    def work() -> list[dict[str, Any]]:
        return [
            {
                "name": info.name,
                "total": total,
                "unread": unseen,
                "special_use": info.special_use,
                "depth": info.name.count("/"),
            }
            for info, total, unseen in _box(request, account).folder_counts()
        ]

    return await asyncio.to_thread(work)


# -- login -----------------------------------------------------------------------------------


async def login_page(request: web.Request) -> web.StreamResponse:
    if await load_session(request) is not None:
        raise web.HTTPSeeOther(_url(request, "mail", "INBOX"))
    from rmail.web import CONFIG  # the package imports this module: import when serving

    context = {
        "base": base_url(request),
        "next": request.query.get("next", ""),
        "error": None,
        "url": lambda *p, **q: _url(request, *p, **q),
        "registration": request.app[CONFIG].webmail.registration,
    }
    return aiohttp_jinja2.render_template("login.html", request, context)


async def login_submit(request: web.Request) -> web.StreamResponse:
    # There is no session yet, so no CSRF token: a login form posted from another site
    # (which would log the victim into the attacker's account) is told apart by its Origin,
    # which browsers send with every POST.
    origin = request.headers.get("Origin")
    if origin is not None and origin != base_url(request):
        raise web.HTTPForbidden(text="The form was not sent by this site.")
    form = await request.post()
    address = str(form.get("username", "")).strip()
    password = str(form.get("password", ""))
    target = str(form.get("next", ""))
    context: dict[str, Any] = {
        "base": base_url(request),
        "next": target,
        "username": address,
        "url": lambda *p, **q: _url(request, *p, **q),
    }
    try:
        account = await request.app[API].authenticator.login(
            address, password, request.remote, "webmail"
        )
    except RateLimited:
        context["error"] = "Too many failed attempts. Try again later."
        return aiohttp_jinja2.render_template("login.html", request, context, status=429)
    except (PermissionDenied, RmailError):
        context["error"] = "Wrong address or password."
        return aiohttp_jinja2.render_template("login.html", request, context, status=401)
    if not target.startswith(PREFIX + "/") or target.startswith("//"):
        target = PREFIX + "/mail/INBOX"
    response = web.HTTPSeeOther(base_url(request) + target)
    start_session(request, response, account)
    raise response


@page
async def logout(request: web.Request, session: Session) -> web.StreamResponse:
    response = web.HTTPSeeOther(_url(request, "login"))
    end_session(request, response, session)
    raise response


async def home(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther(_url(request, "mail", "INBOX"))


# -- message list ----------------------------------------------------------------------------


@page
async def message_list(request: web.Request, session: Session) -> web.StreamResponse:
    account = session.account
    name = request.match_info["folder"]
    try:
        offset = max(0, int(request.query.get("offset", "0")))
    except ValueError:
        offset = 0
    query = request.query
    search = (
        parse_search(query)
        if any(
            query.get(k)
            for k in (
                "from",
                "to",
                "subject",
                "text",
                "search",
                "since",
                "before",
                "unseen",
                "flagged",
            )
        )
        else None
    )

    def work() -> tuple[str, int, list[dict[str, Any]]]:
        folder = _box(request, account).folder(name)
        index = folder.index
        if search is None:
            total = len(index)
            positions = range(total - 1 - offset, max(-1, total - 1 - offset - PAGE_SIZE), -1)
            metas = [index.meta_at(p) for p in positions]
        else:
            matched = [
                index.meta_at(p)
                for p in range(len(index) - 1, -1, -1)
                if matches(folder, index.meta_at(p), search)
            ]
            total = len(matched)
            metas = matched[offset : offset + PAGE_SIZE]
        rows = []
        for meta in metas:
            try:
                summary = SUMMARIES.get(folder, meta)
            except NotFound:
                continue
            sender = summary.from_[0] if summary.from_ else None
            rows.append(
                {
                    "uid": meta.uid,
                    "flags": list(meta.flags),
                    "unread": "\\Seen" not in meta.flags,
                    "flagged": "\\Flagged" in meta.flags,
                    "from": (sender.name or sender.address) if sender else "",
                    "from_address": sender.address if sender else "",
                    "subject": summary.subject or "(no subject)",
                    "preview": summary.preview,
                    "date": _iso(meta.date),
                    "date_label": _label(meta.date),
                    "size": meta.size,
                    "has_attachments": summary.has_attachments,
                }
            )
        return folder.name, total, rows

    try:
        folder_name, total, rows = await asyncio.to_thread(work)
    except (NotFound, InvalidInput):  # an invalid folder name is no folder of this user's
        raise web.HTTPNotFound(text="No such folder.") from None
    folders = await _folders(request, account)
    kept = {k: v for k, v in query.items() if k != "offset"}
    prev_url = next_url = None
    if offset > 0:
        prev_url = _url(request, "mail", folder_name, **kept, offset=max(0, offset - PAGE_SIZE))
    if offset + PAGE_SIZE < total:
        next_url = _url(request, "mail", folder_name, **kept, offset=offset + PAGE_SIZE)
    context = _context(
        request,
        session,
        folders=folders,
        folder=folder_name,
        total=total,
        offset=offset,
        limit=PAGE_SIZE,
        rows=rows,
        query=dict(query),
        prev_url=prev_url,
        next_url=next_url,
        here=str(request.url.with_scheme(request.scheme)),
        page_title=folder_name,
    )
    return aiohttp_jinja2.render_template("mail_list.html", request, context)


def _iso(epoch: int) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).isoformat()


def _label(epoch: int) -> str:
    moment = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    now = datetime.datetime.now(datetime.UTC)
    if moment.date() == now.date():
        return moment.strftime("%H:%M")
    if moment.year == now.year:
        return moment.strftime("%d %b")
    return moment.strftime("%Y-%m-%d")


# -- one message -----------------------------------------------------------------------------


@page
async def message_view(request: web.Request, session: Session) -> web.StreamResponse:
    account = session.account
    name = request.match_info["folder"]
    uid = _uid(request)

    def work() -> tuple[str, bytes, list[str], int | None]:
        """Read it and mark it seen; the modseq when that changed something."""
        folder = _box(request, account).folder(name)
        raw = folder.read(uid)
        before, after = folder.change_flags(uid, "add", ["\\Seen"])
        changed = after.modseq if before.modseq != after.modseq else None
        return folder.name, raw, list(after.flags), changed

    try:
        folder_name, raw, flags, modseq = await asyncio.to_thread(work)
    except (NotFound, InvalidInput):  # an invalid folder name is no folder of this user's
        raise web.HTTPNotFound(text="No such message.") from None
    if modseq is not None:
        request.app[API].events.publish(FlagsChanged(account.address, folder_name, uid, modseq))
    parsed = await asyncio.to_thread(parse, raw)
    folders = await _folders(request, account)
    from rmail.web.webmail.calendar import invitation_for

    invitation = await invitation_for(request, account, raw, parsed)
    attachments = [
        a for a in parsed.attachments if a.disposition == "attachment" or not a.content_id
    ]
    context = _context(
        request,
        session,
        folders=folders,
        folder=folder_name,
        uid=uid,
        message=parsed,
        flags=flags,
        attachments=attachments,
        has_html=parsed.html is not None,
        remote_images=bool(parsed.html and _REMOTE_IMG.search(parsed.html)),
        show_images=request.query.get("images") == "1",
        invitation=invitation,
        page_title=parsed.subject,
    )
    return aiohttp_jinja2.render_template("message.html", request, context)


def _uid(request: web.Request) -> int:
    try:
        uid = int(request.match_info["uid"])
    except ValueError:
        raise web.HTTPNotFound(text="No such message.") from None
    if not 0 < uid < 2**32:
        raise web.HTTPNotFound(text="No such message.")
    return uid


@page
async def message_body(request: web.Request, session: Session) -> web.StreamResponse:
    """The HTML body alone, for the sandboxed frame: sanitized, under a CSP that lets no
    script run and no request leave (remote images only when asked)."""
    account = session.account
    name, uid = request.match_info["folder"], _uid(request)
    try:
        raw = await asyncio.to_thread(lambda: _box(request, account).folder(name).read(uid))
    except (NotFound, InvalidInput):  # an invalid folder name is no folder of this user's
        raise web.HTTPNotFound(text="No such message.") from None
    parsed = await asyncio.to_thread(parse, raw)
    html = await asyncio.to_thread(sanitize_html, parsed.html or "")
    parts = {a.content_id: a.id for a in parsed.attachments if a.content_id}

    def inline(match: re.Match[str]) -> str:
        part = parts.get(match.group(2))
        if part is None:
            return match.group(1) + match.group(3)
        # A path, not a URL: same origin, and not mistaken below for a remote image.
        path = _url(request, "mail", name, str(uid), "part", part)[len(base_url(request)) :]
        return match.group(1) + path + match.group(3)

    html = _CID.sub(inline, html)
    show = request.query.get("images") == "1"
    if not show:
        # Belt and braces with the CSP below: remote images are not even in the page.
        html = _REMOTE_SRC.sub(r"\1data-blocked-src=", html)
    images = "'self' https: http:" if show else "'self'"
    document = (
        '<!DOCTYPE html><html><head><meta charset="utf-8">'
        '<base target="_blank"></head><body>' + html + "</body></html>"
    )
    return web.Response(
        text=document,
        content_type="text/html",
        headers={
            "Content-Security-Policy": f"default-src 'none'; img-src {images} data:; "
            "style-src 'unsafe-inline'; sandbox allow-popups "
            "allow-popups-to-escape-sandbox; frame-ancestors 'self'",
        },
    )


@page
async def attachment(request: web.Request, session: Session) -> web.StreamResponse:
    account = session.account
    name, uid, part = request.match_info["folder"], _uid(request), request.match_info["part"]
    try:
        raw = await asyncio.to_thread(lambda: _box(request, account).folder(name).read(uid))
    except (NotFound, InvalidInput):  # an invalid folder name is no folder of this user's
        raise web.HTTPNotFound(text="No such message.") from None
    found = await asyncio.to_thread(attachment_bytes, raw, part)
    if found is None:
        raise web.HTTPNotFound(text="No such attachment.")
    content, content_type, filename = found
    inline = (
        request.path.split("/")[-2] == "part"
        and content_type.startswith("image/")
        and (content_type != "image/svg+xml")
    )
    disposition = "inline" if inline else "attachment"
    if filename:
        disposition += f"; filename*=UTF-8''{urllib.parse.quote(filename, safe='')}"
    return web.Response(
        body=content,
        content_type=content_type,
        headers={
            "Content-Disposition": disposition,
            "Content-Security-Policy": "sandbox",
        },
    )


# -- actions ---------------------------------------------------------------------------------


@page
async def bulk(request: web.Request, session: Session) -> web.StreamResponse:
    """Form POST from the list or a message: read, unread, star, unstar, move, delete."""
    account = session.account
    form = await request.post()
    name = request.match_info["folder"]
    action = str(form.get("action", ""))
    uids = sorted({int(u) for u in form.getall("uid", []) if isinstance(u, str) and u.isdigit()})
    target = str(form.get("target", ""))
    back = str(form.get("back", "")) or _url(request, "mail", name)
    if not back.startswith(base_url(request) + PREFIX + "/"):
        back = _url(request, "mail", name)
    if action not in ("read", "unread", "star", "unstar", "move", "delete") or not uids:
        raise web.HTTPSeeOther(back)
    events = request.app[API].events

    def work() -> None:
        box = _box(request, account)
        folder = box.folder(name)
        if action in ("read", "unread", "star", "unstar"):
            flag = "\\Seen" if action in ("read", "unread") else "\\Flagged"
            op = "add" if action in ("read", "star") else "remove"
            for uid in uids:
                try:
                    before, after = folder.change_flags(uid, op, [flag])  # type: ignore[arg-type]
                except NotFound:
                    continue
                if before.modseq != after.modseq:
                    _later(
                        events.publish,
                        FlagsChanged(account.address, folder.name, uid, after.modseq),
                    )
            return
        if action == "delete":
            trash = special_folder(box, "\\Trash", "Trash")
            if folder.name == trash:
                gone = folder.expunge(uids)
                _later(
                    events.publish,
                    MessagesExpunged(account.address, folder.name, tuple(m.uid for m in gone)),
                )
                return
            destination = trash
        else:
            destination = target
        dest = box.folder(destination)
        if dest.dir == folder.dir:
            return
        pairs = folder.move_to(uids, dest)
        for _, new in pairs:
            _later(events.publish, MessageAdded(account.address, dest.name, new))
        _later(
            events.publish,
            MessagesExpunged(account.address, folder.name, tuple(src for src, _ in pairs)),
        )

    loop = asyncio.get_running_loop()

    def _later(func: Any, event: Any) -> None:
        loop.call_soon_threadsafe(func, event)

    try:
        await asyncio.to_thread(work)
    except (NotFound, InvalidInput):  # an invalid folder name is no folder of this user's
        raise web.HTTPNotFound(text="No such folder.") from None
    raise web.HTTPSeeOther(back)


@page
async def folder_action(request: web.Request, session: Session) -> web.StreamResponse:
    """Create, rename or delete a folder (form POST)."""
    form = await request.post()
    action = str(form.get("action", ""))
    box = _box(request, session.account)
    name = str(form.get("name", "")).strip()
    new = str(form.get("new_name", "")).strip()
    try:
        if action == "create" and name:
            await asyncio.to_thread(box.create_folder, name)
        elif action == "rename" and name and new:
            await asyncio.to_thread(box.rename_folder, name, new)
            name = new
        elif action == "delete" and name:
            await asyncio.to_thread(box.delete_folder, name)
            name = "INBOX"
    except RmailError as exc:
        raise web.HTTPSeeOther(_url(request, "mail", "INBOX", error=str(exc))) from None
    raise web.HTTPSeeOther(_url(request, "mail", name or "INBOX"))


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get(PREFIX, home)
    r.add_get(PREFIX + "/", home)
    r.add_get(PREFIX + "/login", login_page)
    r.add_post(PREFIX + "/login", login_submit)
    r.add_post(PREFIX + "/logout", logout)
    r.add_post(PREFIX + "/folders", folder_action)
    r.add_get(PREFIX + "/mail/{folder}", message_list)
    r.add_post(PREFIX + "/mail/{folder}/actions", bulk)
    r.add_get(PREFIX + "/mail/{folder}/{uid}", message_view)
    r.add_get(PREFIX + "/mail/{folder}/{uid}/body", message_body)
    r.add_get(PREFIX + "/mail/{folder}/{uid}/attachment/{part}", attachment)
    r.add_get(PREFIX + "/mail/{folder}/{uid}/part/{part}", attachment)
    from rmail.web.webmail import compose

    compose.setup(app)
