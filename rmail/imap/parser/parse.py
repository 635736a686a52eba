"""The IMAP command parser: one complete command as bytes in, one typed command out.

Sans-I/O and pure. ``server.py`` frames the input: it reads a line, and while
``literal_at_end(line)`` says the line announces a literal it reads that many bytes and the
next line, then hands everything, exactly as read, to ``parse_command``. The result is a
``Command`` value from ``commands.py``, or a ``ParseError`` (answer ``BAD``) / ``BadCharset``
(answer ``NO [BADCHARSET]``); nothing else escapes, whatever the input.

The grammar is RFC 3501 §9 with the extensions rmail implements: UIDPLUS UID EXPUNGE
(RFC 4315), LITERAL+ (RFC 7888), BINARY (RFC 3516), MULTIAPPEND (RFC 3502), ID (RFC 2971),
ENABLE (RFC 5161), SASL-IR (RFC 4959), CONDSTORE/QRESYNC (RFC 7162), ESEARCH (RFC 4731),
SEARCHRES (RFC 5182), SORT/THREAD (RFC 5256), ESORT (RFC 5267), LIST-EXTENDED (RFC 5258),
LIST-STATUS (RFC 5819), SPECIAL-USE (RFC 6154), STATUS=SIZE (RFC 8438), APPENDLIMIT
(RFC 7889), QUOTA (RFC 9208), MOVE (RFC 6851), UNSELECT (RFC 3691), IDLE (RFC 2177),
NAMESPACE (RFC 2342) and UTF8=ACCEPT (RFC 6855).

Strings are decoded here, at the edge: mailbox names from modified UTF-7 (or UTF-8 once the
client enabled UTF8=ACCEPT, ``utf8=True``), with any case of INBOX mapped to ``INBOX``;
every other string as UTF-8 with ``surrogateescape``.

Deliberate leniencies: a line may end in LF as well as CRLF (or the data may stop without
one), CHANGEDSINCE and QRESYNC accept a mod-sequence of 0, the APPEND date-time accepts a
one-digit day without the leading space, quoted strings may hold 8-bit bytes, ID accepts atoms
as well as strings, ``RETURN ()`` of SEARCH/SORT means ``RETURN (ALL)`` (RFC 4731 §3.1) and
is reported so. The APPEND ``UTF8 (~{n}...)`` data (RFC 6855 §4) is accepted with
``utf8=True`` only. Error messages never quote input from LOGIN or AUTHENTICATE.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from typing import Final, Literal, NoReturn, cast

from rmail.imap import mutf7
from rmail.imap.parser.commands import (
    AppendCommand,
    AppendMessage,
    AuthenticateCommand,
    CapabilityCommand,
    CheckCommand,
    CloseCommand,
    Command,
    CopyCommand,
    CreateCommand,
    DeleteCommand,
    EnableCommand,
    ExpungeCommand,
    FetchCommand,
    GetQuotaCommand,
    GetQuotaRootCommand,
    IdCommand,
    IdleCommand,
    ListCommand,
    LoginCommand,
    LogoutCommand,
    LsubCommand,
    MoveCommand,
    NamespaceCommand,
    NoopCommand,
    QResyncParams,
    RenameCommand,
    SearchCommand,
    SearchReturn,
    SelectCommand,
    SortCommand,
    StartTlsCommand,
    StatusCommand,
    StatusItem,
    StoreCommand,
    SubscribeCommand,
    ThreadCommand,
    UnselectCommand,
    UnsubscribeCommand,
)
from rmail.imap.parser.errors import BadCharset, ParseError
from rmail.imap.parser.types import (
    FetchAttr,
    SearchAll,
    SearchAnd,
    SearchDate,
    SearchFlag,
    SearchHeader,
    SearchKey,
    SearchModSeq,
    SearchNot,
    SearchOr,
    SearchSet,
    SearchSize,
    SearchText,
    Section,
    SequenceSet,
    SortKey,
)

__all__ = ["command_name", "literal_at_end", "parse_command"]

# -- character classes (RFC 3501 §9) --------------------------------------------------------

# atom-specials = "(" / ")" / "{" / SP / CTL / list-wildcards / quoted-specials / resp-specials
_ATOM_SPECIALS: Final = b'(){ %*"\\]'


def _char_class(extra_excluded: bytes = b"", extra_included: bytes = b"") -> bytes:
    chars = [
        c
        for c in range(0x21, 0x7F)
        if (c not in _ATOM_SPECIALS or c in extra_included) and c not in extra_excluded
    ]
    return b"[" + b"".join(re.escape(bytes([c])) for c in chars) + b"]+"


# Simple character-class runs: linear, no backtracking.
_ATOM: Final = re.compile(_char_class())  # ATOM-CHAR
_ASTRING_ATOM: Final = re.compile(_char_class(extra_included=b"]"))  # ASTRING-CHAR
_TAG: Final = re.compile(_char_class(extra_excluded=b"+", extra_included=b"]"))
_LIST_CHARS: Final = re.compile(_char_class(extra_included=b"%*]"))  # list-char
_DIGITS: Final = re.compile(rb"[0-9]+")
_FETCH_NAME: Final = re.compile(rb"[A-Za-z0-9.]+")
_SECTION_TEXT: Final = re.compile(rb"[A-Za-z][A-Za-z.]*")
# quoted = DQUOTE *QUOTED-CHAR DQUOTE: the next byte that ends or escapes, or is not allowed.
_QUOTED_SPECIAL: Final = re.compile(rb'["\\\r\n\x00]')
# literal = "{" number ["+"] "}" CRLF (RFC 3501 §9, RFC 7888 LITERAL+); "~" for literal8.
_LITERAL: Final = re.compile(rb"\{([0-9]{1,10})(\+?)\}\r?\n")
_LITERAL_AT_END: Final = re.compile(rb"(?<=[ (])(~?)\{([0-9]{1,20})(\+?)\}\Z")
# date-text = date-day "-" date-month "-" date-year (RFC 3501 §9, SEARCH dates)
_DATE: Final = re.compile(rb"([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})")
# date-time = DQUOTE date-day-fixed "-" date-month "-" date-year SP time SP zone DQUOTE
_DATE_TIME: Final = re.compile(
    rb'"( [0-9]|[0-9]{1,2})-([A-Za-z]{3})-([0-9]{4}) '
    rb'([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{2})([0-9]{2})"'
)
# base64 = *(4base64-char) [base64-terminal] (RFC 3501 §9), for SASL-IR (RFC 4959)
_BASE64: Final = re.compile(rb"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?\Z")

_MONTHS: Final = {
    name: index + 1
    for index, name in enumerate(
        (
            b"JAN",
            b"FEB",
            b"MAR",
            b"APR",
            b"MAY",
            b"JUN",
            b"JUL",
            b"AUG",
            b"SEP",
            b"OCT",
            b"NOV",
            b"DEC",
        )
    )
}

_MAX_NUMBER: Final = 4294967295  # number / nz-number: unsigned 32-bit (RFC 3501 §9)
_MAX_MODSEQ: Final = 9223372036854775807  # mod-sequence-value: 63-bit (RFC 7162 §7)
_MAX_NUMBER64: Final = 9223372036854775807  # number64 (RFC 9051 §9), for LARGER/SMALLER
_MAX_DEPTH: Final = 64  # nesting of search keys; bounds recursion on hostile input
_SP: Final = 0x20
_CR: Final = 0x0D
_LF: Final = 0x0A

_SYSTEM_FLAGS: Final = {
    flag.upper(): flag
    for flag in ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft", "\\Recent")
}
# RFC 6154 §2 use-attr
_USE_ATTRS: Final = {
    attr.upper(): attr
    for attr in ("\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash")
}
_STATUS_ITEMS: Final[frozenset[str]] = frozenset(
    (
        "MESSAGES",
        "RECENT",
        "UIDNEXT",
        "UIDVALIDITY",
        "UNSEEN",
        "HIGHESTMODSEQ",
        "SIZE",
        "APPENDLIMIT",
    )
)
_SEARCH_RETURNS: Final[frozenset[str]] = frozenset(("MIN", "MAX", "ALL", "COUNT", "SAVE"))
_CHARSETS: Final[frozenset[str]] = frozenset(("UTF-8", "US-ASCII"))
_BADCHARSET: Final = "[BADCHARSET (UTF-8 US-ASCII)]"
_LIST_SELECT: Final[frozenset[str]] = frozenset(
    ("SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE")
)
_LIST_RETURN: Final[frozenset[str]] = frozenset(("SUBSCRIBED", "CHILDREN", "SPECIAL-USE"))
_SortKeyName = Literal["ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO"]
_SORT_KEYS: Final[dict[str, _SortKeyName]] = {
    "ARRIVAL": "ARRIVAL",
    "CC": "CC",
    "DATE": "DATE",
    "FROM": "FROM",
    "SIZE": "SIZE",
    "SUBJECT": "SUBJECT",
    "TO": "TO",
}
_ThreadAlgorithm = Literal["REFERENCES", "ORDEREDSUBJECT"]
_THREAD_ALGORITHMS: Final[dict[str, _ThreadAlgorithm]] = {
    "REFERENCES": "REFERENCES",
    "ORDEREDSUBJECT": "ORDEREDSUBJECT",
}
_STORE_OPS: Final[dict[str, Literal["set", "add", "remove"]]] = {
    "FLAGS": "set",
    "+FLAGS": "add",
    "-FLAGS": "remove",
}

# RFC 3501 §6.4.5: the plain FETCH data items, and the macros.
_FETCH_SIMPLE: Final[dict[str, FetchAttr]] = {
    attr.name: attr
    for attr in (
        FetchAttr("FLAGS"),
        FetchAttr("INTERNALDATE"),
        FetchAttr("RFC822"),
        FetchAttr("RFC822.HEADER"),
        FetchAttr("RFC822.SIZE"),
        FetchAttr("RFC822.TEXT"),
        FetchAttr("ENVELOPE"),
        FetchAttr("BODYSTRUCTURE"),
        FetchAttr("UID"),
        FetchAttr("MODSEQ"),
    )
}
_SectionText = Literal["HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"]
_SECTION_TEXTS: Final[dict[str, _SectionText]] = {
    "HEADER": "HEADER",
    "HEADER.FIELDS": "HEADER.FIELDS",
    "HEADER.FIELDS.NOT": "HEADER.FIELDS.NOT",
    "TEXT": "TEXT",
    "MIME": "MIME",
}
_FAST: Final = (FetchAttr("FLAGS"), FetchAttr("INTERNALDATE"), FetchAttr("RFC822.SIZE"))
_FETCH_MACROS: Final[dict[str, tuple[FetchAttr, ...]]] = {
    "FAST": _FAST,
    "ALL": (*_FAST, FetchAttr("ENVELOPE")),
    "FULL": (*_FAST, FetchAttr("ENVELOPE"), FetchAttr("BODY")),
}

# RFC 3501 §6.4.4 search keys without an argument.
_SEARCH_FLAG_KEYS: Final[dict[str, SearchKey]] = {
    "ALL": SearchAll(),
    "ANSWERED": SearchFlag("\\Answered"),
    "DELETED": SearchFlag("\\Deleted"),
    "DRAFT": SearchFlag("\\Draft"),
    "FLAGGED": SearchFlag("\\Flagged"),
    "SEEN": SearchFlag("\\Seen"),
    "RECENT": SearchFlag("\\Recent"),
    "UNANSWERED": SearchFlag("\\Answered", False),
    "UNDELETED": SearchFlag("\\Deleted", False),
    "UNDRAFT": SearchFlag("\\Draft", False),
    "UNFLAGGED": SearchFlag("\\Flagged", False),
    "UNSEEN": SearchFlag("\\Seen", False),
    "NEW": SearchAnd((SearchFlag("\\Recent"), SearchFlag("\\Seen", False))),
    "OLD": SearchFlag("\\Recent", False),
}
_SEARCH_HEADER_KEYS: Final = {
    "BCC": "Bcc",
    "CC": "Cc",
    "FROM": "From",
    "SUBJECT": "Subject",
    "TO": "To",
}
_SEARCH_DATE_KEYS: Final[dict[str, tuple[Literal["before", "on", "since"], bool]]] = {
    "BEFORE": ("before", False),
    "ON": ("on", False),
    "SINCE": ("since", False),
    "SENTBEFORE": ("before", True),
    "SENTON": ("on", True),
    "SENTSINCE": ("since", True),
}


def _printable(raw: bytes, limit: int = 40) -> str:
    """A short printable excerpt of client bytes, safe to put in a BAD message."""
    text = raw[:limit].decode("ascii", "replace")
    text = "".join(char if char.isprintable() and char.isascii() else "?" for char in text)
    return text + ("..." if len(raw) > limit else "")


class _Parser:
    """Recursive descent over one command's bytes with a moving index."""

    __slots__ = ("data", "pos", "secret", "tag", "utf8")

    def __init__(self, data: bytes, utf8: bool) -> None:
        self.data = data
        self.pos = 0
        self.tag: str | None = None
        self.utf8 = utf8
        # Set while a command carries credentials: error messages then quote no input.
        self.secret = False

    # -- low-level ----------------------------------------------------------------------

    def fail(self, message: str, offset: int | None = None) -> NoReturn:
        raise ParseError(message, self.tag, self.pos if offset is None else offset)

    def peek(self) -> int:
        """The next byte, or -1 at the end of the data."""
        return self.data[self.pos] if self.pos < len(self.data) else -1

    def at_eol(self) -> bool:
        """True at the command's final line end (CRLF, LF, or the end of the data)."""
        rest = len(self.data) - self.pos
        if rest == 0:
            return True
        if rest == 1:
            return self.data[self.pos] == _LF
        return rest == 2 and self.data[self.pos] == _CR and self.data[self.pos + 1] == _LF

    def finish(self) -> None:
        if not self.at_eol():
            if self.secret:
                self.fail("unexpected data after the command")
            extra = self.data[self.pos :].rstrip(b"\r\n").strip()
            self.fail(f"unexpected data after the command: {_printable(extra, 20)}")

    def sp(self, what: str) -> None:
        """SP before the argument ``what``."""
        if self.peek() == _SP:
            self.pos += 1
            return
        if self.at_eol():
            self.fail(f"missing {what}")
        self.fail(f"expected a space before {what}")

    def expect(self, byte: bytes, what: str) -> None:
        if self.data.startswith(byte, self.pos):
            self.pos += len(byte)
            return
        if self.at_eol():
            self.fail(f"missing {what}")
        self.fail(f"expected {what}")

    def match(self, pattern: re.Pattern[bytes], what: str) -> bytes:
        found = pattern.match(self.data, self.pos)
        if found is None:
            if self.at_eol():
                self.fail(f"missing {what}")
            self.fail(f"invalid {what}")
        self.pos = found.end()
        return found.group()

    def atom(self, what: str) -> bytes:
        return self.match(_ATOM, what)

    def keyword(self, what: str) -> str:
        """An atom compared case-insensitively (command names, options): upper-case str."""
        return self.atom(what).decode("ascii").upper()

    def peek_keyword(self) -> str | None:
        """The upper-cased atom at the index, without consuming it."""
        found = _ATOM.match(self.data, self.pos)
        return None if found is None else found.group().decode("ascii").upper()

    def skip_keyword(self, word: str) -> bool:
        """Consume the atom ``word`` (case-insensitive) if it is next, followed by a delimiter."""
        found = _ATOM.match(self.data, self.pos)
        if found is None or found.group().decode("ascii").upper() != word:
            return False
        self.pos = found.end()
        return True

    def number(self, what: str, *, maximum: int = _MAX_NUMBER, nonzero: bool = False) -> int:
        """number / nz-number (RFC 3501 §9) bounded by ``maximum``."""
        start = self.pos
        digits = self.match(_DIGITS, what)
        if len(digits) > len(str(maximum)):
            self.fail(f"{what} is too large", start)
        if nonzero and digits[0] == 0x30:
            self.fail(f"{what} must be a non-zero number without leading zeros", start)
        value = int(digits)
        if value > maximum:
            self.fail(f"{what} is too large", start)
        return value

    # -- strings (RFC 3501 §4.3, §9) ----------------------------------------------------

    def quoted(self) -> bytes:
        """quoted = DQUOTE *QUOTED-CHAR DQUOTE, with \\" and \\\\ escapes."""
        start = self.pos
        self.pos += 1  # the opening DQUOTE
        data = self.data
        parts: list[bytes] = []
        while True:
            found = _QUOTED_SPECIAL.search(data, self.pos)
            if found is None:
                self.fail("unterminated quoted string", start)
            parts.append(data[self.pos : found.start()])
            self.pos = found.start()
            byte = data[self.pos]
            if byte == 0x22:  # DQUOTE
                self.pos += 1
                return b"".join(parts)
            if byte == 0x5C:  # backslash: quoted-specials only
                escaped = data[self.pos + 1 : self.pos + 2]
                if escaped not in (b'"', b"\\"):
                    self.fail("invalid escape in quoted string")
                parts.append(escaped)
                self.pos += 2
                continue
            if byte == 0x00:
                self.fail("NUL in quoted string")
            if byte in (_CR, _LF) and not self.at_eol():
                self.fail("bare CR or LF in quoted string")
            self.fail("unterminated quoted string", start)

    def literal(self, *, binary_ok: bool = False) -> tuple[bytes, bool]:
        """literal / literal8: ``(content, is_literal8)``.

        The announcement ``{n}`` / ``{n+}`` (RFC 7888) / ``~{n}`` (RFC 3516) is followed by
        CRLF and then exactly n bytes, which the server has already placed inline.
        """
        start = self.pos
        binary = self.peek() == 0x7E  # "~"
        if binary:
            if not binary_ok:
                self.fail("literal8 is only allowed for APPEND data")
            self.pos += 1
        found = _LITERAL.match(self.data, self.pos)
        if found is None:
            self.fail("invalid literal", start)
        size = int(found.group(1))
        if size > _MAX_NUMBER:
            self.fail("literal is too large", start)
        begin = found.end()
        end = begin + size
        if end > len(self.data):
            self.fail(
                f"literal shorter than announced ({len(self.data) - begin} of {size} octets)",
                start,
            )
        content = self.data[begin:end]
        if not binary and b"\x00" in content:
            self.fail("NUL in literal (use literal8)", begin + content.index(b"\x00"))
        self.pos = end
        return content, binary

    def string(self, what: str) -> bytes:
        """string = quoted / literal."""
        byte = self.peek()
        if byte == 0x22:
            return self.quoted()
        if byte in (0x7B, 0x7E):
            return self.literal()[0]
        if self.at_eol():
            self.fail(f"missing {what}")
        self.fail(f"expected a quoted string or literal for {what}")

    def astring(self, what: str) -> bytes:
        """astring = 1*ASTRING-CHAR / string."""
        byte = self.peek()
        if byte == 0x22:
            return self.quoted()
        if byte == 0x7B or (byte == 0x7E and self.data.startswith(b"{", self.pos + 1)):
            return self.literal()[0]  # literal8 ("~{") fails there with a clear message
        return self.match(_ASTRING_ATOM, what)

    def text(self, what: str) -> str:
        """An astring decoded as UTF-8 (``surrogateescape``)."""
        return self.astring(what).decode("utf-8", "surrogateescape")

    def nil_or_text(self, what: str) -> str | None:
        """nstring, leniently an astring; the atom NIL is None."""
        if self.peek() not in (0x22, 0x7B):
            raw = self.match(_ASTRING_ATOM, what)
            if raw.upper() == b"NIL":
                return None
            return raw.decode("utf-8", "surrogateescape")
        return self.text(what)

    # -- mailbox names (RFC 3501 §5.1) ----------------------------------------------------

    def decode_mailbox(self, raw: bytes, start: int) -> str:
        if self.utf8:
            # RFC 6855 §3: after ENABLE UTF8=ACCEPT mailbox names are UTF-8.
            try:
                name = raw.decode("utf-8")
            except UnicodeDecodeError:
                self.fail("mailbox name is not valid UTF-8", start)
        else:
            # RFC 3501 §5.1.3: modified UTF-7.
            try:
                name = mutf7.decode(raw.decode("ascii"))
            except ValueError:  # UnicodeDecodeError is a ValueError
                self.fail("mailbox name is not valid modified UTF-7", start)
        # RFC 3501 §5.1: INBOX is case-insensitive.
        if len(name) == 5 and name.upper() == "INBOX":
            return "INBOX"
        return name

    def mailbox(self, what: str = "mailbox name") -> str:
        """mailbox = "INBOX" / astring."""
        start = self.pos
        return self.decode_mailbox(self.astring(what), start)

    def list_mailbox(self) -> str:
        """list-mailbox = 1*list-char / string (RFC 3501 §9)."""
        start = self.pos
        if self.peek() in (0x22, 0x7B):
            raw = self.string("mailbox pattern")
        else:
            raw = self.match(_LIST_CHARS, "mailbox pattern")
        return self.decode_mailbox(raw, start)

    # -- sequence sets (RFC 3501 §9, RFC 5182) -------------------------------------------

    def seq_number(self, allow_star: bool) -> int | None:
        if self.peek() == 0x2A:  # "*"
            if not allow_star:
                self.fail("'*' is not allowed here")
            self.pos += 1
            return None
        if self.at_eol():
            self.fail("missing sequence set")
        start = self.pos
        found = _DIGITS.match(self.data, self.pos)
        if found is None:
            self.fail("invalid sequence set")
        digits = found.group()
        if digits[0] == 0x30:
            self.fail("invalid sequence set: 0 is not a message number", start)
        if len(digits) > 10 or int(digits) > _MAX_NUMBER:
            self.fail("invalid sequence set: number too large", start)
        self.pos = found.end()
        return int(digits)

    def sequence_set(self, *, allow_star: bool = True, allow_last: bool = True) -> SequenceSet:
        """sequence-set, or ``$`` (RFC 5182 seq-last-command)."""
        if self.peek() == 0x24:  # "$"
            if not allow_last:
                self.fail("'$' is not allowed here")
            self.pos += 1
            return SequenceSet((), last_result=True)
        ranges: list[tuple[int | None, int | None]] = []
        while True:
            low = self.seq_number(allow_star)
            high = low
            if self.peek() == 0x3A:  # ":"
                self.pos += 1
                high = self.seq_number(allow_star)
            ranges.append((low, high))
            if self.peek() != 0x2C:  # ","
                break
            self.pos += 1
        if not (self.at_eol() or self.peek() in (_SP, 0x29)):
            self.fail("invalid sequence set")
        return SequenceSet(tuple(ranges))

    # -- flags (RFC 3501 §2.3.2) ---------------------------------------------------------

    def flag(self) -> str:
        """flag = "\\" atom / atom (system flags in their canonical case)."""
        if self.peek() == 0x5C:
            start = self.pos
            self.pos += 1
            name = "\\" + self.atom("flag").decode("ascii")
            if self.peek() == 0x5C:
                self.fail("invalid flag", start)
            return _SYSTEM_FLAGS.get(name.upper(), name)
        keyword = self.atom("flag").decode("ascii")
        if self.peek() == 0x5C:
            self.fail("invalid flag")
        return keyword

    def flag_list(self) -> tuple[str, ...]:
        """flag-list = "(" [flag *(SP flag)] ")"."""
        self.expect(b"(", "flag list")
        flags: list[str] = []
        if self.peek() != 0x29:
            flags.append(self.flag())
            while self.peek() == _SP:
                self.pos += 1
                flags.append(self.flag())
        self.expect(b")", "')' closing the flag list")
        return tuple(flags)

    def paren_keywords(self, what: str, *, allow_empty: bool) -> list[str]:
        """ "(" atom *(SP atom) ")" as upper-case strings."""
        self.expect(b"(", f"'(' opening {what}")
        words: list[str] = []
        if self.peek() == 0x29:
            if not allow_empty:
                self.fail(f"empty {what}")
        else:
            words.append(self.keyword(what))
            while self.peek() == _SP:
                self.pos += 1
                words.append(self.keyword(what))
        self.expect(b")", f"')' closing {what}")
        return words

    def status_items(self) -> tuple[StatusItem, ...]:
        """ "(" status-att *(SP status-att) ")" (RFC 3501, RFC 7162, RFC 8438, RFC 7889)."""
        start = self.pos
        items = self.paren_keywords("status items", allow_empty=False)
        for item in items:
            if item not in _STATUS_ITEMS:
                self.fail(f"unknown status item {_printable(item.encode())}", start)
        return cast(tuple[StatusItem, ...], tuple(items))

    # -- commands ---------------------------------------------------------------------------

    def parse(self) -> Command:
        found = _TAG.match(self.data, 0)
        if found is None:
            raise ParseError("missing or invalid tag", None, 0)
        self.tag = found.group().decode("ascii")
        self.pos = found.end()
        self.sp("command name")
        start = self.pos
        name = self.keyword("command name")
        handler = _COMMANDS.get(name)
        if handler is None:
            self.fail(f"unknown command {_printable(name.encode())}", start)
        command = handler(self, self.tag)
        self.finish()
        return command

    # any state

    def do_capability(self, tag: str) -> Command:
        return CapabilityCommand(tag)

    def do_noop(self, tag: str) -> Command:
        return NoopCommand(tag)

    def do_logout(self, tag: str) -> Command:
        return LogoutCommand(tag)

    def do_id(self, tag: str) -> Command:
        # RFC 2971 §4: id ::= "ID" SPACE id_params_list
        #   id_params_list ::= "(" #(string SPACE nstring) ")" / nil
        self.sp("ID parameters")
        if self.peek() != 0x28:
            start = self.pos
            if self.keyword("ID parameters") != "NIL":
                self.fail("ID parameters must be a list or NIL", start)
            return IdCommand(tag, None)
        self.pos += 1
        params: list[tuple[str, str | None]] = []
        if self.peek() != 0x29:
            while True:
                field_name = self.text("ID field")
                self.sp("ID value")
                params.append((field_name, self.nil_or_text("ID value")))
                if self.peek() != _SP:
                    break
                self.pos += 1
        self.expect(b")", "')' closing the ID parameters")
        return IdCommand(tag, tuple(params))

    # not authenticated

    def do_starttls(self, tag: str) -> Command:
        return StartTlsCommand(tag)

    def do_login(self, tag: str) -> Command:
        # login = "LOGIN" SP userid SP password
        self.secret = True
        self.sp("user name")
        username = self.text("user name")
        self.sp("password")
        password = self.text("password")
        return LoginCommand(tag, username, password)

    def do_authenticate(self, tag: str) -> Command:
        # authenticate = "AUTHENTICATE" SP auth-type [SP (base64 / "=")] (RFC 4959 §7)
        self.secret = True
        self.sp("authentication mechanism")
        mechanism = self.keyword("authentication mechanism")
        initial: str | None = None
        if self.peek() == _SP:
            self.pos += 1
            start = self.pos
            raw = self.atom("initial response")
            if raw != b"=" and not _BASE64.match(raw):
                self.fail("initial response is not base64", start)
            initial = raw.decode("ascii")
        return AuthenticateCommand(tag, mechanism, initial)

    # authenticated

    def select(self, tag: str, readonly: bool) -> Command:
        # select = "SELECT" SP mailbox [select-params] (RFC 4466 §2.1, RFC 7162 §3.1.8, §3.2.5)
        self.sp("mailbox name")
        mailbox = self.mailbox()
        condstore = False
        qresync: QResyncParams | None = None
        if self.peek() == _SP:
            self.pos += 1
            self.expect(b"(", "'(' opening the select parameters")
            while True:
                start = self.pos
                param = self.keyword("select parameter")
                if param == "CONDSTORE":
                    condstore = True
                elif param == "QRESYNC":
                    if qresync is not None:
                        self.fail("QRESYNC given twice", start)
                    self.sp("QRESYNC parameters")
                    qresync = self.qresync_params()
                else:
                    self.fail(f"unknown select parameter {_printable(param.encode())}", start)
                if self.peek() != _SP:
                    break
                self.pos += 1
            self.expect(b")", "')' closing the select parameters")
        return SelectCommand(tag, mailbox, readonly, condstore, qresync)

    def qresync_params(self) -> QResyncParams:
        # "(" uidvalidity SP mod-sequence-value [SP known-uids] [SP seq-match-data] ")"
        self.expect(b"(", "'(' opening the QRESYNC parameters")
        uidvalidity = self.number("UIDVALIDITY", nonzero=True)
        self.sp("mod-sequence")
        modseq = self.number("mod-sequence", maximum=_MAX_MODSEQ)
        known_uids: SequenceSet | None = None
        seq_match: tuple[SequenceSet, SequenceSet] | None = None
        if self.peek() == _SP:
            self.pos += 1
            if self.peek() != 0x28:
                # known-uids: "*" is not allowed (RFC 7162 §7)
                known_uids = self.sequence_set(allow_star=False, allow_last=False)
                if self.peek() == _SP:
                    self.pos += 1
                    seq_match = self.seq_match_data()
            else:
                seq_match = self.seq_match_data()
        self.expect(b")", "')' closing the QRESYNC parameters")
        return QResyncParams(uidvalidity, modseq, known_uids, seq_match)

    def seq_match_data(self) -> tuple[SequenceSet, SequenceSet]:
        # seq-match-data = "(" known-sequence-set SP known-uid-set ")"
        self.expect(b"(", "'(' opening the sequence match data")
        known_seqs = self.sequence_set(allow_star=False, allow_last=False)
        self.sp("known UID set")
        known_uid_set = self.sequence_set(allow_star=False, allow_last=False)
        self.expect(b")", "')' closing the sequence match data")
        return known_seqs, known_uid_set

    def do_select(self, tag: str) -> Command:
        return self.select(tag, readonly=False)

    def do_examine(self, tag: str) -> Command:
        return self.select(tag, readonly=True)

    def do_create(self, tag: str) -> Command:
        # create = "CREATE" SP mailbox [create-params] (RFC 4466 §2.2, RFC 6154 §3)
        self.sp("mailbox name")
        mailbox = self.mailbox()
        special_use: list[str] = []
        if self.peek() == _SP:
            self.pos += 1
            self.expect(b"(", "'(' opening the create parameters")
            while True:
                start = self.pos
                param = self.keyword("create parameter")
                if param != "USE":
                    self.fail(f"unknown create parameter {_printable(param.encode())}", start)
                self.sp("USE attributes")
                self.expect(b"(", "'(' opening the USE attributes")
                if self.peek() != 0x29:
                    while True:
                        attr_start = self.pos
                        self.expect(b"\\", "special-use attribute")
                        attr = "\\" + self.atom("special-use attribute").decode("ascii")
                        if self.peek() == 0x5C:
                            self.fail("invalid special-use attribute", attr_start)
                        special_use.append(_USE_ATTRS.get(attr.upper(), attr))
                        if self.peek() != _SP:
                            break
                        self.pos += 1
                self.expect(b")", "')' closing the USE attributes")
                if self.peek() != _SP:
                    break
                self.pos += 1
            self.expect(b")", "')' closing the create parameters")
        return CreateCommand(tag, mailbox, tuple(special_use))

    def do_delete(self, tag: str) -> Command:
        self.sp("mailbox name")
        return DeleteCommand(tag, self.mailbox())

    def do_rename(self, tag: str) -> Command:
        self.sp("mailbox name")
        old = self.mailbox()
        self.sp("new mailbox name")
        return RenameCommand(tag, old, self.mailbox("new mailbox name"))

    def do_subscribe(self, tag: str) -> Command:
        self.sp("mailbox name")
        return SubscribeCommand(tag, self.mailbox())

    def do_unsubscribe(self, tag: str) -> Command:
        self.sp("mailbox name")
        return UnsubscribeCommand(tag, self.mailbox())

    def do_list(self, tag: str) -> Command:
        # list = "LIST" [SP list-select-opts] SP mailbox SP mbox-or-pat [SP list-return-opts]
        # (RFC 5258 §6; RFC 3501 §9 for the basic form)
        self.sp("reference name")
        extended = False
        select_options: list[str] = []
        if self.peek() == 0x28:
            extended = True
            start = self.pos
            select_options = self.paren_keywords("selection options", allow_empty=True)
            for option in select_options:
                if option not in _LIST_SELECT:
                    self.fail(f"unknown selection option {_printable(option.encode())}", start)
            # RFC 5258 §3.1: RECURSIVEMATCH needs another selection option.
            if "RECURSIVEMATCH" in select_options and not (
                set(select_options) - {"RECURSIVEMATCH", "REMOTE"}
            ):
                self.fail("RECURSIVEMATCH needs another selection option", start)
            self.sp("reference name")
        reference = self.mailbox("reference name")
        self.sp("mailbox pattern")
        patterns: list[str] = []
        if self.peek() == 0x28:
            extended = True
            self.pos += 1
            patterns.append(self.list_mailbox())
            while self.peek() == _SP:
                self.pos += 1
                patterns.append(self.list_mailbox())
            self.expect(b")", "')' closing the mailbox patterns")
        else:
            patterns.append(self.list_mailbox())
        return_options: list[str] = []
        return_status: tuple[StatusItem, ...] = ()
        if self.peek() == _SP:
            self.pos += 1
            if not self.skip_keyword("RETURN"):
                self.fail("expected RETURN")
            extended = True
            self.sp("return options")
            # list-return-opts = "RETURN" SP "(" [return-option *(SP return-option)] ")"
            self.expect(b"(", "'(' opening the return options")
            if self.peek() != 0x29:
                while True:
                    start = self.pos
                    option = self.keyword("return option")
                    if option == "STATUS":
                        # RFC 5819 §2: STATUS (status-att ...)
                        self.sp("status items")
                        return_status = self.status_items()
                    elif option in _LIST_RETURN:
                        return_options.append(option)
                    else:
                        self.fail(f"unknown return option {_printable(option.encode())}", start)
                    if self.peek() != _SP:
                        break
                    self.pos += 1
            self.expect(b")", "')' closing the return options")
        return ListCommand(
            tag,
            reference,
            tuple(patterns),
            tuple(select_options),
            tuple(return_options),
            return_status,
            extended,
        )

    def do_lsub(self, tag: str) -> Command:
        # lsub = "LSUB" SP mailbox SP list-mailbox
        self.sp("reference name")
        reference = self.mailbox("reference name")
        self.sp("mailbox pattern")
        return LsubCommand(tag, reference, self.list_mailbox())

    def do_status(self, tag: str) -> Command:
        # status = "STATUS" SP mailbox SP "(" status-att *(SP status-att) ")"
        self.sp("mailbox name")
        mailbox = self.mailbox()
        self.sp("status items")
        return StatusCommand(tag, mailbox, self.status_items())

    def do_append(self, tag: str) -> Command:
        # append = "APPEND" SP mailbox 1*append-message (RFC 3502 §6.3.11, RFC 4466 §2.3)
        # append-message = append-opts SP append-data
        # append-opts = [SP flag-list] [SP date-time]; append-data = literal / literal8
        # (RFC 3516 §4.4) / "UTF8" SP "(" literal8 ")" (RFC 6855 §4, once UTF8=ACCEPT)
        self.sp("mailbox name")
        mailbox = self.mailbox()
        messages: list[AppendMessage] = []
        while True:
            self.sp("message literal")
            flags: tuple[str, ...] = ()
            date: datetime.datetime | None = None
            if self.peek() == 0x28:
                flags = self.flag_list()
                self.sp("message literal")
            if self.peek() == 0x22:
                date = self.date_time()
                self.sp("message literal")
            if self.utf8 and self.skip_keyword("UTF8"):
                # append-data =/ "UTF8" SP "(" literal8 ")" (RFC 6855 §4)
                self.sp("message literal")
                self.expect(b"(", "'(' before the UTF8 message literal")
                if self.peek() != 0x7E:
                    self.fail("UTF8 message data must be a literal8")
                data, binary = self.literal(binary_ok=True)
                self.expect(b")", "')' after the UTF8 message literal")
            elif self.peek() in (0x7B, 0x7E):
                data, binary = self.literal(binary_ok=True)
            else:
                self.fail("expected a message literal")
            messages.append(AppendMessage(data, flags, date, binary))
            if self.at_eol():
                return AppendCommand(tag, mailbox, tuple(messages))

    def date_time(self) -> datetime.datetime:
        """date-time = DQUOTE date-day-fixed "-" date-month "-" date-year SP time SP zone
        DQUOTE (RFC 3501 §9)."""
        start = self.pos
        found = _DATE_TIME.match(self.data, self.pos)
        if found is None:
            self.fail("invalid date-time")
        day, month_name, year, hour, minute, second, sign, zone_h, zone_m = found.groups()
        month = _MONTHS.get(month_name.upper())
        zone_minutes = int(zone_h) * 60 + int(zone_m)
        if month is None or int(zone_m) >= 60 or zone_minutes >= 24 * 60:
            self.fail("invalid date-time", start)
        offset = datetime.timedelta(minutes=-zone_minutes if sign == b"-" else zone_minutes)
        try:
            value = datetime.datetime(
                int(year),
                month,
                int(day),
                int(hour),
                int(minute),
                min(int(second), 59),  # a leap second (:60) is clamped
                tzinfo=datetime.timezone(offset),
            )
        except ValueError:
            self.fail("invalid date-time", start)
        self.pos = found.end()
        return value

    def do_namespace(self, tag: str) -> Command:
        return NamespaceCommand(tag)

    def do_enable(self, tag: str) -> Command:
        # enable = "ENABLE" 1*(SP capability) (RFC 5161 §4)
        self.sp("capability")
        capabilities = [self.keyword("capability")]
        while self.peek() == _SP:
            self.pos += 1
            capabilities.append(self.keyword("capability"))
        return EnableCommand(tag, tuple(capabilities))

    def do_idle(self, tag: str) -> Command:
        return IdleCommand(tag)

    def do_getquota(self, tag: str) -> Command:
        # getquota = "GETQUOTA" SP quota-root-name (RFC 9208 §6.1.1)
        self.sp("quota root")
        return GetQuotaCommand(tag, self.text("quota root"))

    def do_getquotaroot(self, tag: str) -> Command:
        # getquotaroot = "GETQUOTAROOT" SP mailbox (RFC 9208 §6.1.2)
        self.sp("mailbox name")
        return GetQuotaRootCommand(tag, self.mailbox())

    # selected

    def do_unselect(self, tag: str) -> Command:
        return UnselectCommand(tag)

    def do_check(self, tag: str) -> Command:
        return CheckCommand(tag)

    def do_close(self, tag: str) -> Command:
        return CloseCommand(tag)

    def do_expunge(self, tag: str) -> Command:
        return ExpungeCommand(tag)

    def do_uid(self, tag: str) -> Command:
        # uid = "UID" SP (copy / move / fetch / search / store / uid-expunge / sort / thread)
        self.sp("UID command")
        start = self.pos
        name = self.keyword("UID command")
        if name == "FETCH":
            return self.fetch(tag, uid=True)
        if name == "STORE":
            return self.store(tag, uid=True)
        if name == "COPY":
            return self.copy(tag, uid=True)
        if name == "MOVE":
            return self.move(tag, uid=True)
        if name == "SEARCH":
            return self.search(tag, uid=True)
        if name == "SORT":
            return self.sort(tag, uid=True)
        if name == "THREAD":
            return self.thread(tag, uid=True)
        if name == "EXPUNGE":
            # uid-expunge = "UID" SP "EXPUNGE" SP sequence-set (RFC 4315 §4)
            self.sp("UID set")
            return ExpungeCommand(tag, self.sequence_set())
        self.fail(f"unknown command UID {_printable(name.encode())}", start)

    def copy(self, tag: str, uid: bool) -> Command:
        # copy = "COPY" SP sequence-set SP mailbox
        self.sp("sequence set")
        sequence = self.sequence_set()
        self.sp("mailbox name")
        return CopyCommand(tag, sequence, self.mailbox(), uid)

    def move(self, tag: str, uid: bool) -> Command:
        # move = "MOVE" SP sequence-set SP mailbox (RFC 6851 §4)
        self.sp("sequence set")
        sequence = self.sequence_set()
        self.sp("mailbox name")
        return MoveCommand(tag, sequence, self.mailbox(), uid)

    def do_copy(self, tag: str) -> Command:
        return self.copy(tag, uid=False)

    def do_move(self, tag: str) -> Command:
        return self.move(tag, uid=False)

    # FETCH (RFC 3501 §6.4.5, RFC 3516, RFC 7162)

    def do_fetch(self, tag: str) -> Command:
        return self.fetch(tag, uid=False)

    def fetch(self, tag: str, uid: bool) -> Command:
        # fetch = "FETCH" SP sequence-set SP ("ALL" / "FULL" / "FAST" / fetch-att /
        #         "(" fetch-att *(SP fetch-att) ")") [fetch-modifiers]
        self.sp("sequence set")
        sequence = self.sequence_set()
        self.sp("fetch items")
        attrs: tuple[FetchAttr, ...]
        if self.peek() == 0x28:
            self.pos += 1
            items = [self.fetch_att()]
            while self.peek() == _SP:
                self.pos += 1
                items.append(self.fetch_att())
            self.expect(b")", "')' closing the fetch items")
            attrs = tuple(items)
        else:
            macro = _FETCH_MACROS.get(self.peek_keyword() or "")
            if macro is not None:
                self.atom("fetch macro")
                attrs = macro
            else:
                attrs = (self.fetch_att(),)
        changed_since: int | None = None
        vanished = False
        if self.peek() == _SP:
            # fetch-modifiers = SP "(" fetch-modifier *(SP fetch-modifier) ")" (RFC 4466)
            self.pos += 1
            self.expect(b"(", "'(' opening the fetch modifiers")
            while True:
                start = self.pos
                modifier = self.keyword("fetch modifier")
                if modifier == "CHANGEDSINCE":
                    # chgsince-fetch-mod = "CHANGEDSINCE" SP mod-sequence-value (RFC 7162 §7)
                    self.sp("mod-sequence")
                    changed_since = self.number("mod-sequence", maximum=_MAX_MODSEQ)
                elif modifier == "VANISHED":
                    # rexpunges-fetch-mod = "VANISHED" (RFC 7162 §3.2.6): UID FETCH only
                    if not uid:
                        self.fail("VANISHED is only allowed with UID FETCH", start)
                    vanished = True
                else:
                    self.fail(f"unknown fetch modifier {_printable(modifier.encode())}", start)
                if self.peek() != _SP:
                    break
                self.pos += 1
            self.expect(b")", "')' closing the fetch modifiers")
            if vanished and changed_since is None:
                self.fail("VANISHED requires CHANGEDSINCE")
        return FetchCommand(tag, sequence, attrs, uid, changed_since, vanished)

    def fetch_att(self) -> FetchAttr:
        start = self.pos
        name = self.match(_FETCH_NAME, "fetch item").decode("ascii").upper()
        simple = _FETCH_SIMPLE.get(name)
        if simple is not None:
            return simple
        if name == "BODY" and self.peek() != 0x5B:
            return FetchAttr("BODY")
        if name in ("BODY", "BODY.PEEK"):
            section = self.section()
            return FetchAttr("BODY[]", section, self.partial(), name == "BODY.PEEK")
        if name in ("BINARY", "BINARY.PEEK", "BINARY.SIZE"):
            # section-binary = "[" [section-part] "]" (RFC 3516 §6)
            section = self.section(binary=True)
            if name == "BINARY.SIZE":
                return FetchAttr("BINARY.SIZE[]", section)
            return FetchAttr("BINARY[]", section, self.partial(), name == "BINARY.PEEK")
        if name in _FETCH_MACROS:
            self.fail(f"{name} must be used alone, not in a list", start)
        self.fail(f"unknown fetch item {_printable(name.encode())}", start)

    def section(self, binary: bool = False) -> Section:
        # section = "[" [section-spec] "]"
        # section-spec = section-msgtext / (section-part ["." section-text])
        self.expect(b"[", "'[' opening the section")
        part: list[int] = []
        text: _SectionText | None = None
        fields: tuple[str, ...] = ()
        if self.peek() != 0x5D:
            if 0x30 <= self.peek() <= 0x39:
                # section-part = nz-number *("." nz-number)
                part.append(self.number("section part", nonzero=True))
                while self.peek() == 0x2E:  # "."
                    self.pos += 1
                    if not 0x30 <= self.peek() <= 0x39:
                        text, fields = self.section_text(binary, after_part=True)
                        break
                    part.append(self.number("section part", nonzero=True))
            else:
                text, fields = self.section_text(binary, after_part=False)
        self.expect(b"]", "']' closing the section")
        return Section(tuple(part), text, fields)

    def section_text(self, binary: bool, after_part: bool) -> tuple[_SectionText, tuple[str, ...]]:
        # section-msgtext = "HEADER" / "HEADER.FIELDS" [".NOT"] SP header-list / "TEXT"
        # section-text = section-msgtext / "MIME"
        start = self.pos
        if binary:
            self.fail("BINARY sections take part numbers only")
        name = self.match(_SECTION_TEXT, "section").decode("ascii").upper()
        text = _SECTION_TEXTS.get(name)
        if text is None or (text == "MIME" and not after_part):
            self.fail(f"invalid section {_printable(name.encode())}", start)
        if text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
            # header-list = "(" header-fld-name *(SP header-fld-name) ")"
            self.sp("header list")
            self.expect(b"(", "'(' opening the header list")
            fields = [self.text("header field name")]
            while self.peek() == _SP:
                self.pos += 1
                fields.append(self.text("header field name"))
            self.expect(b")", "')' closing the header list")
            return text, tuple(fields)
        return text, ()

    def partial(self) -> tuple[int, int] | None:
        # "<" number "." nz-number ">"
        if self.peek() != 0x3C:
            return None
        self.pos += 1
        offset = self.number("partial offset")
        self.expect(b".", "'.' in the partial range")
        length = self.number("partial length", nonzero=True)
        self.expect(b">", "'>' closing the partial range")
        return offset, length

    # STORE (RFC 3501 §6.4.6, RFC 7162 §3.1.3)

    def do_store(self, tag: str) -> Command:
        return self.store(tag, uid=False)

    def store(self, tag: str, uid: bool) -> Command:
        # store = "STORE" SP sequence-set [store-modifiers] SP store-att-flags
        self.sp("sequence set")
        sequence = self.sequence_set()
        self.sp("store item")
        unchanged_since: int | None = None
        if self.peek() == 0x28:
            # store-modifiers = SP "(" store-modifier *(SP store-modifier) ")" (RFC 4466)
            self.pos += 1
            while True:
                start = self.pos
                modifier = self.keyword("store modifier")
                if modifier != "UNCHANGEDSINCE":
                    self.fail(f"unknown store modifier {_printable(modifier.encode())}", start)
                # "UNCHANGEDSINCE" SP mod-sequence-valzer (RFC 7162 §7)
                self.sp("mod-sequence")
                unchanged_since = self.number("mod-sequence", maximum=_MAX_MODSEQ)
                if self.peek() != _SP:
                    break
                self.pos += 1
            self.expect(b")", "')' closing the store modifiers")
            self.sp("store item")
        # store-att-flags = (["+" / "-"] "FLAGS" [".SILENT"]) SP (flag-list / (flag *(SP flag)))
        start = self.pos
        item = self.keyword("store item")
        silent = item.endswith(".SILENT")
        if silent:
            item = item[: -len(".SILENT")]
        op = _STORE_OPS.get(item)
        if op is None:
            self.fail(f"unknown store item {_printable(item.encode())}", start)
        self.sp("flags")
        if self.peek() == 0x28:
            flags = self.flag_list()
        else:
            flag_items = [self.flag()]
            while self.peek() == _SP:
                self.pos += 1
                flag_items.append(self.flag())
            flags = tuple(flag_items)
        return StoreCommand(tag, sequence, op, silent, flags, uid, unchanged_since)

    # SEARCH (RFC 3501 §6.4.4, RFC 4731, RFC 5182, RFC 7162)

    def do_search(self, tag: str) -> Command:
        return self.search(tag, uid=False)

    def search_returns(self) -> tuple[SearchReturn, ...]:
        # search-return-opts = SP "RETURN" SP "(" [search-return-opt *(SP ...)] ")"
        self.sp("return options")
        start = self.pos
        options = self.paren_keywords("return options", allow_empty=True)
        for option in options:
            if option not in _SEARCH_RETURNS:
                self.fail(f"unknown return option {_printable(option.encode())}", start)
        if not options:
            return ("ALL",)  # RFC 4731 §3.1: "RETURN ()" is "RETURN (ALL)"
        return cast(tuple[SearchReturn, ...], tuple(options))

    def charset(self) -> str:
        start = self.pos
        charset = self.astring("charset").decode("ascii", "replace").upper()
        if charset not in _CHARSETS:
            raise BadCharset(f"{_BADCHARSET} unsupported charset", self.tag, start)
        return charset

    def search(self, tag: str, uid: bool) -> Command:
        # search = "SEARCH" [search-return-opts] [SP "CHARSET" SP astring] 1*(SP search-key)
        returns: tuple[SearchReturn, ...] | None = None
        charset: str | None = None
        self.sp("search criteria")
        if self.skip_keyword("RETURN"):
            returns = self.search_returns()
            self.sp("search criteria")
        if self.skip_keyword("CHARSET"):
            self.sp("charset")
            charset = self.charset()
            self.sp("search criteria")
        return SearchCommand(tag, self.search_criteria(), uid, charset, returns)

    def search_criteria(self) -> SearchKey:
        """1*(SP search-key) up to the line end; the leading SP is already consumed."""
        keys = [self.search_key(0)]
        while self.peek() == _SP:
            self.pos += 1
            keys.append(self.search_key(0))
        return keys[0] if len(keys) == 1 else SearchAnd(tuple(keys))

    def search_key(self, depth: int) -> SearchKey:
        if depth > _MAX_DEPTH:
            self.fail("search criteria nested too deeply")
        byte = self.peek()
        if byte == 0x28:
            # "(" search-key *(SP search-key) ")"
            self.pos += 1
            keys = [self.search_key(depth + 1)]
            while self.peek() == _SP:
                self.pos += 1
                keys.append(self.search_key(depth + 1))
            self.expect(b")", "')' closing the search criteria")
            return keys[0] if len(keys) == 1 else SearchAnd(tuple(keys))
        if byte in (0x2A, 0x24) or 0x30 <= byte <= 0x39:  # "*", "$", DIGIT: sequence-set
            return SearchSet(self.sequence_set())
        start = self.pos
        name = self.keyword("search key")
        simple = _SEARCH_FLAG_KEYS.get(name)
        if simple is not None:
            return simple
        header = _SEARCH_HEADER_KEYS.get(name)
        if header is not None:
            self.sp(f"{name} value")
            return SearchHeader(header, self.text(f"{name} value"))
        date_key = _SEARCH_DATE_KEYS.get(name)
        if date_key is not None:
            self.sp("date")
            op, sent = date_key
            return SearchDate(op, self.search_date(), sent)
        if name in ("BODY", "TEXT"):
            self.sp(f"{name} value")
            value = self.text(f"{name} value")
            return SearchText("body", value) if name == "BODY" else SearchText("text", value)
        if name in ("KEYWORD", "UNKEYWORD"):
            self.sp("keyword")
            keyword_start = self.pos
            keyword = self.atom("keyword").decode("ascii")
            if self.peek() == 0x5C:
                self.fail("invalid keyword", keyword_start)
            return SearchFlag(keyword, name == "KEYWORD")
        if name in ("LARGER", "SMALLER"):
            self.sp("size")
            return SearchSize(name == "LARGER", self.number("size", maximum=_MAX_NUMBER64))
        if name == "HEADER":
            self.sp("header field name")
            field_name = self.text("header field name")
            self.sp("header value")
            return SearchHeader(field_name, self.text("header value"))
        if name == "NOT":
            self.sp("search key")
            return SearchNot(self.search_key(depth + 1))
        if name == "OR":
            self.sp("search key")
            left = self.search_key(depth + 1)
            self.sp("second search key of OR")
            return SearchOr(left, self.search_key(depth + 1))
        if name == "UID":
            self.sp("UID set")
            return SearchSet(self.sequence_set(), uid=True)
        if name == "MODSEQ":
            # search-modsequence = "MODSEQ" [search-modseq-ext] SP mod-sequence-valzer
            # search-modseq-ext = SP entry-name SP entry-type-req (RFC 7162 §7)
            self.sp("mod-sequence")
            if self.peek() in (0x22, 0x7B):
                self.string("entry name")
                self.sp("entry type")
                type_start = self.pos
                if self.keyword("entry type") not in ("PRIV", "SHARED", "ALL"):
                    self.fail("invalid entry type", type_start)
                self.sp("mod-sequence")
            return SearchModSeq(self.number("mod-sequence", maximum=_MAX_MODSEQ))
        self.fail(f"unknown search key {_printable(name.encode())}", start)

    def search_date(self) -> datetime.date:
        # date = date-text / DQUOTE date-text DQUOTE
        start = self.pos
        quoted = self.peek() == 0x22
        if quoted:
            self.pos += 1
        found = _DATE.match(self.data, self.pos)
        if found is None:
            self.fail("invalid date", start)
        day, month_name, year = found.groups()
        month = _MONTHS.get(month_name.upper())
        if month is None:
            self.fail("invalid date", start)
        try:
            value = datetime.date(int(year), month, int(day))
        except ValueError:
            self.fail("invalid date", start)
        self.pos = found.end()
        if quoted:
            self.expect(b'"', "'\"' closing the date")
        return value

    # SORT / THREAD (RFC 5256, RFC 5267)

    def do_sort(self, tag: str) -> Command:
        return self.sort(tag, uid=False)

    def sort(self, tag: str, uid: bool) -> Command:
        # sort = ["UID" SP] "SORT" [search-return-opts] SP sort-criteria SP search-criteria
        self.sp("sort criteria")
        returns: tuple[SearchReturn, ...] | None = None
        if self.skip_keyword("RETURN"):
            returns = self.search_returns()
            self.sp("sort criteria")
        # sort-criteria = "(" sort-criterion *(SP sort-criterion) ")"
        # sort-criterion = ["REVERSE" SP] sort-key
        self.expect(b"(", "'(' opening the sort criteria")
        keys: list[SortKey] = []
        while True:
            reverse = self.skip_keyword("REVERSE")
            if reverse:
                self.sp("sort key")
            start = self.pos
            name = self.keyword("sort key")
            key = _SORT_KEYS.get(name)
            if key is None:
                self.fail(f"unknown sort key {_printable(name.encode())}", start)
            keys.append(SortKey(key, reverse))
            if self.peek() != _SP:
                break
            self.pos += 1
        self.expect(b")", "')' closing the sort criteria")
        self.sp("charset")
        charset = self.charset()
        self.sp("search criteria")
        return SortCommand(tag, tuple(keys), charset, self.search_criteria(), uid, returns)

    def do_thread(self, tag: str) -> Command:
        return self.thread(tag, uid=False)

    def thread(self, tag: str, uid: bool) -> Command:
        # thread = ["UID" SP] "THREAD" SP thread-alg SP search-criteria
        self.sp("threading algorithm")
        start = self.pos
        name = self.keyword("threading algorithm")
        algorithm = _THREAD_ALGORITHMS.get(name)
        if algorithm is None:
            self.fail(f"unknown threading algorithm {_printable(name.encode())}", start)
        self.sp("charset")
        charset = self.charset()
        self.sp("search criteria")
        return ThreadCommand(tag, algorithm, charset, self.search_criteria(), uid)


_Handler = Callable[[_Parser, str], Command]

# RFC 3501 §9 command = tag SP (command-any / command-auth / command-nonauth / command-select)
_COMMANDS: Final[dict[str, _Handler]] = {
    "CAPABILITY": _Parser.do_capability,
    "NOOP": _Parser.do_noop,
    "LOGOUT": _Parser.do_logout,
    "ID": _Parser.do_id,
    "STARTTLS": _Parser.do_starttls,
    "LOGIN": _Parser.do_login,
    "AUTHENTICATE": _Parser.do_authenticate,
    "SELECT": _Parser.do_select,
    "EXAMINE": _Parser.do_examine,
    "CREATE": _Parser.do_create,
    "DELETE": _Parser.do_delete,
    "RENAME": _Parser.do_rename,
    "SUBSCRIBE": _Parser.do_subscribe,
    "UNSUBSCRIBE": _Parser.do_unsubscribe,
    "LIST": _Parser.do_list,
    "LSUB": _Parser.do_lsub,
    "STATUS": _Parser.do_status,
    "APPEND": _Parser.do_append,
    "NAMESPACE": _Parser.do_namespace,
    "ENABLE": _Parser.do_enable,
    "IDLE": _Parser.do_idle,
    "GETQUOTA": _Parser.do_getquota,
    "GETQUOTAROOT": _Parser.do_getquotaroot,
    "UNSELECT": _Parser.do_unselect,
    "CHECK": _Parser.do_check,
    "CLOSE": _Parser.do_close,
    "EXPUNGE": _Parser.do_expunge,
    "UID": _Parser.do_uid,
    "COPY": _Parser.do_copy,
    "MOVE": _Parser.do_move,
    "FETCH": _Parser.do_fetch,
    "STORE": _Parser.do_store,
    "SEARCH": _Parser.do_search,
    "SORT": _Parser.do_sort,
    "THREAD": _Parser.do_thread,
}


def parse_command(data: bytes, *, utf8: bool = False) -> Command:
    """Parse one complete command: its line(s) with every literal inline, ending in CRLF.

    ``utf8`` is True once the client has enabled UTF8=ACCEPT (RFC 6855): mailbox names are
    then UTF-8 instead of modified UTF-7. Raises ``ParseError`` (``BadCharset`` for an
    unsupported SEARCH/SORT/THREAD charset) and nothing else.
    """
    return _Parser(data, utf8).parse()


def literal_at_end(line: bytes) -> tuple[int, bool, bool] | None:
    """``(size, non_synchronizing, literal8)`` if ``line`` (without CRLF) ends in a literal.

    Recognizes ``{n}``, ``{n+}`` (RFC 7888), ``~{n}`` and ``~{n+}`` (RFC 3516) after a space
    or ``(``; returns None otherwise, also for a size too long to be a number (the command
    then fails to parse with a ``BAD``).
    """
    if not line.endswith(b"}"):
        return None
    found = _LITERAL_AT_END.search(line, max(0, len(line) - 24))
    if found is None:
        return None
    binary, digits, plus = found.groups()
    return int(digits), plus == b"+", binary == b"~"


def command_name(data: bytes) -> tuple[str | None, str | None]:
    """``(tag, COMMAND)`` read best-effort from the start of ``data``, without parsing.

    The name is upper case and includes the UID prefix (``"UID FETCH"``); either is None
    when unreadable. For logging, and for checks before a literal is read (APPEND size).
    """
    tag_match = _TAG.match(data, 0)
    if tag_match is None:
        return None, None
    tag = tag_match.group().decode("ascii")
    pos = tag_match.end()
    if data[pos : pos + 1] != b" ":
        return tag, None
    name_match = _ATOM.match(data, pos + 1)
    if name_match is None:
        return tag, None
    name = name_match.group().decode("ascii").upper()[:32]
    if name == "UID" and data[name_match.end() : name_match.end() + 1] == b" ":
        sub = _ATOM.match(data, name_match.end() + 1)
        if sub is not None:
            name = f"UID {sub.group().decode('ascii').upper()[:32]}"
    return tag, name
