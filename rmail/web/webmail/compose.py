"""The compose page: new message, reply, reply to all, forward; attachments; drafts.

Sending goes through the same service as the JSON API (:func:`rmail.web.api.send.send_or_save`):
local recipients get it at once, others through the relay queue, a copy lands in Sent, and
the original of a reply or forward gets ``\\Answered`` or ``$Forwarded``. Address
completion offers the user's contacts (CardDAV) and recent correspondents.
"""

from __future__ import annotations

import asyncio
import email.utils
from typing import Any, Final

import aiohttp_jinja2
from aiohttp import web

from rmail.errors import InvalidInput, NotFound
from rmail.message import parse
from rmail.store.accounts import Account, Accounts
from rmail.store.dav import DavStore
from rmail.store.preferences import preferences_of
from rmail.web.api import API
from rmail.web.api.send import Outgoing, Reference, send_or_save
from rmail.web.http import ApiError
from rmail.web.webmail import PREFIX, page
from rmail.web.webmail.mail import _context, _folders, _url
from rmail.web.webmail.session import Session

__all__ = ["setup"]

MAX_SUGGESTIONS: Final = 200


def _addresses(text: str) -> list[str]:
    return [addr for _, addr in email.utils.getaddresses([text]) if addr]


async def _suggestions(request: web.Request, account: Account) -> list[str]:
    """Addresses to complete: contacts' EMAIL lines, then recent senders and recipients."""
    store = request.app[API].store

    def work() -> list[str]:
        found: dict[str, None] = {}
        books = DavStore(
            store.accounts.user_dir(account.address), "addressbooks", fsync=store.fsync
        )
        for book in books.collections():
            for meta in book.objects()[:MAX_SUGGESTIONS]:
                try:
                    data, _ = book.read(meta.name)
                except NotFound:
                    continue
                for line in data.decode("utf-8", "replace").splitlines():
                    key, sep, value = line.partition(":")
                    if sep and key.split(";")[0].rpartition(".")[2].upper() == "EMAIL":
                        found[value.strip()] = None
        box = store.mailbox(account.address)
        for name in ("Sent", "INBOX"):
            if not box.exists(name):
                continue
            folder = box.folder(name)
            index = folder.index
            for pos in range(len(index) - 1, max(-1, len(index) - 101), -1):
                message = index.meta_at(pos)
                try:
                    head = folder.read(message.uid)[:4096]
                except NotFound:
                    continue
                parsed = parse(head + b"\r\n\r\n")
                for a in parsed.from_ + parsed.to + parsed.cc:
                    if a.address and a.address.lower() != account.address:
                        found[a.address] = None
                if len(found) >= MAX_SUGGESTIONS:
                    break
        return list(found)[:MAX_SUGGESTIONS]

    return await asyncio.to_thread(work)


def _accounts(request: web.Request) -> Accounts:
    return request.app[API].store.accounts


def _quote(text: str) -> str:
    return "\n".join("> " + line for line in text.splitlines())


@page
async def compose_page(request: web.Request, session: Session) -> web.StreamResponse:
    account = session.account
    query = request.query
    draft: dict[str, Any] = {
        "to": "",
        "cc": "",
        "bcc": "",
        "subject": "",
        "body": "",
        "reference": None,
    }
    folder = query.get("folder", "INBOX")
    for key, action in (("reply", "reply"), ("reply_all", "reply-all"), ("forward", "forward")):
        value = query.get(key)
        if value and value.isdigit():
            draft = await _prefill(request, account, folder, int(value), action)
            break
    else:  # a new message: the signature from the settings
        draft["body"] = (
            await asyncio.to_thread(preferences_of, _accounts(request), account.address)
        ).signed("")
    context = _context(
        request,
        session,
        folders=await _folders(request, account),
        folder=None,
        draft=draft,
        suggestions=await _suggestions(request, account),
        error=None,
        page_title="Compose",
    )
    return aiohttp_jinja2.render_template("compose.html", request, context)


async def _prefill(
    request: web.Request, account: Account, folder: str, uid: int, action: str
) -> dict[str, Any]:
    box = request.app[API].store.mailbox(account.address)
    try:
        raw = await asyncio.to_thread(lambda: box.folder(folder).read(uid))
    except (NotFound, InvalidInput):  # an invalid folder name is no folder of this user's
        raise web.HTTPNotFound(text="No such message.") from None
    original = await asyncio.to_thread(parse, raw)
    sender = original.from_[0] if original.from_ else None
    when = original.date or ""
    if action == "forward":
        subject = (
            original.subject
            if original.subject.lower().startswith("fwd:")
            else (f"Fwd: {original.subject}")
        )
        body = "\n\n---------- Forwarded message ----------\n"
        body += f"From: {sender.address if sender else ''}\n"
        body += f"Date: {when}\nSubject: {original.subject}\n\n{original.text or ''}"
        to = ""
    else:
        subject = (
            original.subject
            if original.subject.lower().startswith("re:")
            else (f"Re: {original.subject}")
        )
        who = (sender.name or sender.address) if sender else "someone"
        body = f"\n\nOn {when}, {who} wrote:\n{_quote(original.text or '')}\n"
        source = original.reply_to or original.from_
        to = ", ".join(a.address for a in source if a.address)
    cc = ""
    if action == "reply-all":
        me = account.address.lower()
        others = [
            a.address
            for a in original.to + original.cc
            if a.address and a.address.lower() != me and a.address not in to
        ]
        cc = ", ".join(dict.fromkeys(others))
    return {
        "to": to,
        "cc": cc,
        "bcc": "",
        "subject": subject,
        "body": body,
        "reference": {"folder": folder, "uid": uid, "action": action},
    }


@page
async def compose_submit(request: web.Request, session: Session) -> web.StreamResponse:
    account = session.account
    form = await request.post()

    def text(name: str) -> str:
        value = form.get(name, "")
        return value if isinstance(value, str) else ""

    attachments: list[tuple[str, str, bytes]] = []
    for item in form.getall("attachment", []):
        filename = getattr(item, "filename", None)
        if not filename:
            continue
        content = item.file.read()  # type: ignore[union-attr]
        kind = getattr(item, "content_type", None) or "application/octet-stream"
        attachments.append((str(filename), str(kind), content))
    reference = None
    ref_uid, ref_folder, ref_action = text("ref_uid"), text("ref_folder"), text("ref_action")
    if ref_uid.isdigit() and ref_action in ("reply", "reply-all", "forward"):
        reference = Reference(ref_folder or "INBOX", int(ref_uid), ref_action)
    draft: dict[str, Any] = {
        "to": text("to"),
        "cc": text("cc"),
        "bcc": text("bcc"),
        "subject": text("subject"),
        "body": text("body"),
        "reference": {"folder": reference.folder, "uid": reference.uid, "action": reference.action}
        if reference
        else None,
    }
    out = Outgoing(
        to=_addresses(text("to")),
        cc=_addresses(text("cc")),
        bcc=_addresses(text("bcc")),
        subject=" ".join(text("subject").split()),
        text=text("body"),
        attachments=attachments,
        reference=reference,
        draft=text("save") == "draft",
        from_name=(
            await asyncio.to_thread(preferences_of, _accounts(request), account.address)
        ).display_name,
    )
    try:
        answer = await send_or_save(request.app[API], account, out)
    except ApiError as exc:
        failed = exc.extra.get("failed") or {}
        detail = "; ".join(f"{k}: {v}" for k, v in failed.items())
        context = _context(
            request,
            session,
            folders=await _folders(request, account),
            folder=None,
            draft=draft,
            suggestions=await _suggestions(request, account),
            error=exc.message + (f" ({detail})" if detail else ""),
            page_title="Compose",
        )
        return aiohttp_jinja2.render_template("compose.html", request, context, status=exc.status)
    if out.draft:
        raise web.HTTPSeeOther(_url(request, "mail", answer["folder"]))
    raise web.HTTPSeeOther(_url(request, "mail", answer["sent_folder"], sent=1))


def setup(app: web.Application) -> None:
    app.router.add_get(PREFIX + "/compose", compose_page)
    app.router.add_post(PREFIX + "/compose", compose_submit)
