"""Reading a stored message for people and programs: decoded headers, bodies, attachments.

Used by the JSON API (``?format=json``, listings, attachment downloads) and the webmail. It
works on the raw bytes with the standard library's ``email`` parser and its modern policy,
and never raises on a malformed message: what cannot be decoded is shown as well as it can
be (replacement characters), as a mail reader must.

Parts are numbered as IMAP numbers them (RFC 3501 §6.4.5: ``1``, ``2.1``...), so an
attachment's id stays the same for every client and across restarts.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import html
from dataclasses import dataclass, field
from datetime import datetime
from email.headerregistry import BaseHeader, HeaderRegistry
from email.message import EmailMessage, Message
from email.parser import BytesHeaderParser
from typing import Any, Final

import nh3

__all__ = [
    "Address",
    "Attachment",
    "ParsedMessage",
    "Summary",
    "attachment_bytes",
    "parse",
    "sanitize_html",
    "summarize",
]

PREVIEW_CHARS: Final = 200


class _HeaderFactory(HeaderRegistry):
    """The standard header registry, but each header class is built once.

    ``HeaderRegistry.__getitem__`` creates a new class with ``type()`` for every header it
    parses (CPython 3.11-3.13), which was the largest single cost of ``parse`` in the API
    benchmark (bench/api.py). The classes it builds depend only on the registry entry, so
    they are cached per entry: a handful of classes, whatever header names mail carries.
    """

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[type, type[BaseHeader]] = {}

    def __getitem__(self, name: str) -> type[BaseHeader]:
        cls = self.registry.get(name.lower(), self.default_class)
        made = self._classes.get(cls)
        if made is None:
            made = type("_" + cls.__name__, (cls, self.base_class), {})
            self._classes[cls] = made
        return made


# email.policy.default with the caching header factory; it parses exactly as default does.
_POLICY: Final = email.policy.default.clone(header_factory=_HeaderFactory())
_HEADER_PARSER = BytesHeaderParser(policy=_POLICY)

# What survives sanitising: formatting and images, never script, forms, frames or styles
# that can reach out (nh3's defaults drop script, style, iframe, form and event handlers).
_ALLOWED_TAGS: Final = nh3.ALLOWED_TAGS | {"font", "center", "span", "div", "img", "table"}
_ALLOWED_ATTRIBUTES: Final = {
    **{tag: set(attrs) for tag, attrs in nh3.ALLOWED_ATTRIBUTES.items()},
    "*": {"align", "dir", "lang", "title", "width", "height", "bgcolor", "color"},
    "img": {"src", "alt", "width", "height"},
    "a": {"href", "title"},
    "font": {"color", "face", "size"},
    "td": {"colspan", "rowspan", "align", "valign", "width", "bgcolor"},
    "th": {"colspan", "rowspan", "align", "valign", "width", "bgcolor"},
}


@dataclass(frozen=True, slots=True)
class Address:
    name: str
    address: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "address": self.address}


@dataclass(frozen=True, slots=True)
class Attachment:
    id: str  # the IMAP part number
    filename: str
    content_type: str
    size: int  # decoded bytes
    disposition: str  # "attachment" or "inline"
    content_id: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "filename": self.filename,
            "content_type": self.content_type,
            "size": self.size,
            "disposition": self.disposition,
            "content_id": self.content_id,
        }


@dataclass(slots=True)
class Summary:
    """What a message list shows: from the header and the first text part."""

    subject: str
    from_: list[Address]
    to: list[Address]
    date: str | None  # ISO 8601, from the Date header
    has_attachments: bool
    preview: str
    message_id: str | None = None


@dataclass(slots=True)
class ParsedMessage:
    headers: list[tuple[str, str]]
    subject: str
    from_: list[Address]
    to: list[Address]
    cc: list[Address]
    bcc: list[Address]
    reply_to: list[Address]
    date: str | None
    message_id: str | None
    in_reply_to: str | None
    references: list[str]
    text: str | None
    html: str | None
    attachments: list[Attachment] = field(default_factory=list)


def _header_text(message: Message, name: str) -> str:
    value = message.get(name)
    if value is None:
        return ""
    try:
        return " ".join(str(value).split())
    except Exception:  # a header the policy cannot decode: show its raw text
        return " ".join(str(message.get_all(name, [""])[0]).split())


def _addresses(message: Message, name: str) -> list[Address]:
    values = message.get_all(name) or []
    found: list[Address] = []
    for value in values:
        try:
            groups = getattr(value, "addresses", None)  # policy.default's address header
        except Exception:  # a malformed header the policy cannot split
            groups = None
        if groups is not None:
            found += [Address(a.display_name or "", a.addr_spec or "") for a in groups]
            continue
        found += [Address(n, a) for n, a in email.utils.getaddresses([str(value)]) if a or n]
    return [a for a in found if a.address or a.name]


def _date(message: Message) -> str | None:
    raw = message.get("Date")
    if raw is None:
        return None
    try:
        parsed: datetime | None = email.utils.parsedate_to_datetime(str(raw))
    except (TypeError, ValueError, IndexError):
        return None
    return parsed.isoformat() if parsed is not None else None


def _decoded_text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, "replace")
    except LookupError:  # an unknown charset name
        return payload.decode("utf-8", "replace")


def _walk(part: Message, number: str) -> Any:
    """Yield (part number, leaf part) depth first, with IMAP numbering."""
    if part.is_multipart():
        children = part.get_payload()
        assert isinstance(children, list)
        for index, child in enumerate(children, 1):
            yield from _walk(child, f"{number}.{index}" if number else str(index))
    else:
        yield number or "1", part


def _is_attachment(part: Message) -> bool:
    """A part the sender meant as a file (not the body text)."""
    return (part.get_content_disposition() or "") == "attachment" or bool(part.get_filename())


def _attachment(number: str, part: Message) -> Attachment:
    payload = part.get_payload(decode=True)
    size = len(payload) if isinstance(payload, bytes) else 0
    filename = part.get_filename() or ""
    content_id = part.get("Content-ID")
    return Attachment(
        id=number,
        filename=" ".join(str(filename).split()),
        content_type=part.get_content_type(),
        size=size,
        disposition="inline" if (part.get_content_disposition() == "inline") else "attachment",
        content_id=str(content_id).strip().strip("<>") if content_id else None,
    )


def _bodies(root: Message) -> tuple[str | None, str | None, list[Attachment]]:
    text: str | None = None
    html: str | None = None
    attachments: list[Attachment] = []
    for number, part in _walk(root, ""):
        ctype = part.get_content_type()
        if ctype in ("text/plain", "text/html") and not _is_attachment(part):
            if ctype == "text/plain" and text is None:
                text = _decoded_text(part)
                continue
            if ctype == "text/html" and html is None:
                html = _decoded_text(part)
                continue
        if part.get_content_maintype() == "multipart":
            continue
        attachments.append(_attachment(number, part))
    return text, html, attachments


def parse(raw: bytes) -> ParsedMessage:
    """Everything a reader shows of ``raw``."""
    message = email.message_from_bytes(raw, policy=_POLICY)
    text, html, attachments = _bodies(message)
    references = _header_text(message, "References").split()
    headers = []
    for name, raw_value in message.raw_items():
        try:
            value = str(message.policy.header_fetch_parse(name, raw_value))
        except Exception:  # undecodable: the raw text
            value = str(raw_value)
        headers.append((name, " ".join(value.split())))
    return ParsedMessage(
        headers=headers,
        subject=_header_text(message, "Subject"),
        from_=_addresses(message, "From"),
        to=_addresses(message, "To"),
        cc=_addresses(message, "Cc"),
        bcc=_addresses(message, "Bcc"),
        reply_to=_addresses(message, "Reply-To"),
        date=_date(message),
        message_id=_header_text(message, "Message-ID") or None,
        in_reply_to=_header_text(message, "In-Reply-To") or None,
        references=references,
        text=text,
        html=html,
        attachments=attachments,
    )


def summarize(raw: bytes) -> Summary:
    """The list view of ``raw``: header fields, attachment presence and a text preview."""
    message = email.message_from_bytes(raw, policy=_POLICY)
    text, html, attachments = _bodies(message)
    body = text if text is not None else _html_to_text(html or "")
    preview = " ".join(body.split())[:PREVIEW_CHARS]
    return Summary(
        subject=_header_text(message, "Subject"),
        from_=_addresses(message, "From"),
        to=_addresses(message, "To"),
        date=_date(message),
        has_attachments=any(a.disposition == "attachment" for a in attachments),
        preview=preview,
        message_id=_header_text(message, "Message-ID") or None,
    )


def header_fields(raw: bytes) -> EmailMessage:
    """Only the header, parsed (cheap: the body is not looked at)."""
    end = raw.find(b"\r\n\r\n")
    head = raw if end < 0 else raw[: end + 4]
    parsed = _HEADER_PARSER.parsebytes(head)
    assert isinstance(parsed, EmailMessage)
    return parsed


def attachment_bytes(raw: bytes, part_id: str) -> tuple[bytes, str, str] | None:
    """The decoded content, content type and file name of part ``part_id``, or None."""
    message = email.message_from_bytes(raw, policy=_POLICY)
    for number, part in _walk(message, ""):
        if number == part_id:
            payload = part.get_payload(decode=True)
            if not isinstance(payload, bytes):
                payload = b""
            return payload, part.get_content_type(), str(part.get_filename() or "")
    return None


def sanitize_html(html: str) -> str:
    """HTML mail made safe to show: no script, no event handlers, no forms or frames.

    Links get ``rel="noopener noreferrer"``; only http(s), mailto and cid URLs survive.
    """
    return nh3.clean(
        html,
        tags=_ALLOWED_TAGS,
        attributes=_ALLOWED_ATTRIBUTES,
        url_schemes={"http", "https", "mailto", "cid"},
        link_rel="noopener noreferrer",
    )


def _html_to_text(markup: str) -> str:
    return html.unescape(nh3.clean(markup, tags=set(), clean_content_tags={"script", "style"}))
