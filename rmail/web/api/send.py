"""``POST /messages/send``: compose and send (or save a draft) as the logged-in user.

Body: ``to`` (a string or a list), ``subject``, ``body`` (plain text) as in the original;
also ``cc``, ``bcc``, ``html``, ``attachments`` ([{filename, content_type, content: base64}]),
``reference`` ({folder, uid, action: reply|reply-all|forward}) and ``draft`` (true: saved to
Drafts with ``\\Draft``, nothing sent).

Local recipients get the message at once; others go through the relay queue (refused with
403 when ``relay.enabled`` is false). A copy goes to the Sent folder. A reply sets
In-Reply-To and References, prefixes "Re: " and flags the original ``\\Answered``; a forward
attaches the original (message/rfc822), prefixes "Fwd: " and flags it ``$Forwarded``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email
import email.policy
import email.utils
import functools
import re
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any, Final

from aiohttp import web

from rmail.events import FlagsChanged, MessageAdded
from rmail.message import parse
from rmail.store.accounts import Account
from rmail.store.maildir import Mailbox
from rmail.web.api import API, ApiServices, current_account
from rmail.web.http import ApiError, json_body
from rmail.web.http import field as field_

_ADDRESS: Final = re.compile(r"^[^\s@<>()\[\],;:\"\\]+@[A-Za-z0-9.-]+\.?$")
_ACTIONS: Final = ("reply", "reply-all", "forward")


@dataclass(frozen=True, slots=True)
class Reference:
    folder: str
    uid: int
    action: str


def _address_list(data: dict[str, Any], name: str) -> list[str]:
    value = data.get(name)
    if value is None or value == "":
        return []
    items: list[Any]
    if isinstance(value, str):
        items = [v for v in (part.strip() for part in value.split(",")) if v]
    elif isinstance(value, list):
        items = value
    else:
        raise ApiError(400, f"field {name!r} must be an address or a list of addresses")
    out = []
    for item in items:
        if not isinstance(item, str):
            raise ApiError(400, f"field {name!r} must hold addresses")
        _, address = email.utils.parseaddr(item)
        if not address or not _ADDRESS.match(address) or len(address) > 320:
            raise ApiError(400, f"invalid address in {name!r}: {item!r}")
        out.append(address)
    return out


def _reference(data: dict[str, Any]) -> Reference | None:
    ref = data.get("reference")
    if ref is None:
        return None
    if not isinstance(ref, dict):
        raise ApiError(400, "field 'reference' must be an object")
    folder = field_(ref, "folder", str)
    uid = field_(ref, "uid", int)
    action = field_(ref, "action", str)
    if action not in _ACTIONS:
        raise ApiError(400, f"reference.action must be one of {', '.join(_ACTIONS)}")
    return Reference(folder, uid, action)


def _attachments(data: dict[str, Any]) -> list[tuple[str, str, bytes]]:
    items = data.get("attachments") or []
    if not isinstance(items, list):
        raise ApiError(400, "field 'attachments' must be a list")
    out = []
    for item in items:
        if not isinstance(item, dict):
            raise ApiError(400, "each attachment must be an object")
        filename = field_(item, "filename", str)
        content_type = field_(item, "content_type", str, required=False) or (
            "application/octet-stream"
        )
        if content_type.count("/") != 1 or any(c in content_type for c in '\r\n;"'):
            raise ApiError(400, f"invalid content_type {content_type!r}")
        if not filename or any(c in filename for c in "\r\n\x00") or len(filename) > 255:
            raise ApiError(400, f"invalid attachment filename {filename!r}")
        try:
            content = base64.b64decode(field_(item, "content", str), validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(400, f"attachment {filename!r}: content is not base64") from None
        out.append((filename, content_type, content))
    return out


def special_folder(box: Mailbox, attribute: str, default: str) -> str:
    """The folder marked ``attribute`` (``\\Sent``...), created as ``default`` if none is."""
    for name, attr in box.special_use().items():
        if attr == attribute and box.exists(name):
            return name
    if not box.exists(default):
        box.create_folder(default, attribute)
    return default


def _prefixed(prefix: str, subject: str) -> str:
    if subject.lower().startswith(prefix.lower()):
        return subject
    return f"{prefix} {subject}".strip()


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message to send (or save as a draft), as the API and the webmail take it."""

    to: list[str]
    cc: list[str] = field(default_factory=list)
    bcc: list[str] = field(default_factory=list)
    subject: str = ""
    text: str | None = None
    html: str | None = None
    attachments: list[tuple[str, str, bytes]] = field(default_factory=list)
    reference: Reference | None = None
    draft: bool = False
    # The display name in From (the webmail's setting); the address is always the account's.
    from_name: str = ""


async def send_or_save(services: ApiServices, account: Account, out: Outgoing) -> dict[str, Any]:
    """Compose, then send (copy in Sent, original flagged) or save in Drafts.

    Returns the API's answer body: ``{message_id, delivered, queued, failed, sent_folder,
    sent_uid}`` or, for a draft, ``{draft, folder, uid, message_id}``.

    Raises:
        ApiError: 400 bad input or no recipient took it (with ``failed``), 403 relaying
            off, 404 no such original, 413 too large.
    """
    if any(c in out.subject for c in "\r\n"):
        raise ApiError(400, "subject must be one line")
    box = services.store.mailbox(account.address)
    original: bytes | None = None
    reference = out.reference
    if reference is not None:
        ref = reference
        original = await asyncio.to_thread(lambda: box.folder(ref.folder).read(ref.uid))
    compose = functools.partial(
        _compose,
        account=account,
        from_name=out.from_name,
        hostname=services.hostname,
        to=out.to,
        cc=out.cc,
        subject=out.subject,
        text=out.text,
        html=out.html,
        attachments=out.attachments,
        reference=reference,
        original=original,
    )
    message, to, cc = await asyncio.to_thread(compose)
    envelope = list(dict.fromkeys(a.lower() for a in to + cc + out.bcc))
    raw = message.as_bytes(policy=email.policy.SMTP)
    if len(raw) > services.max_message_size:
        raise ApiError(413, "message too large")
    if out.draft:

        def save_draft() -> tuple[str, int]:
            name = special_folder(box, "\\Drafts", "Drafts")
            return name, box.folder(name).append(raw, ["\\Draft", "\\Seen"]).uid

        folder, uid = await asyncio.to_thread(save_draft)
        services.events.publish(MessageAdded(account.address, folder, uid))
        return {"draft": True, "folder": folder, "uid": uid, "message_id": message["Message-ID"]}
    if not envelope:
        raise ApiError(400, "no recipients: give to, cc or bcc")
    if len(envelope) > services.max_recipients:
        raise ApiError(400, f"at most {services.max_recipients} recipients")
    remote = [a for a in envelope if not services.delivery.is_local_domain(a)]
    if remote and not services.relay_enabled:
        raise ApiError(403, "relaying to other domains is disabled on this server")
    report, queued = await services.delivery.send(raw, account.address, envelope)
    delivered = sorted(report.delivered)
    queued_to = list(queued.recipients) if queued is not None else []
    failed = {rcpt: str(exc) for rcpt, exc in report.failed.items()}
    if not delivered and not queued_to:
        raise ApiError(400, "no recipient accepted the message", failed=failed)

    def keep_copy() -> tuple[str, int]:
        name = special_folder(box, "\\Sent", "Sent")
        return name, box.folder(name).append(raw, ["\\Seen"]).uid

    sent_folder, sent_uid = await asyncio.to_thread(keep_copy)
    services.events.publish(MessageAdded(account.address, sent_folder, sent_uid))
    if reference is not None:
        await _mark_original(services, account, reference)
    return {
        "message_id": message["Message-ID"],
        "delivered": delivered,
        "queued": [r.address for r in queued_to],
        "failed": failed,
        "sent_folder": sent_folder,
        "sent_uid": sent_uid,
    }


async def send(request: web.Request) -> web.Response:
    account = await current_account(request)
    services = request.app[API]
    # Attachments arrive base64-encoded: 4/3 of the largest message, plus the JSON around it.
    data = await json_body(request, limit=services.max_message_size * 4 // 3 + 65536)
    out = Outgoing(
        to=_address_list(data, "to"),
        cc=_address_list(data, "cc"),
        bcc=_address_list(data, "bcc"),
        subject=field_(data, "subject", str, required=False) or "",
        text=field_(data, "body", str, required=False),
        html=field_(data, "html", str, required=False),
        attachments=_attachments(data),
        reference=_reference(data),
        draft=bool(field_(data, "draft", bool, required=False)),
    )
    answer = await send_or_save(services, account, out)
    return web.json_response(answer, status=201 if out.draft else 200)


async def _mark_original(services: ApiServices, account: Account, ref: Reference) -> None:
    flag = "$Forwarded" if ref.action == "forward" else "\\Answered"

    def work() -> tuple[str, int] | None:
        folder = services.store.mailbox(account.address).folder(ref.folder)
        before, after = folder.change_flags(ref.uid, "add", [flag])
        return (folder.name, after.modseq) if before.modseq != after.modseq else None

    changed = await asyncio.to_thread(work)
    if changed is not None:
        services.events.publish(FlagsChanged(account.address, changed[0], ref.uid, changed[1]))


def _compose(
    *,
    account: Account,
    from_name: str = "",
    hostname: str,
    to: list[str],
    cc: list[str],
    subject: str,
    text: str | None,
    html: str | None,
    attachments: list[tuple[str, str, bytes]],
    reference: Reference | None,
    original: bytes | None,
) -> tuple[EmailMessage, list[str], list[str]]:
    """The message, and its To and Cc addresses (a reply fills them from the original)."""
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = (
        email.utils.formataddr((from_name, account.address)) if from_name else account.address
    )
    if reference is not None and original is not None:
        parsed = parse(original)
        me = account.address.lower()
        if reference.action in ("reply", "reply-all") and not to:
            source = parsed.reply_to or parsed.from_
            to = [a.address for a in source if a.address]
        if reference.action == "reply-all":
            others = [a.address for a in parsed.to + parsed.cc if a.address]
            cc = list(dict.fromkeys(a for a in cc + others if a.lower() != me and a not in to))
        prefix = "Fwd:" if reference.action == "forward" else "Re:"
        subject = _prefixed(prefix, subject or parsed.subject)
        if parsed.message_id:
            if reference.action != "forward":
                message["In-Reply-To"] = parsed.message_id
            message["References"] = " ".join([*parsed.references, parsed.message_id])
    if to:
        message["To"] = ", ".join(to)
    if cc:
        message["Cc"] = ", ".join(cc)
    message["Subject"] = subject
    message["Date"] = email.utils.formatdate(localtime=False)
    message["Message-ID"] = email.utils.make_msgid(domain=hostname)
    if text is None and html is None:
        text = ""
    if text is not None:
        message.set_content(text)
        if html is not None:
            message.add_alternative(html, subtype="html")
    else:
        assert html is not None
        message.set_content(html, subtype="html")
    for filename, content_type, content in attachments:
        maintype, subtype = content_type.split("/")
        message.add_attachment(content, maintype=maintype, subtype=subtype, filename=filename)
    if reference is not None and reference.action == "forward" and original is not None:
        forwarded = email.message_from_bytes(original, policy=email.policy.default)
        message.add_attachment(forwarded)
    return message, to, cc


def setup(app: web.Application) -> None:
    app.router.add_post("/messages/send", send)
