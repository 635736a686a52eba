"""IMAP commands as typed values, one frozen dataclass per command (RFC 3501 §6 + extensions).

Each class names its command (``name``) and the session states that allow it (``states``),
so ``state.py`` dispatches from one table instead of scattered checks. The parser
(``parse.py``) turns one complete command (its line plus any literals inline, exactly as
read from the wire) into one of these values or raises ``ParseError``.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from rmail.imap.parser.types import FetchAttr, SearchKey, SequenceSet, SortKey

__all__ = [
    "AppendCommand",
    "AppendMessage",
    "AuthenticateCommand",
    "CapabilityCommand",
    "CheckCommand",
    "CloseCommand",
    "Command",
    "CopyCommand",
    "CreateCommand",
    "DeleteCommand",
    "EnableCommand",
    "ExpungeCommand",
    "FetchCommand",
    "GetQuotaCommand",
    "GetQuotaRootCommand",
    "IdCommand",
    "IdleCommand",
    "ListCommand",
    "LoginCommand",
    "LogoutCommand",
    "LsubCommand",
    "MoveCommand",
    "NamespaceCommand",
    "NoopCommand",
    "QResyncParams",
    "RenameCommand",
    "SearchCommand",
    "SelectCommand",
    "SortCommand",
    "StartTlsCommand",
    "State",
    "StatusCommand",
    "StoreCommand",
    "SubscribeCommand",
    "ThreadCommand",
    "UnselectCommand",
    "UnsubscribeCommand",
]

State = Literal["not_authenticated", "authenticated", "selected"]
_ANY: tuple[State, ...] = ("not_authenticated", "authenticated", "selected")
_AUTH: tuple[State, ...] = ("authenticated", "selected")
_SELECTED: tuple[State, ...] = ("selected",)
_NOT_AUTH: tuple[State, ...] = ("not_authenticated",)

# ESEARCH RETURN options (RFC 4731) and SAVE (RFC 5182).
SearchReturn = Literal["MIN", "MAX", "ALL", "COUNT", "SAVE"]
StatusItem = Literal[
    "MESSAGES",
    "RECENT",
    "UIDNEXT",
    "UIDVALIDITY",
    "UNSEEN",
    "HIGHESTMODSEQ",
    "SIZE",
    "APPENDLIMIT",
]


@dataclass(frozen=True, slots=True)
class Command:
    """Base: every command has its tag."""

    tag: str
    name: ClassVar[str] = ""
    states: ClassVar[tuple[State, ...]] = _ANY


# -- any state -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CapabilityCommand(Command):
    name: ClassVar[str] = "CAPABILITY"


@dataclass(frozen=True, slots=True)
class NoopCommand(Command):
    name: ClassVar[str] = "NOOP"


@dataclass(frozen=True, slots=True)
class LogoutCommand(Command):
    name: ClassVar[str] = "LOGOUT"


@dataclass(frozen=True, slots=True)
class IdCommand(Command):
    """RFC 2971: ``params`` None for NIL."""

    name: ClassVar[str] = "ID"
    params: tuple[tuple[str, str | None], ...] | None = None


# -- not authenticated ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartTlsCommand(Command):
    name: ClassVar[str] = "STARTTLS"
    states: ClassVar[tuple[State, ...]] = _NOT_AUTH


@dataclass(frozen=True, slots=True)
class LoginCommand(Command):
    name: ClassVar[str] = "LOGIN"
    states: ClassVar[tuple[State, ...]] = _NOT_AUTH
    username: str = ""
    password: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class AuthenticateCommand(Command):
    """``initial_response`` is the SASL-IR (RFC 4959) base64 text, ``=`` for empty."""

    name: ClassVar[str] = "AUTHENTICATE"
    states: ClassVar[tuple[State, ...]] = _NOT_AUTH
    mechanism: str = ""
    initial_response: str | None = field(default=None, repr=False)


# -- authenticated ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QResyncParams:
    """SELECT (QRESYNC (uidvalidity modseq [known-uids [(seq-match uid-match)]]))."""

    uidvalidity: int
    modseq: int
    known_uids: SequenceSet | None = None
    seq_match: tuple[SequenceSet, SequenceSet] | None = None


@dataclass(frozen=True, slots=True)
class SelectCommand(Command):
    """SELECT, or EXAMINE when ``readonly``; CONDSTORE/QRESYNC parameters of RFC 7162."""

    name: ClassVar[str] = "SELECT"
    states: ClassVar[tuple[State, ...]] = _AUTH
    mailbox: str = ""
    readonly: bool = False
    condstore: bool = False
    qresync: QResyncParams | None = None


@dataclass(frozen=True, slots=True)
class CreateCommand(Command):
    """CREATE, with RFC 6154 ``(USE (\\Sent))`` attributes."""

    name: ClassVar[str] = "CREATE"
    states: ClassVar[tuple[State, ...]] = _AUTH
    mailbox: str = ""
    special_use: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DeleteCommand(Command):
    name: ClassVar[str] = "DELETE"
    states: ClassVar[tuple[State, ...]] = _AUTH
    mailbox: str = ""


@dataclass(frozen=True, slots=True)
class RenameCommand(Command):
    name: ClassVar[str] = "RENAME"
    states: ClassVar[tuple[State, ...]] = _AUTH
    old: str = ""
    new: str = ""


@dataclass(frozen=True, slots=True)
class SubscribeCommand(Command):
    name: ClassVar[str] = "SUBSCRIBE"
    states: ClassVar[tuple[State, ...]] = _AUTH
    mailbox: str = ""


@dataclass(frozen=True, slots=True)
class UnsubscribeCommand(Command):
    name: ClassVar[str] = "UNSUBSCRIBE"
    states: ClassVar[tuple[State, ...]] = _AUTH
    mailbox: str = ""


@dataclass(frozen=True, slots=True)
class ListCommand(Command):
    """LIST with RFC 5258 LIST-EXTENDED, RFC 5819 LIST-STATUS and RFC 6154 SPECIAL-USE.

    ``select_options``: SUBSCRIBED, REMOTE, RECURSIVEMATCH, SPECIAL-USE (upper case).
    ``return_options``: SUBSCRIBED, CHILDREN, SPECIAL-USE (upper case); ``return_status``
    the STATUS items of RETURN (STATUS (...)).
    """

    name: ClassVar[str] = "LIST"
    states: ClassVar[tuple[State, ...]] = _AUTH
    reference: str = ""
    patterns: tuple[str, ...] = ()
    select_options: tuple[str, ...] = ()
    return_options: tuple[str, ...] = ()
    return_status: tuple[StatusItem, ...] = ()
    extended: bool = False


@dataclass(frozen=True, slots=True)
class LsubCommand(Command):
    name: ClassVar[str] = "LSUB"
    states: ClassVar[tuple[State, ...]] = _AUTH
    reference: str = ""
    pattern: str = ""


@dataclass(frozen=True, slots=True)
class StatusCommand(Command):
    name: ClassVar[str] = "STATUS"
    states: ClassVar[tuple[State, ...]] = _AUTH
    mailbox: str = ""
    items: tuple[StatusItem, ...] = ()


@dataclass(frozen=True, slots=True)
class AppendMessage:
    """One message of APPEND (several with RFC 3502 MULTIAPPEND)."""

    data: bytes = field(repr=False)
    flags: tuple[str, ...] = ()
    date: datetime.datetime | None = None
    binary: bool = False


@dataclass(frozen=True, slots=True)
class AppendCommand(Command):
    name: ClassVar[str] = "APPEND"
    states: ClassVar[tuple[State, ...]] = _AUTH
    mailbox: str = ""
    messages: tuple[AppendMessage, ...] = ()


@dataclass(frozen=True, slots=True)
class NamespaceCommand(Command):
    name: ClassVar[str] = "NAMESPACE"
    states: ClassVar[tuple[State, ...]] = _AUTH


@dataclass(frozen=True, slots=True)
class EnableCommand(Command):
    """RFC 5161: capability names, upper case."""

    name: ClassVar[str] = "ENABLE"
    states: ClassVar[tuple[State, ...]] = _AUTH
    capabilities: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class IdleCommand(Command):
    name: ClassVar[str] = "IDLE"
    states: ClassVar[tuple[State, ...]] = _AUTH


@dataclass(frozen=True, slots=True)
class GetQuotaCommand(Command):
    name: ClassVar[str] = "GETQUOTA"
    states: ClassVar[tuple[State, ...]] = _AUTH
    root: str = ""


@dataclass(frozen=True, slots=True)
class GetQuotaRootCommand(Command):
    name: ClassVar[str] = "GETQUOTAROOT"
    states: ClassVar[tuple[State, ...]] = _AUTH
    mailbox: str = ""


# -- selected -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UnselectCommand(Command):
    name: ClassVar[str] = "UNSELECT"
    states: ClassVar[tuple[State, ...]] = _SELECTED


@dataclass(frozen=True, slots=True)
class CheckCommand(Command):
    name: ClassVar[str] = "CHECK"
    states: ClassVar[tuple[State, ...]] = _SELECTED


@dataclass(frozen=True, slots=True)
class CloseCommand(Command):
    name: ClassVar[str] = "CLOSE"
    states: ClassVar[tuple[State, ...]] = _SELECTED


@dataclass(frozen=True, slots=True)
class ExpungeCommand(Command):
    """EXPUNGE, or UID EXPUNGE set (RFC 4315) when ``uids`` is given."""

    name: ClassVar[str] = "EXPUNGE"
    states: ClassVar[tuple[State, ...]] = _SELECTED
    uids: SequenceSet | None = None


@dataclass(frozen=True, slots=True)
class SearchCommand(Command):
    """[UID] SEARCH [RETURN (...)] [CHARSET c] keys; ``returns`` None for plain SEARCH."""

    name: ClassVar[str] = "SEARCH"
    states: ClassVar[tuple[State, ...]] = _SELECTED
    key: SearchKey | None = None
    uid: bool = False
    charset: str | None = None
    returns: tuple[SearchReturn, ...] | None = None


@dataclass(frozen=True, slots=True)
class FetchCommand(Command):
    """[UID] FETCH set items [(CHANGEDSINCE n [VANISHED])] (RFC 7162)."""

    name: ClassVar[str] = "FETCH"
    states: ClassVar[tuple[State, ...]] = _SELECTED
    set: SequenceSet = field(default_factory=lambda: SequenceSet(()))
    attrs: tuple[FetchAttr, ...] = ()
    uid: bool = False
    changed_since: int | None = None
    vanished: bool = False


@dataclass(frozen=True, slots=True)
class StoreCommand(Command):
    """[UID] STORE set [(UNCHANGEDSINCE n)] (+|-)FLAGS[.SILENT] (flags)."""

    name: ClassVar[str] = "STORE"
    states: ClassVar[tuple[State, ...]] = _SELECTED
    set: SequenceSet = field(default_factory=lambda: SequenceSet(()))
    op: Literal["set", "add", "remove"] = "set"
    silent: bool = False
    flags: tuple[str, ...] = ()
    uid: bool = False
    unchanged_since: int | None = None


@dataclass(frozen=True, slots=True)
class CopyCommand(Command):
    name: ClassVar[str] = "COPY"
    states: ClassVar[tuple[State, ...]] = _SELECTED
    set: SequenceSet = field(default_factory=lambda: SequenceSet(()))
    mailbox: str = ""
    uid: bool = False


@dataclass(frozen=True, slots=True)
class MoveCommand(Command):
    name: ClassVar[str] = "MOVE"
    states: ClassVar[tuple[State, ...]] = _SELECTED
    set: SequenceSet = field(default_factory=lambda: SequenceSet(()))
    mailbox: str = ""
    uid: bool = False


@dataclass(frozen=True, slots=True)
class SortCommand(Command):
    """[UID] SORT [RETURN (...)] (keys) charset search (RFC 5256, ESORT RFC 5267)."""

    name: ClassVar[str] = "SORT"
    states: ClassVar[tuple[State, ...]] = _SELECTED
    keys: tuple[SortKey, ...] = ()
    charset: str = "UTF-8"
    key: SearchKey | None = None
    uid: bool = False
    returns: tuple[SearchReturn, ...] | None = None


@dataclass(frozen=True, slots=True)
class ThreadCommand(Command):
    """[UID] THREAD algorithm charset search (RFC 5256)."""

    name: ClassVar[str] = "THREAD"
    states: ClassVar[tuple[State, ...]] = _SELECTED
    algorithm: Literal["REFERENCES", "ORDEREDSUBJECT"] = "REFERENCES"
    charset: str = "UTF-8"
    key: SearchKey | None = None
    uid: bool = False
