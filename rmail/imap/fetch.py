"""FETCH data computed from a message's stored bytes (RFC 3501 §6.4.5 and §7.4.2, RFC 3516).

This module owns the MIME view of one message: where each part's header and body lie in the
stored bytes, the ENVELOPE and BODY/BODYSTRUCTURE built from them, the BODY[...] sections
(byte-exact slices of the original), the decoded BINARY[...] sections, and the decoded text
SEARCH and SORT need. It is pure: bytes in, bytes or str out. It must not read files, know
flags, UIDs or sequence numbers (the index has those), or re-serialize a message: the
``email`` package is used only to decode header values (RFC 2047 words, dates), never to
produce bytes a client sees.

Implementation notes:

- Stored messages use CRLF line endings; bare LF is tolerated wherever a line ends.
- :class:`ParsedMessage` is lazy: building one only keeps the bytes. The top-level header is
  split into fields on first use (ENVELOPE needs nothing else) and the MIME tree is built on
  first use of BODYSTRUCTURE or a part section. Both are cached on the object.
- Where RFC 3501 leaves a choice open the behaviour follows Dovecot 2.3 (the reference the
  tests compare against, ``tests/data/dovecot_expected.json``): a non-multipart part ``P`` has
  a part ``P.1`` that is ``P`` itself, a nested multipart's close-delimiter line keeps its
  CRLF, a multipart with no body parts gets one empty text/plain part, addresses without a
  mailbox or domain get ``MISSING_MAILBOX`` / ``MISSING_DOMAIN``. The deliberate differences
  are listed in ``tests/unit/test_imap_fetch.py`` (``KNOWN_DIFFERENCES``).
"""

from __future__ import annotations

import binascii
import codecs
import datetime
import email.errors
import email.header
import email.utils
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Final, NamedTuple

from rmail.errors import InvalidInput
from rmail.imap import responses
from rmail.imap.parser.types import FetchAttr, Section
from rmail.mime import HeaderField
from rmail.mime import header_end as _header_end
from rmail.mime import parse_fields as _parse_fields

__all__ = [
    "MAX_MIME_DEPTH",
    "Address",
    "BodyPart",
    "HeaderField",
    "ParsedMessage",
    "UnknownTransferEncoding",
    "binary_section",
    "binary_size",
    "body_text_as_stored",
    "bodystructure",
    "decode_values",
    "envelope",
    "envelope_of_values",
    "header_addresses",
    "header_text",
    "header_text_as_stored",
    "header_value",
    "partial",
    "render_envelope",
    "render_item",
    "section",
    "sent_date",
    "text_content",
]

MAX_MIME_DEPTH: Final = 100
"""Parts nested deeper are not parsed further (a guard against stack exhaustion)."""

_MISSING_MAILBOX: Final = "MISSING_MAILBOX"
_MISSING_DOMAIN: Final = "MISSING_DOMAIN"
_CRLF: Final = b"\r\n"
_NIL: Final = b"NIL"

_LONG_LINE_RE: Final = re.compile(rb"[^\r\n]{999}")  # RFC 5322 §2.1.1: 998 octets a line
_BASE64_JUNK_RE: Final = re.compile(rb"[^A-Za-z0-9+/]")
_QP_TRAILING_WS_RE: Final = re.compile(rb"[ \t]+(?=\r?\n)")
_IDENTITY_CTES: Final = frozenset({"7bit", "8bit", "binary"})
_ENVELOPE_FIELD_RE: Final = re.compile(
    rb"(?im)^(date|subject|from|sender|reply-to|to|cc|bcc|in-reply-to|message-id)[ \t]*:"
    rb"(.*(?:\n[ \t].*)*)"
)
_ENVELOPE_FIELDS: Final = frozenset(
    {"date", "subject", "from", "sender", "reply-to", "to", "cc", "bcc", "in-reply-to",
     "message-id"}
)  # fmt: skip


class UnknownTransferEncoding(InvalidInput):
    """BINARY[...] asked for a part whose Content-Transfer-Encoding rmail cannot decode.

    The server answers ``NO [UNKNOWN-CTE]`` (RFC 3516 §4.3).
    """


# -- header fields ----------------------------------------------------------------------------


def _first(fields: tuple[HeaderField, ...], name: str) -> HeaderField | None:
    for f in fields:
        if f.name == name:
            return f
    return None


# -- structured MIME values (RFC 2045 §5.1, RFC 2183, RFC 2231) -------------------------------


def _strip_comments(text: str) -> str:
    """``text`` with RFC 5322 comments removed (nested, quoted strings respected)."""
    if "(" not in text:
        return text
    out: list[str] = []
    depth = 0
    in_quote = False
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and (in_quote or depth):
            if not depth:
                out.append(text[i : i + 2])
            i += 2
            continue
        if in_quote:
            in_quote = ch != '"'
            out.append(ch)
        elif ch == "(":
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
        elif not depth:
            in_quote = ch == '"'
            out.append(ch)
        i += 1
    return "".join(out)


def _split_params(text: str) -> list[str]:
    """Split on ``;`` outside quoted strings."""
    items: list[str] = []
    current: list[str] = []
    in_quote = False
    i = 0
    while i < len(text):
        ch = text[i]
        if in_quote and ch == "\\":
            current.append(text[i : i + 2])
            i += 2
            continue
        if ch == '"':
            in_quote = not in_quote
        if ch == ";" and not in_quote:
            items.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    items.append("".join(current))
    return items


def _unquote(value: str) -> str:
    value = value.strip()
    if value.startswith('"'):
        body = value[1:-1] if len(value) > 1 and value.endswith('"') else value[1:]
        return re.sub(r"\\(.)", r"\1", body, flags=re.S)
    return value


_ATTR_CHARS: Final = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$&+-.^_`|~"
)


def _merge_rfc2231(params: list[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """Join RFC 2231 §3 continuations (``name*0``, ``name*1*``) into one parameter.

    Like Dovecot, a value with an extended (``*``) segment stays in its encoded form under the
    key ``name*`` (``charset'lang'%XX...``); it is not decoded.
    """
    if not any("*" in name for name, _ in params):
        return tuple(params)
    out: list[tuple[str, str]] = []
    groups: dict[str, list[tuple[int, bool, str]]] = {}
    positions: dict[str, int] = {}
    for name, value in params:
        match = re.fullmatch(r"(.+?)\*(\d+)(\*?)", name)
        if match is None:
            out.append((name, value))
            continue
        base = match.group(1)
        if base.lower() not in groups:
            groups[base.lower()] = []
            positions[base.lower()] = len(out)
            out.append((base, ""))  # placeholder, filled below
        groups[base.lower()].append((int(match.group(2)), bool(match.group(3)), value))
    for key, segments in groups.items():
        segments.sort(key=lambda s: s[0])
        extended = segments[0][1]
        value = "".join(
            seg if ext or not extended else "".join(
                c
                if c in _ATTR_CHARS
                else "".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogateescape"))
                for c in seg
            )
            for _, ext, seg in segments
        )  # fmt: skip
        base = out[positions[key]][0]
        out[positions[key]] = (base + "*" if extended else base, value)
    return tuple(out)


def _parse_params(items: list[str]) -> tuple[tuple[str, str], ...]:
    params: list[tuple[str, str]] = []
    for item in items:
        name, eq, value = item.partition("=")
        name = name.strip()
        if not eq or not name:
            continue
        params.append((name, _unquote(value)))
    return _merge_rfc2231(params)


def _parse_content_type(value: str) -> tuple[str, str, tuple[tuple[str, str], ...]] | None:
    """``(type, subtype, params)`` as written, or None when the value is not valid."""
    items = _split_params(_strip_comments(value))
    media = items[0].strip()
    kind, slash, subtype = media.partition("/")
    kind, subtype = kind.strip(), subtype.strip()
    if not slash or len(kind.split()) != 1 or len(subtype.split()) != 1:
        return None
    return kind, subtype, _parse_params(items[1:])


def _parse_disposition(value: str) -> tuple[str, tuple[tuple[str, str], ...]] | None:
    items = _split_params(_strip_comments(value))
    kind = items[0].strip()
    if not kind:
        return None
    return kind, _parse_params(items[1:])


def _param(params: tuple[tuple[str, str], ...], name: str) -> str | None:
    for key, value in params:
        if key.lower() == name:
            return value
    return None


# -- the MIME tree ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BodyPart:
    """One MIME entity (RFC 2045) and where it lies in the stored message.

    ``raw[start:body_start]`` is the header block (blank line included) and
    ``raw[body_start:end]`` the body. Strings are as written in the header (case kept,
    comments removed, quoted strings unquoted); ``content_type`` is ``None`` when the entity has
    no valid Content-Type and takes the default (``text/plain; charset=us-ascii``, or
    ``message/rfc822`` inside multipart/digest, RFC 2046 §5.1.5).

    A multipart has ``children`` (at least one); a message/rfc822 part has ``message``, the
    encapsulated message as an entity of its own.
    """

    raw: bytes = field(repr=False, compare=False)
    start: int
    body_start: int
    end: int
    fields: tuple[HeaderField, ...] = field(repr=False)
    type: str
    subtype: str
    params: tuple[tuple[str, str], ...]
    content_type: str | None
    id: str | None
    description: str | None
    encoding: str | None
    md5: str | None
    disposition: tuple[str, tuple[tuple[str, str], ...]] | None
    language: tuple[str, ...] | None
    location: str | None
    multipart: bool = False
    children: tuple[BodyPart, ...] = ()
    message: BodyPart | None = None
    open_line: bool = field(default=False, repr=False)

    @property
    def header(self) -> bytes:
        """The header block, blank line included."""
        return self.raw[self.start : self.body_start]

    @property
    def body(self) -> bytes:
        """The body octets, still transfer-encoded."""
        return self.raw[self.body_start : self.end]

    @property
    def size(self) -> int:
        """``body-fld-octets``: the size of the encoded body (RFC 3501 §7.4.2)."""
        return self.end - self.body_start

    @property
    def lines(self) -> int:
        """``body-fld-lines``: the number of lines of the encoded body (RFC 3501 §7.4.2)."""
        return self.raw.count(b"\n", self.body_start, self.end)

    @property
    def is_text(self) -> bool:
        return self.type.lower() == "text"

    @property
    def is_message(self) -> bool:
        return self.message is not None

    @property
    def cte(self) -> str:
        """The transfer encoding, lower case; ``7bit`` when absent (RFC 2045 §6.1)."""
        return (self.encoding or "7bit").lower()

    @property
    def charset(self) -> str | None:
        return _param(self.params, "charset")


def _field_str(fields: tuple[HeaderField, ...], name: str) -> str | None:
    found = _first(fields, name)
    if found is None:
        return None
    value = found.value.strip()
    return value or None


def _parse_entity(
    raw: bytes,
    start: int,
    end: int,
    *,
    digest: bool = False,
    depth: int = 0,
    fields: tuple[HeaderField, ...] | None = None,
    body_start: int | None = None,
) -> BodyPart:
    """Parse the MIME entity ``raw[start:end]`` and, recursively, its parts."""
    if body_start is None:
        body_start = _header_end(raw, start, end)
    if fields is None:
        fields = _parse_fields(raw, start, body_start)
    ct_field = _first(fields, "content-type")
    parsed = _parse_content_type(ct_field.value) if ct_field is not None else None
    params: tuple[tuple[str, str], ...] = ()
    if parsed is None:
        kind, subtype = ("message", "rfc822") if digest else ("text", "plain")
        content_type = None
    else:
        kind, subtype, params = parsed
        content_type = f"{kind}/{subtype}"
    cte_field = _field_str(fields, "content-transfer-encoding")
    cte_words = _strip_comments(cte_field).split() if cte_field else []
    encoding = cte_words[0] if cte_words else None
    disposition_text = _field_str(fields, "content-disposition")
    language_text = _field_str(fields, "content-language")
    language = None
    if language_text:
        tags = [t.strip() for t in _strip_comments(language_text).split(",") if t.strip()]
        language = tuple(tags) or None
    part = BodyPart(
        raw=raw,
        start=start,
        body_start=body_start,
        end=end,
        fields=fields,
        type=kind,
        subtype=subtype,
        params=params,
        content_type=content_type,
        id=_field_str(fields, "content-id"),
        description=_field_str(fields, "content-description"),
        encoding=encoding,
        md5=_field_str(fields, "content-md5"),
        disposition=_parse_disposition(disposition_text) if disposition_text else None,
        language=language,
        location=_field_str(fields, "content-location"),
    )
    # A header-only entity whose last line has no line end (the CRLF went to the delimiter
    # that follows): Dovecot gives that CRLF back to the entity, see _parse_multipart.
    open_line = body_start == end and end > start and raw[end - 1] != 0x0A
    if depth >= MAX_MIME_DEPTH:
        return replace(part, open_line=open_line)
    lower_kind = kind.lower()
    if lower_kind == "multipart":
        children, open_close = _parse_multipart(
            raw,
            body_start,
            end,
            _param(params, "boundary"),
            digest=subtype.lower() == "digest",
            depth=depth,
        )
        return replace(part, multipart=True, children=children, open_line=open_line or open_close)
    if lower_kind == "message" and subtype.lower() == "rfc822":
        # RFC 2046 §5.2.1 forbids encodings other than 7bit/8bit/binary here; like Dovecot,
        # the body is parsed as a message whatever it says, so the grammar stays valid.
        inner = _parse_entity(raw, body_start, end, depth=depth + 1)
        return replace(part, message=inner, open_line=inner.open_line)
    return replace(part, open_line=open_line)


def _extend(part: BodyPart, end: int) -> BodyPart:
    """``part`` grown to ``end``: the octets join its body (a header-only part: its header)."""
    body_start = end if part.body_start == part.end else part.body_start
    return replace(part, body_start=body_start, end=end, open_line=False)


def _parse_multipart(
    raw: bytes, start: int, end: int, boundary: str | None, *, digest: bool, depth: int
) -> tuple[tuple[BodyPart, ...], bool]:
    """The body parts of a multipart body ``raw[start:end]`` (RFC 2046 §5.1.1).

    A delimiter line is ``--boundary`` at the start of a line, followed by optional blanks and
    the line end; the CRLF before it belongs to the delimiter. ``--boundary--`` closes. A
    line that merely starts with the delimiter (``--boundaryX``) is content.

    Dovecot, whose parser works line by line, leaves the CRLF before a delimiter to the part
    when the part's last line is a header line or a close delimiter, which then has no line
    end of its own (``open_line``); rmail does the same, so sizes and sections agree.

    Returns:
        The parts (an empty text/plain part when none was found, like Dovecot) and whether
        the body ends in an open line (a close delimiter, or the last part's open line).
    """
    spans: list[tuple[int, int]] = []
    closed = False
    closed_open = False
    if boundary:
        dash = b"--" + boundary.encode("utf-8", "surrogateescape")
        pos = start
        part_start: int | None = None
        while True:
            p = raw.find(dash, pos, end)
            if p < 0:
                break
            if p != start and raw[p - 1] != 0x0A:
                pos = p + 1
                continue
            q = p + len(dash)
            is_close = raw[q : q + 2] == b"--" and q + 2 <= end
            r = q + 2 if is_close else q
            while r < end and raw[r] in b" \t":
                r += 1
            if r >= end:
                line_end = end
            elif raw[r] == 0x0A:
                line_end = r + 1
            elif raw[r] == 0x0D and r + 1 < end and raw[r + 1] == 0x0A:
                line_end = r + 2
            elif is_close:
                line_end = r  # junk after a close delimiter: epilogue
            else:
                pos = p + 1
                continue
            if part_start is not None:
                part_end = p
                if part_end - 2 >= part_start and raw[part_end - 2 : part_end] == _CRLF:
                    part_end -= 2
                elif part_end - 1 >= part_start and raw[part_end - 1] == 0x0A:
                    part_end -= 1
                spans.append((part_start, part_end))
            if is_close:
                closed = True
                closed_open = r >= end
                part_start = None
                break
            part_start = line_end
            pos = line_end
        if part_start is not None:
            spans.append((part_start, end))
    children: list[BodyPart] = []
    for child_start, child_end in spans:
        child = _parse_entity(raw, child_start, child_end, digest=digest, depth=depth + 1)
        if child.open_line and raw[child_end : child_end + 2] == _CRLF:
            child = _extend(child, child_end + 2)
        children.append(child)
    if not children:
        children.append(_parse_entity(raw, end, end, depth=depth + 1))
        return tuple(children), closed_open
    return tuple(children), closed_open if closed else children[-1].open_line


# -- the message ------------------------------------------------------------------------------


class ParsedMessage:
    """One stored message, parsed lazily: header fields and MIME tree on first use.

    Build it with :meth:`parse`; treat it as immutable.
    """

    __slots__ = ("_body_start", "_fields", "_root", "_values", "raw")

    raw: bytes

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self._body_start: int | None = None  # BODY[] of the whole message never needs it
        self._fields: tuple[HeaderField, ...] | None = None
        self._root: BodyPart | None = None
        # header_value() answers by field name: a cached header is searched again and again.
        self._values: dict[str, list[str]] = {}

    @classmethod
    def parse(cls, raw: bytes) -> ParsedMessage:
        """Wrap the stored bytes of a message (CRLF line endings). Cheap: nothing is parsed yet."""
        return cls(raw)

    @property
    def size(self) -> int:
        """RFC822.SIZE of the stored message (RFC 3501 §7.4.2); the index keeps it too."""
        return len(self.raw)

    @property
    def body_start(self) -> int:
        """Where the top-level body starts: the header block is ``raw[:body_start]``."""
        if self._body_start is None:
            self._body_start = _header_end(self.raw, 0, len(self.raw))
        return self._body_start

    @property
    def header(self) -> bytes:
        """The top-level header block, blank line included (BODY[HEADER])."""
        return self.raw[: self.body_start]

    @property
    def text(self) -> bytes:
        """The top-level body (BODY[TEXT])."""
        return self.raw[self.body_start :]

    @property
    def fields(self) -> tuple[HeaderField, ...]:
        """The top-level header fields, in order (parsed on first use)."""
        if self._fields is None:
            self._fields = _parse_fields(self.raw, 0, self.body_start)
        return self._fields

    @property
    def root(self) -> BodyPart:
        """The MIME tree (built on first use)."""
        if self._root is None:
            self._root = _parse_entity(
                self.raw, 0, len(self.raw), fields=self.fields, body_start=self.body_start
            )
        return self._root

    def __repr__(self) -> str:
        return f"<ParsedMessage {len(self.raw)} octets>"


# -- ENVELOPE (RFC 3501 §7.4.2) -----------------------------------------------------------------


class Address(NamedTuple):
    """One ENVELOPE address: ``(name adl mailbox host)`` (RFC 3501 §7.4.2).

    A group starts with ``(None, None, group_name, None)`` and ends with all four None.
    """

    name: str | None
    adl: str | None
    mailbox: str | None
    host: str | None


_ADDR_TOKEN_RE: Final = re.compile(
    r"""(?P<ws>[ \t\r\n]+)
      |(?P<quoted>"(?:[^"\\]|\\.)*"?)
      |(?P<dlit>\[(?:[^\]\\]|\\.)*\]?)
      |(?P<special>[<>@,;:.\\)])
      |(?P<atom>[^ \t\r\n"()<>@,;:.\[\]\\]+)""",
    re.X | re.S,
)


class _Token(NamedTuple):
    kind: str  # "atom", "quoted", "dlit", "comment", or the special character itself
    text: str
    space_before: bool


def _tokenize_addresses(value: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    space = False
    while i < len(value):
        if value[i] == "(":
            depth = 0
            j = i
            while j < len(value):
                ch = value[j]
                if ch == "\\":
                    j += 2
                    continue
                if ch == "(":
                    depth += 1
                elif ch == ")":
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            text = value[i + 1 : j].strip()
            tokens.append(_Token("comment", re.sub(r"\\(.)", r"\1", text, flags=re.S), space))
            space = True
            i = j + 1
            continue
        match = _ADDR_TOKEN_RE.match(value, i)
        if match is None:  # pragma: no cover - the pattern matches any character
            i += 1
            continue
        i = match.end()
        kind = match.lastgroup or "atom"
        if kind == "ws":
            space = True
            continue
        text = match.group()
        if kind == "quoted":
            body = text[1:-1] if len(text) > 1 and text.endswith('"') else text[1:]
            text = re.sub(r"\\(.)", r"\1", body, flags=re.S)
        elif kind == "special":
            kind = text
        tokens.append(_Token(kind, text, space))
        space = False
    return tokens


def _phrase(tokens: list[_Token]) -> str | None:
    """Display-name words joined by single spaces (RFC 5322 §3.2.5; obs-phrase dots kept)."""
    out: list[str] = []
    for tok in tokens:
        if tok.kind == "comment":
            continue
        if out and tok.space_before and tok.kind != ".":
            out.append(" ")
        out.append(tok.text)
    text = "".join(out).strip()
    return text or None


def _dotted(tokens: list[_Token]) -> str:
    """A local-part or domain: words and dots, blanks and comments dropped."""
    return "".join(t.text for t in tokens if t.kind != "comment")


def _is_addr_words(tokens: list[_Token]) -> bool:
    """True if the tokens form ``word *("." word)`` (a dot-atom or obs-local-part)."""
    words = [t for t in tokens if t.kind != "comment"]
    if not words:
        return False
    expect_word = True
    for tok in words:
        if expect_word != (tok.kind in ("atom", "quoted")):
            return False
        expect_word = not expect_word
    return not expect_word


def _last_comment(tokens: list[_Token]) -> str | None:
    for tok in reversed(tokens):
        if tok.kind == "comment" and tok.text:
            return tok.text
    return None


def _mailbox(tokens: list[_Token]) -> Address | None:
    """One mailbox (name-addr or addr-spec, RFC 5322 §3.4), leniently."""
    if not any(t.kind != "comment" for t in tokens):
        return None
    angle = next((i for i, t in enumerate(tokens) if t.kind == "<"), None)
    if angle is not None:
        name = _phrase(tokens[:angle])
        close = next((i for i, t in enumerate(tokens) if t.kind == ">" and i > angle), None)
        inner = tokens[angle + 1 : close]
        if name is None:
            name = _last_comment(tokens[close + 1 :] if close is not None else [])
        adl = None
        colon = next((i for i, t in enumerate(inner) if t.kind == ":"), None)
        if inner and inner[0].kind == "@" and colon is not None:
            adl = "".join(t.text for t in inner[:colon] if t.kind != "comment") or None
            inner = inner[colon + 1 :]
        return _addr_spec(inner, name, adl)
    at = next((i for i, t in enumerate(tokens) if t.kind == "@"), None)
    local = tokens if at is None else tokens[:at]
    if at is None and not _is_addr_words(local):
        return Address(_phrase(tokens), None, _MISSING_MAILBOX, _MISSING_DOMAIN)
    return _addr_spec(tokens, _last_comment(tokens), None)


def _addr_spec(tokens: list[_Token], name: str | None, adl: str | None) -> Address:
    at = next((i for i, t in enumerate(tokens) if t.kind == "@"), None)
    local = tokens if at is None else tokens[:at]
    domain = [] if at is None else tokens[at + 1 :]
    mailbox = _dotted(local) or _MISSING_MAILBOX
    host = _dotted(domain) or _MISSING_DOMAIN
    return Address(name, adl, mailbox, host)


def _split_top(tokens: list[_Token], stops: str) -> list[list[_Token]]:
    """Split at the ``stops`` specials that are not inside ``<...>``."""
    items: list[list[_Token]] = [[]]
    in_angle = False
    for tok in tokens:
        if tok.kind == "<":
            in_angle = True
        elif tok.kind == ">":
            in_angle = False
        if not in_angle and tok.kind in stops and len(tok.kind) == 1:
            items.append([])
        else:
            items[-1].append(tok)
    return items


_SIMPLE_ADDRESS_RE: Final = re.compile(
    r"\s*(?:(?P<name>[^<>@]*?)\s*<(?P<local>[^<>@\s]+)@(?P<host>[^<>@\s]+)>"
    r"|(?P<local2>[^<>@\s]+)@(?P<host2>[^<>@\s]+))\s*"
)
_NOT_SIMPLE: Final = frozenset('"():;\\[]')


def _simple_address_list(value: str) -> list[Address] | None:
    """The common case without the tokenizer; None when the value needs the full parser.

    Handles lists of ``a@b`` and ``Name <a@b>`` with no quotes, comments, groups, routes,
    domain literals or dots in names; the result equals what the full parser gives.
    """
    if not _NOT_SIMPLE.isdisjoint(value):
        return None
    result: list[Address] = []
    for element in value.split(","):
        if not element or element.isspace():
            continue
        match = _SIMPLE_ADDRESS_RE.fullmatch(element)
        if match is None:
            return None
        if match.group("local") is not None:
            name = " ".join(match.group("name").split()) or None
            if name is not None and "." in name:
                return None
            result.append(Address(name, None, match.group("local"), match.group("host")))
        else:
            result.append(Address(None, None, match.group("local2"), match.group("host2")))
    return result


def _parse_address_list(value: str) -> list[Address]:
    """An address-list (RFC 5322 §3.4) as ENVELOPE addresses, groups included (§3.4, 3501).

    Empty list elements are skipped (RFC 5322 §4.4 obs-addr-list).
    """
    if not value or value.isspace():
        return []
    simple = _simple_address_list(value)
    return simple if simple is not None else _parse_address_tokens(value)


def _parse_address_tokens(value: str) -> list[Address]:
    """The general address-list parser behind :func:`_parse_address_list`."""
    tokens = _tokenize_addresses(value)
    result: list[Address] = []
    i = 0
    n = len(tokens)
    while i < n:
        # Classify the element by the first structural special outside <...>.
        j = i
        in_angle = False
        kind = ""
        while j < n:
            k = tokens[j].kind
            if k == "<":
                in_angle = True
            elif k == ">":
                in_angle = False
            elif not in_angle and k in (":", ",", ";", "@"):
                kind = k
                break
            j += 1
        if kind == ":":
            group_name = _phrase(tokens[i:j]) or ""
            # members run to the ";" that closes the group (or the end)
            end = j + 1
            in_angle = False
            while end < n:
                k = tokens[end].kind
                if k == "<":
                    in_angle = True
                elif k == ">":
                    in_angle = False
                elif k == ";" and not in_angle:
                    break
                end += 1
            result.append(Address(None, None, group_name, None))
            for member in _split_top(tokens[j + 1 : end], ","):
                address = _mailbox(member)
                if address is not None:
                    result.append(address)
            result.append(Address(None, None, None, None))
            i = end + 1
            continue
        # a mailbox runs to the next top-level "," (a stray ";" ends it too)
        end = i
        in_angle = False
        while end < n:
            k = tokens[end].kind
            if k == "<":
                in_angle = True
            elif k == ">":
                in_angle = False
            elif k in (",", ";") and not in_angle:
                break
            end += 1
        address = _mailbox(tokens[i:end])
        if address is not None:
            result.append(address)
        i = end + 1
    return result


def _render_addresses(addresses: list[Address], utf8: bool) -> bytes:
    if not addresses:
        return _NIL
    return (
        b"("
        + b"".join(
            b"(" + b" ".join(responses.nstring(part, utf8=utf8) for part in address) + b")"
            for address in addresses
        )
        + b")"
    )


def _envelope_values(msg: ParsedMessage | BodyPart) -> dict[str, str]:
    """The first value of each ENVELOPE field.

    For a message whose fields were not split yet, one regex pass picks out just these
    fields, which keeps ``FETCH 1:* ENVELOPE`` cheap on headers full of Received lines.
    """
    found: dict[str, str] = {}
    if isinstance(msg, ParsedMessage) and msg._fields is None:
        for match in _ENVELOPE_FIELD_RE.finditer(msg.raw, 0, msg.body_start):
            name = match.group(1).decode("ascii").lower()
            if name not in found:
                value = match.group(2).replace(b"\r", b"").replace(b"\n", b"")
                found[name] = value.lstrip(b" \t").decode("utf-8", "surrogateescape")
        return found
    for f in msg.fields:
        if f.name in _ENVELOPE_FIELDS and f.name not in found:
            found[f.name] = f.value
    return found


def _envelope_of(msg: ParsedMessage | BodyPart, utf8: bool) -> bytes:
    return _render_envelope(_envelope_values(msg), utf8)


def _render_envelope(found: Mapping[str, str], utf8: bool) -> bytes:
    from_ = _parse_address_list(found.get("from", ""))
    # RFC 3501 §7.4.2: absent or empty Sender / Reply-To take the From value.
    sender = _parse_address_list(found.get("sender", "")) or from_
    reply_to = _parse_address_list(found.get("reply-to", "")) or from_

    def text(name: str) -> bytes:
        return responses.nstring(found.get(name), utf8=utf8)

    def addresses(values: list[Address]) -> bytes:
        return _render_addresses(values, utf8)

    return b"(" + b" ".join((
        text("date"),
        text("subject"),
        addresses(from_),
        addresses(sender),
        addresses(reply_to),
        addresses(_parse_address_list(found.get("to", ""))),
        addresses(_parse_address_list(found.get("cc", ""))),
        addresses(_parse_address_list(found.get("bcc", ""))),
        text("in-reply-to"),
        text("message-id"),
    )) + b")"  # fmt: skip


def envelope(msg: ParsedMessage | BodyPart, *, utf8: bool = False) -> bytes:
    """The ENVELOPE of a message (RFC 3501 §7.4.2), parenthesized.

    Strings are the raw header values, unfolded (RFC 2047 encoded words stay encoded);
    absent fields are NIL. When a field occurs twice the first one counts.

    Args:
        msg: A message, or an encapsulated message (``BodyPart.message``).
        utf8: The client enabled UTF-8 (RFC 6855): 8-bit strings may be quoted.
    """
    return _envelope_of(msg, utf8)


def envelope_of_values(values: Mapping[str, Sequence[str]], *, utf8: bool = False) -> bytes:
    """:func:`envelope` from a message's header values (field name -> unfolded values in
    message order, as ``rmail.store.headercache`` keeps them) instead of its bytes."""
    found = {name: items[0] for name, items in values.items() if name in _ENVELOPE_FIELDS and items}
    return _render_envelope(found, utf8)


def render_envelope(values: Mapping[str, Sequence[str]], *, utf8: bool = False) -> bytes:
    """The ENVELOPE FETCH item, as :func:`render_item` gives it, from header values."""
    return b"ENVELOPE " + envelope_of_values(values, utf8=utf8)


def header_addresses(msg: ParsedMessage | BodyPart, name: str) -> list[Address]:
    """The addresses in the first ``name`` field (for SORT FROM/TO/CC, RFC 5256 §3)."""
    found = _first(msg.fields, name.lower())
    return [] if found is None else _parse_address_list(found.value)


# -- BODY / BODYSTRUCTURE (RFC 3501 §7.4.2) ---------------------------------------------------


def _params_list(params: tuple[tuple[str, str], ...], utf8: bool) -> bytes:
    if not params:
        return _NIL
    return responses.imap_list(
        responses.string(item, utf8=utf8) for pair in params for item in pair
    )


def _body_of(part: BodyPart, extensible: bool, utf8: bool) -> bytes:
    def s(value: str | None) -> bytes:
        return responses.nstring(value, utf8=utf8)

    if part.multipart:
        items = [b"".join(_body_of(child, extensible, utf8) for child in part.children)]
        items.append(s(part.subtype))
        if extensible:
            items.append(_params_list(part.params, utf8))
            items.extend(_extension(part, utf8))
        return b"(" + b" ".join(items) + b")"
    kind, subtype, params = part.type, part.subtype, part.params
    if part.message is None and kind.lower() == "message" and subtype.lower() == "rfc822":
        # Past MAX_MIME_DEPTH: "MESSAGE" "RFC822" would promise an envelope and a body
        # (RFC 3501 §9 body-type-msg), so the part is shown as opaque data.
        kind, subtype = "application", "octet-stream"
    if part.content_type is None or (
        kind.lower() == "text"
        and subtype.lower() == "plain"
        and len(params) == 1
        and params[0][0].lower() == "charset"
        and params[0][1].lower() == "us-ascii"
    ):
        # The RFC 2045 §5.2 default, written the way Dovecot writes it.
        kind, subtype = kind.lower(), subtype.lower()
        params = (("charset", "us-ascii"),) if kind == "text" else params
    elif kind.lower() == "text" and not params:
        params = (("charset", "us-ascii"),)
    items = [
        s(kind),
        s(subtype),
        _params_list(params, utf8),
        s(part.id),
        s(part.description),
        s(part.encoding or "7bit"),
        b"%d" % part.size,
    ]
    if part.message is not None:
        items.append(envelope(part.message, utf8=utf8))
        items.append(_body_of(part.message, extensible, utf8))
        items.append(b"%d" % part.lines)
    elif kind.lower() == "text":
        items.append(b"%d" % part.lines)
    if extensible:
        items.append(s(part.md5))
        items.extend(_extension(part, utf8))
    return b"(" + b" ".join(items) + b")"


def _extension(part: BodyPart, utf8: bool) -> list[bytes]:
    """body-fld-dsp, body-fld-lang, body-fld-loc (RFC 3501 §9)."""
    if part.disposition is None:
        disposition = _NIL
    else:
        kind, params = part.disposition
        disposition = (
            b"(" + responses.string(kind, utf8=utf8) + b" " + _params_list(params, utf8) + b")"
        )
    language = (
        _NIL
        if part.language is None
        else responses.imap_list(responses.string(tag, utf8=utf8) for tag in part.language)
    )
    return [disposition, language, responses.nstring(part.location, utf8=utf8)]


def bodystructure(msg: ParsedMessage, extensible: bool, *, utf8: bool = False) -> bytes:
    """BODY (``extensible`` False) or BODYSTRUCTURE (True) of a message (RFC 3501 §7.4.2).

    Text parts carry their line count, message/rfc822 parts the envelope, body and line count
    of the encapsulated message, multiparts their subtype; BODYSTRUCTURE adds the extension
    data (MD5, disposition, language, location; parameters for multiparts). A part without a
    Content-Type is ``"text" "plain" ("charset" "us-ascii")`` (RFC 2045 §5.2).
    """
    return _body_of(msg.root, extensible, utf8)


# -- sections (RFC 3501 §6.4.5) -------------------------------------------------------------


def _resolve(msg: ParsedMessage, path: tuple[int, ...]) -> BodyPart | None:
    """The part a non-empty part path names, or None.

    A multipart's parts are numbered from 1. A non-multipart part has only a part 1: itself
    (at the top level, part 1 of a single-part message is its body, RFC 3501 §6.4.5; Dovecot
    extends this to any non-multipart part). Numbers after a message/rfc822 part go on in the
    encapsulated message.
    """
    part: BodyPart | None = msg.root
    for index, number in enumerate(path):
        assert part is not None
        last = index == len(path) - 1
        if part.multipart:
            part = part.children[number - 1] if 1 <= number <= len(part.children) else None
        elif number != 1 or (not last and part.message is None):
            part = None
        if part is None:
            return None
        if not last and part.message is not None:
            part = part.message
    return part


def _header_fields(fields: tuple[HeaderField, ...], names: tuple[str, ...], exclude: bool) -> bytes:
    """HEADER.FIELDS / HEADER.FIELDS.NOT: matching fields as stored, then a blank line."""
    wanted = {name.lower() for name in names}
    out = [
        f.raw if f.raw.endswith(b"\n") else f.raw + _CRLF
        for f in fields
        if (f.name in wanted) != exclude
    ]
    out.append(_CRLF)
    return b"".join(out)


def section(msg: ParsedMessage, spec: Section) -> bytes:
    """The octets of a BODY[...] section (RFC 3501 §6.4.5), exact slices of the message.

    ``[]`` is the whole message, ``[HEADER]`` the header with its blank line, ``[TEXT]`` the
    body, ``[HEADER.FIELDS (...)]`` / ``.NOT`` the matching fields as stored (folding kept, in
    message order) and a blank line. ``[1.2]`` is a part's body, ``[1.2.MIME]`` its MIME
    header; HEADER/TEXT after a part number apply to a message/rfc822 part's message. A part
    that does not exist gives empty octets, as RFC 3501 allows.
    """
    if not spec.part:
        if spec.text is None:
            return msg.raw
        fields, header, text = msg.fields, msg.header, msg.text
    else:
        part = _resolve(msg, spec.part)
        if part is None:
            return b""
        if spec.text is None:
            return part.body
        if spec.text == "MIME":
            return part.header
        if part.message is None:
            return b""
        fields, header, text = part.message.fields, part.message.header, part.message.body
    if spec.text == "HEADER":
        return header
    if spec.text == "TEXT":
        return text
    if spec.text == "HEADER.FIELDS":
        return _header_fields(fields, spec.fields, exclude=False)
    if spec.text == "HEADER.FIELDS.NOT":
        return _header_fields(fields, spec.fields, exclude=True)
    return b""  # MIME of the whole message is not defined (RFC 3501 §6.4.5)


def partial(data: bytes, offset: int, length: int) -> bytes:
    """``<offset.length>`` of a section (RFC 3501 §6.4.5): empty past the end."""
    return data[offset : offset + length]


# -- BINARY (RFC 3516) --------------------------------------------------------------------------


def _decode_base64(data: bytes) -> bytes:
    """Lenient base64 (RFC 2045 §6.8): characters outside the alphabet are ignored."""
    clean = _BASE64_JUNK_RE.sub(b"", data)
    remainder = len(clean) % 4
    if remainder == 1:  # a lone sextet carries no whole octet
        clean = clean[:-1]
    elif remainder:
        clean += b"=" * (4 - remainder)
    try:
        return binascii.a2b_base64(clean)
    except binascii.Error:  # pragma: no cover - the input is clean alphabet, padded
        return b""


def _decode_qp(data: bytes) -> bytes:
    """Quoted-printable (RFC 2045 §6.7); blanks before a line end are transport padding."""
    return binascii.a2b_qp(_QP_TRAILING_WS_RE.sub(b"", data))


def _decode_part(part: BodyPart) -> bytes | None:
    cte = part.cte
    if cte in _IDENTITY_CTES:
        return part.body
    if cte == "base64":
        return _decode_base64(part.body)
    if cte == "quoted-printable":
        return _decode_qp(part.body)
    return None


def binary_section(msg: ParsedMessage, spec: Section) -> bytes | None:
    """A BINARY[...] section: the part's body with its transfer encoding undone (RFC 3516 §4.2).

    ``[]`` is the whole message and a multipart the raw octets (their encoding is an identity
    one by RFC 2046 §5.1); MIME/HEADER specs, which RFC 3516 does not define, give what
    BODY[...] gives. A part that does not exist gives empty octets.

    Returns:
        The decoded octets, or None when the encoding is unknown (the server answers
        ``NO [UNKNOWN-CTE]``).
    """
    if not spec.part or spec.text is not None:
        return section(msg, spec)
    part = _resolve(msg, spec.part)
    if part is None:
        return b""
    if part.multipart:
        return part.body
    return _decode_part(part)


def binary_size(msg: ParsedMessage, spec: Section) -> int | None:
    """BINARY.SIZE[...]: the size of the decoded section, or None (RFC 3516 §4.2)."""
    data = binary_section(msg, spec)
    return None if data is None else len(data)


# -- FETCH items ----------------------------------------------------------------------------


def _section_name(prefix: bytes, spec: Section | None) -> bytes:
    spec = spec or Section()
    parts = [b"%d" % n for n in spec.part]
    if spec.text is not None:
        parts.append(spec.text.encode("ascii"))
    text = b".".join(parts)
    if spec.text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        text += b" " + responses.imap_list(responses.astring(name) for name in spec.fields)
    return prefix + b"[" + text + b"]"


def _binary_domain(data: bytes) -> bool:
    """True for "binary" data (RFC 2045 §2.8-2.9): NUL, bare CR or LF, or overlong lines.

    RFC 3516 §4.3: such data MUST be sent as a literal8; 7bit or 8bit data without NUL SHOULD
    be sent as a plain string.
    """
    if b"\x00" in data:
        return True
    crlf = data.count(b"\r\n")
    if data.count(b"\r") != crlf or data.count(b"\n") != crlf:
        return True
    return _LONG_LINE_RE.search(data) is not None


def render_item(attr: FetchAttr, msg: ParsedMessage, *, utf8: bool = False) -> bytes:
    """One message-content FETCH item as it appears inside ``FETCH (...)`` (RFC 3501 §7.4.2).

    Handles RFC822, RFC822.HEADER, RFC822.TEXT, ENVELOPE, BODY, BODYSTRUCTURE,
    BODY[...]<o.l> (the reply names BODY[...] also for BODY.PEEK, and echoes only the origin
    ``<o>`` of a partial), BINARY[...]<o.l> and BINARY.SIZE[...] (RFC 3516 §4.2). Decoded BINARY
    data is sent as a literal8 when it is binary (NUL, bare CR/LF, long lines; RFC 3516 §4.3),
    decided on the whole section even for a partial fetch.

    Args:
        attr: The item. FLAGS, UID, INTERNALDATE, RFC822.SIZE and MODSEQ come from the
            index; they are the server's to render.
        msg: The message.
        utf8: The client enabled UTF-8 (RFC 6855), for ENVELOPE/BODYSTRUCTURE strings.

    Raises:
        UnknownTransferEncoding: BINARY of a part whose encoding cannot be decoded.
        ValueError: ``attr`` is not a message-content item.
    """
    name = attr.name
    if name == "RFC822":
        return b"RFC822 " + responses.literal(msg.raw)
    if name == "RFC822.HEADER":
        return b"RFC822.HEADER " + responses.literal(msg.header)
    if name == "RFC822.TEXT":
        return b"RFC822.TEXT " + responses.literal(msg.text)
    if name == "ENVELOPE":
        return b"ENVELOPE " + envelope(msg, utf8=utf8)
    if name == "BODY":
        return b"BODY " + bodystructure(msg, False, utf8=utf8)
    if name == "BODYSTRUCTURE":
        return b"BODYSTRUCTURE " + bodystructure(msg, True, utf8=utf8)
    spec = attr.section or Section()
    if name == "BODY[]":
        data = section(msg, spec)
        label = _section_name(b"BODY", spec)
        if attr.partial is not None:
            data = partial(data, *attr.partial)
            label += b"<%d>" % attr.partial[0]
        return b" ".join((label, responses.literal(data)))  # one copy of the data, not two
    if name in ("BINARY[]", "BINARY.SIZE[]"):
        decoded = binary_section(msg, spec)
        if decoded is None:
            part = ".".join(str(n) for n in spec.part)
            raise UnknownTransferEncoding(f"unknown Content-Transfer-Encoding in part {part}")
        if name == "BINARY.SIZE[]":
            return _section_name(b"BINARY.SIZE", spec) + b" %d" % len(decoded)
        binary = _binary_domain(decoded)
        label = _section_name(b"BINARY", spec)
        if attr.partial is not None:
            decoded = partial(decoded, *attr.partial)
            label += b"<%d>" % attr.partial[0]
        return label + b" " + responses.literal(decoded, binary=binary)
    raise ValueError(f"{name} is not a message-content FETCH item")


# -- decoded text for SEARCH and SORT -----------------------------------------------------------


def _clean(value: str) -> str:
    """``value`` without lone surrogates: undecodable header bytes are read as Latin-1."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape").decode("latin-1")
    return value


def _decode_words(value: str) -> str:
    """RFC 2047 encoded words decoded; the value unchanged when it has none or they are bad."""
    value = _clean(value)
    if "=?" not in value:
        return value
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except (LookupError, UnicodeError, ValueError, email.errors.HeaderParseError):
        return value


def header_value(msg: ParsedMessage | BodyPart, name: str) -> list[str]:
    """Every ``name`` field's value, unfolded and RFC 2047-decoded (SEARCH HEADER, SORT)."""
    wanted = name.lower()
    if isinstance(msg, ParsedMessage):
        values = msg._values.get(wanted)
        if values is None:
            values = msg._values[wanted] = [
                _decode_words(f.value) for f in msg.fields if f.name == wanted
            ]
        return list(values)
    return [_decode_words(f.value) for f in msg.fields if f.name == wanted]


def decode_values(values: Iterable[str]) -> list[str]:
    """Unfolded header values RFC 2047-decoded, as :func:`header_value` gives them."""
    return [_decode_words(value) for value in values]


def header_text(msg: ParsedMessage | BodyPart) -> str:
    """The whole header as decoded ``Name: value`` lines (for SEARCH TEXT, RFC 3501 §6.4.4)."""
    return "\n".join(
        f.raw[: f.colon].decode("latin-1") + ": " + _decode_words(f.value) for f in msg.fields
    )


def _text_parts(part: BodyPart) -> Iterator[BodyPart]:
    if part.multipart:
        for child in part.children:
            yield from _text_parts(child)
    elif part.message is not None:
        yield from _text_parts(part.message)
    elif part.is_text:
        yield part


def _charset_decode(data: bytes, charset: str | None) -> str:
    """``data`` as text; unknown (or non-text) codecs and us-ascii fall back to UTF-8."""
    name = (charset or "us-ascii").strip().lower()
    try:
        if codecs.lookup(name).name != "ascii":
            return data.decode(name, "replace")
    except (LookupError, UnicodeError, ValueError):
        pass  # not a charset Python knows, or not a text codec (base64, rot13 ...)
    # 8-bit text labelled us-ascii (or unlabelled) is nearly always UTF-8.
    return data.decode("utf-8", "replace")


def text_content(msg: ParsedMessage) -> str:
    """The decoded text of every text/* part, encapsulated messages included (SEARCH BODY)."""
    chunks = []
    for part in _text_parts(msg.root):
        decoded = _decode_part(part)
        if decoded is None:
            decoded = part.body
        chunks.append(_charset_decode(decoded, part.charset))
    return "\n".join(chunks)


# Codecs that read every ASCII octet as that ASCII character (and which _charset_decode
# really uses: ``us-ascii``, unknown names and non-text codecs become UTF-8).
_ASCII_SUPERSETS: Final = frozenset(
    {"ascii", "utf-8", "cp1250", "cp1251", "cp1252", "cp1253", "cp1254", "cp1255", "cp1256",
     "cp1257", "cp1258", "koi8-r", "koi8-u"}
    | {f"iso8859-{n}" for n in range(1, 17) if n != 12}
)  # fmt: skip


def _codec_name(charset: str | None) -> str:
    """The codec :func:`_charset_decode` looks up for ``charset`` (UTF-8 if none is found)."""
    try:
        return codecs.lookup((charset or "us-ascii").strip().lower()).name
    except (LookupError, UnicodeError, ValueError):
        return "utf-8"


def header_text_as_stored(msg: ParsedMessage) -> bool:
    """Whether :func:`header_text` shows the header's ASCII words as they are stored: every
    ASCII word (no white space) in it after case folding is in the stored header too, in
    ASCII lower case. True for an ASCII header without RFC 2047 encoded words.
    """
    header = msg.header
    return b"=?" not in header and header.isascii()


def body_text_as_stored(msg: ParsedMessage) -> bool:
    """:func:`header_text_as_stored` for :func:`text_content`.

    True when every text part has no base64 or quoted-printable encoding and an
    ASCII-compatible charset (one other than UTF-8 only for an ASCII body). A SEARCH for
    ASCII words can then judge the message by its bytes, as long as they hold no non-ASCII
    character whose case folding is ASCII (the caller checks that).
    """
    for part in _text_parts(msg.root):
        if part.cte in ("base64", "quoted-printable"):
            return False
        codec = _codec_name(part.charset)
        if codec not in _ASCII_SUPERSETS:
            return False
        if codec not in ("ascii", "utf-8") and not part.body.isascii():
            return False
    return True


def sent_date(msg: ParsedMessage | BodyPart) -> datetime.datetime | None:
    """The Date: field as an aware datetime (SENTBEFORE etc., SORT DATE), None if unusable.

    A ``-0000`` zone (RFC 5322 §3.3: local time unknown) is read as UTC.
    """
    found = _first(msg.fields, "date")
    if found is None:
        return None
    try:
        when = email.utils.parsedate_to_datetime(_clean(found.value))
    except (ValueError, TypeError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when
