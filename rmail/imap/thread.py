"""SORT and THREAD (RFC 5256): base subjects, sort orders, thread trees and their wire form.

This module owns the algorithms of RFC 5256 and nothing else: the caller searches first
(:mod:`rmail.imap.search`), hands over the matching messages, and gets back an ordered list
(SORT) or a list of :class:`Thread` trees (THREAD) plus :func:`render_threads` for the
response payload. No I/O of its own, no store calls.

Everything read from a message goes through :class:`SortableMessage`, a subset of
:class:`rmail.imap.search.SearchableMessage`, so the same objects serve SEARCH, SORT and
THREAD. The header fields read are Subject, Date, From, To, Cc (SORT), and Message-ID,
In-Reply-To, References (THREAD=REFERENCES); :func:`message_id` and :func:`references`
show how the last three are interpreted.

Notes:

- String keys compare after Unicode case folding (``str.casefold``), which agrees with the
  ``i;ascii-casemap`` collation on ASCII and approximates ``i;unicode-casemap`` (RFC 5255
  I18NLEVEL=1) elsewhere.
- Ties are always broken by ascending sequence number, also under REVERSE (RFC 5256 §3).
- Every tree walk is iterative: a mailbox with a reply chain thousands deep must not hit
  Python's recursion limit.
"""

from __future__ import annotations

import datetime
import email.utils
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol, TypeVar

from rmail.imap.parser.types import SortKey

__all__ = [
    "SortableMessage",
    "Thread",
    "base_subject",
    "message_id",
    "references",
    "render_threads",
    "sort",
    "thread_orderedsubject",
    "thread_references",
]


class SortableMessage(Protocol):
    """What SORT and THREAD need from a message; see ``SearchableMessage`` for the meaning.

    ``header_values(name)`` returns the decoded (RFC 2047) values of every top-level header
    field ``name`` (matched case-insensitively), ``[]`` when absent.
    """

    @property
    def seq(self) -> int: ...

    @property
    def uid(self) -> int: ...

    @property
    def size(self) -> int: ...

    @property
    def internal_date(self) -> int: ...

    def header_values(self, name: str) -> list[str]: ...


_M = TypeVar("_M", bound=SortableMessage)


@dataclass(frozen=True, slots=True)
class Thread:
    """One node of a thread tree (RFC 5256 §4).

    Attributes:
        id: the message's sequence number, or its UID for UID THREAD; None for a dummy
            parent that stands for a message not in the result (RFC 5256 §2.2).
        children: the replies, oldest first.
    """

    id: int | None
    children: tuple[Thread, ...] = ()


# -- base subject (RFC 5256 §2.1) ------------------------------------------------------------

# RFC 5256 §5: subj-blob = "[" *BLOBCHAR "]" *WSP, BLOBCHAR being any char but "[" and "]".
# After step (1) the only whitespace left is single spaces.
_BLOB: Final = r"\[[^\[\]]*\] *"
_BLOB_RE: Final = re.compile(_BLOB)
# subj-leader = (*subj-blob subj-refwd) / WSP; subj-refwd = ("re" / ("fw" ["d"])) *WSP
# [subj-blob] ":"
_LEADER_RE: Final = re.compile(rf"(?:{_BLOB})*(?:re|fwd?) *(?:{_BLOB})?:| ", re.I | re.A)
_WHITESPACE_RE: Final = re.compile(r"(?:\r\n|[\t\r\n ])+")
_FWD_TRAILER: Final = "(fwd)"
_FWD_HEADER: Final = "[fwd:"


def base_subject(subject: str) -> str:
    """The base subject of ``subject``, RFC 5256 §2.1.

    ``subject`` is the Subject: field already decoded from RFC 2047 (step 1's conversion
    happens where headers are decoded). The case is kept; comparisons case-fold.

    >>> base_subject("Re: [PATCH] Fw: foo (fwd)")
    'foo'
    """
    return _base_subject(subject)[0]


def _base_subject(subject: str) -> tuple[str, bool]:
    """Base subject, and whether the subject marks a reply or forward (RFC 5256 §2.2 (5)).

    A reply or forward is a subject with a subj-refwd leader, a "(fwd)" trailer or the
    "[fwd: ...]" wrapper.
    """
    # (1) tabs and continuations become spaces; runs of spaces become one
    text = _WHITESPACE_RE.sub(" ", subject)
    is_refwd = False
    while True:
        # (2) remove trailers: "(fwd)" and WSP, repeatedly
        while True:
            if text.endswith(" "):
                text = text[:-1]
            elif text[-len(_FWD_TRAILER) :].lower() == _FWD_TRAILER:
                text = text[: -len(_FWD_TRAILER)]
                is_refwd = True
            else:
                break
        # (5) repeat (3) and (4) until nothing changes
        while True:
            before = text
            # (3) remove leaders: "*blob re:", "fw:", "fwd:" and WSP
            while (leader := _LEADER_RE.match(text)) is not None:
                if leader.group() != " ":
                    is_refwd = True
                text = text[leader.end() :]
            # (4) remove a leading blob unless nothing of the subject would be left
            blob = _BLOB_RE.match(text)
            if blob is not None and text[blob.end() :]:
                text = text[blob.end() :]
            if text == before:
                break
        # (6) "[fwd: subject]": unwrap and start again from (2)
        if text[: len(_FWD_HEADER)].lower() == _FWD_HEADER and text.endswith("]"):
            text = text[len(_FWD_HEADER) : -1]
            is_refwd = True
            continue
        return text, is_refwd


# -- header interpretation -------------------------------------------------------------------

# RFC 5322 §3.6.4 msg-id: "<" id-left "@" id-right ">"; lenient about what the halves hold.
_MSG_ID_RE: Final = re.compile(r"<[^<>@\s]+@[^<>\s]+>")


def message_id(msg: SortableMessage) -> str | None:
    """The first valid msg-id of the Message-ID field, brackets included; None if none.

    RFC 5256 §2.2 (1)(A): Message IDs compare case-sensitively, so no normalization.
    """
    for value in msg.header_values("Message-ID"):
        found = _MSG_ID_RE.search(value)
        if found is not None:
            return found.group()
    return None


def references(msg: SortableMessage) -> list[str]:
    """The message's references, oldest first, RFC 5256 §2.2 (1)(B).

    The msg-ids of the References field; without any there, the first msg-id of
    In-Reply-To; otherwise none.
    """
    refs = [ref for value in msg.header_values("References") for ref in _MSG_ID_RE.findall(value)]
    if refs:
        return refs
    for value in msg.header_values("In-Reply-To"):
        found = _MSG_ID_RE.search(value)
        if found is not None:
            return [found.group()]
    return []


def _sent_time(msg: SortableMessage) -> float:
    """Sent date as Unix seconds in UTC (RFC 5256 §2.2).

    Taken from the Date: field; if it is missing or unparsable, INTERNALDATE.
    """
    for value in msg.header_values("Date")[:1]:
        try:
            sent = email.utils.parsedate_to_datetime(value.strip())
        except (TypeError, ValueError, IndexError, OverflowError):
            break
        if sent.tzinfo is None:  # "-0000": UTC, origin unknown (RFC 5322 §3.3)
            sent = sent.replace(tzinfo=datetime.UTC)
        return sent.timestamp()
    return float(msg.internal_date)


# The common shapes "local@domain" and "Name <local@domain>" (nothing quoted, no comment,
# no list, no group), parsed without email.utils, which costs ~30 µs an address.
_SIMPLE_ADDRESS_RE: Final = re.compile(
    r'\s*(?:[^"<>,();:\\]*<)?([^\s"<>,();:@\\]+)@[^\s"<>,();:@\\]+>?\s*'
)


def _first_mailbox(msg: SortableMessage, field: str) -> str:
    """addr-mailbox (the local part) of the first address in ``field``, RFC 5256 §3.

    The values are decoded text, so a display name such as ``=?utf-8?q?Doe=2C_John?=``
    may have turned into an unquoted comma that splits it off as a bogus address; the
    first address that has an "@" is therefore preferred.
    """
    values = msg.header_values(field)
    if not values:
        return ""
    simple = _SIMPLE_ADDRESS_RE.fullmatch(values[0])
    if simple is not None:
        return simple.group(1).casefold()
    addrs = [addr for _, addr in email.utils.getaddresses(values) if addr]
    if not addrs:
        return ""
    first = next((addr for addr in addrs if "@" in addr), addrs[0])
    local, at, _ = first.rpartition("@")
    return (local if at else first).casefold()


def _first_value(msg: SortableMessage, field: str) -> str:
    values = msg.header_values(field)
    return values[0] if values else ""


# -- SORT (RFC 5256 §3) ----------------------------------------------------------------------

_SortValue = int | float | str

_SORT_KEYS: Final[dict[str, Callable[[SortableMessage], _SortValue]]] = {
    "ARRIVAL": lambda m: m.internal_date,
    "CC": lambda m: _first_mailbox(m, "Cc"),
    "DATE": _sent_time,
    "FROM": lambda m: _first_mailbox(m, "From"),
    "SIZE": lambda m: m.size,
    "SUBJECT": lambda m: base_subject(_first_value(m, "Subject")).casefold(),
    "TO": lambda m: _first_mailbox(m, "To"),
}


def sort(messages: Iterable[_M], keys: Sequence[SortKey]) -> list[_M]:
    """The messages in the order of the SORT criteria ``keys``, RFC 5256 §3.

    Each criterion may be REVERSEd; equal messages stay in sequence-number order, which
    REVERSE does not affect (RFC 5256 §3). A missing address field sorts as the empty
    string (first); a missing or bad Date: sorts by INTERNALDATE.

    Args:
        messages: the messages that matched the search criteria.
        keys: the sort criteria, most significant first.

    Returns:
        The same messages, sorted.
    """
    ordered = sorted(messages, key=lambda m: m.seq)
    # Python's sort is stable, also with reverse=True: sorting by the least significant
    # criterion first and the most significant last gives the lexicographic order.
    for sort_key in reversed(keys):
        value_of = _SORT_KEYS[sort_key.key]
        values = {id(m): value_of(m) for m in ordered}
        ordered.sort(key=lambda m: values[id(m)], reverse=sort_key.reverse)
    return ordered


# -- THREAD (RFC 5256 §2) --------------------------------------------------------------------


@dataclass(slots=True)
class _Info:
    """What the threading algorithms need of one message, computed once."""

    ident: int
    seq: int
    sent: float
    subject: str  # case-folded base subject
    is_refwd: bool

    @property
    def date_key(self) -> tuple[float, int]:
        """RFC 5256 §2.2: by sent date, ties by sequence number."""
        return (self.sent, self.seq)


def _infos(messages: Iterable[SortableMessage], uid: bool) -> list[_Info]:
    infos = []
    for m in messages:
        subject, is_refwd = _base_subject(_first_value(m, "Subject"))
        infos.append(
            _Info(
                ident=m.uid if uid else m.seq,
                seq=m.seq,
                sent=_sent_time(m),
                subject=subject.casefold(),
                is_refwd=is_refwd,
            )
        )
    return infos


def thread_orderedsubject(
    messages: Iterable[SortableMessage], *, uid: bool = False
) -> list[Thread]:
    """THREAD=ORDEREDSUBJECT, RFC 5256 §2.1.

    Messages are sorted by base subject, then sent date; each run of one base subject is a
    thread whose first message is the parent of all the others (no grandchildren); the
    threads are ordered by the sent date of their first message.

    Args:
        messages: the messages that matched the search criteria.
        uid: put UIDs rather than sequence numbers into the result (UID THREAD).
    """
    infos = sorted(_infos(messages, uid), key=lambda i: (i.subject, i.sent, i.seq))
    groups: list[list[_Info]] = []
    for info in infos:
        if groups and groups[-1][0].subject == info.subject:
            groups[-1].append(info)
        else:
            groups.append([info])
    groups.sort(key=lambda g: g[0].date_key)
    return [
        Thread(first.ident, tuple(Thread(child.ident) for child in rest)) for first, *rest in groups
    ]


class _Node:
    """A container of the REFERENCES algorithm; ``info`` None makes it a dummy."""

    __slots__ = ("children", "info", "parent")

    def __init__(self, info: _Info | None) -> None:
        self.info = info
        self.parent: _Node | None = None
        self.children: list[_Node] = []

    def first_message(self) -> _Info:
        """This node's message, or for a dummy its first child's (children never empty)."""
        node = self
        while node.info is None:
            node = node.children[0]
        return node.info


def _is_ancestor(ancestor: _Node, node: _Node) -> bool:
    """Whether ``ancestor`` is ``node`` or above it; linking it below ``node`` would loop.

    A childless ``ancestor`` is above nothing, which keeps a long reply chain linear
    rather than quadratic: a message is usually still childless when it is linked.
    """
    if not ancestor.children:
        return ancestor is node
    current: _Node | None = node
    while current is not None:
        if current is ancestor:
            return True
        current = current.parent
    return False


def _link(parent: _Node, child: _Node) -> None:
    child.parent = parent
    parent.children.append(child)


def _unlink(child: _Node) -> None:
    if child.parent is not None:
        child.parent.children.remove(child)
        child.parent = None


def _post_order(root: _Node) -> list[_Node]:
    """All nodes under and including ``root``, each after all of its descendants."""
    pre_order = []
    stack = [root]
    while stack:
        node = stack.pop()
        pre_order.append(node)
        stack.extend(node.children)
    pre_order.reverse()
    return pre_order


def _sort_siblings(node: _Node) -> None:
    """Sort the children of ``node`` by sent date; a dummy sorts as its first child.

    The dummy's own children must already be sorted.
    """
    node.children.sort(key=lambda c: c.first_message().date_key)


def thread_references(messages: Iterable[SortableMessage], *, uid: bool = False) -> list[Thread]:
    """THREAD=REFERENCES, RFC 5256 §2.2 (steps 1-6).

    Links messages by Message-ID/References/In-Reply-To (see :func:`message_id` and
    :func:`references`), with a dummy for each referenced message that is absent; a missing
    or duplicate Message-ID (any but the lowest sequence number) counts as unique; links
    that would make a loop are not made. Then dummies are pruned, threads with the same base
    subject gathered, and siblings sorted by sent date.

    Args:
        messages: the messages that matched the search criteria.
        uid: put UIDs rather than sequence numbers into the result (UID THREAD).
    """
    listed = sorted(messages, key=lambda m: m.seq)
    infos = _infos(listed, uid)
    nodes = [_Node(info) for info in infos]

    # (1) link by references. Messages with a duplicate or no Message-ID get a unique one,
    # which nothing can reference: they just stay out of the table.
    by_id: dict[str, _Node] = {}
    for msg, node in zip(listed, nodes, strict=True):
        mid = message_id(msg)
        if mid is not None:
            by_id.setdefault(mid, node)
    for msg, node in zip(listed, nodes, strict=True):
        previous: _Node | None = None
        for ref in references(msg):
            ref_node = by_id.get(ref)
            if ref_node is None:
                ref_node = by_id[ref] = _Node(None)
            if ref_node is node:  # a message listing itself would only make a loop
                continue
            # (1)(A) keep an existing parent; never link an ancestor below its descendant
            if (
                previous is not None
                and ref_node.parent is None
                and not _is_ancestor(ref_node, previous)
            ):
                _link(previous, ref_node)
            previous = ref_node
        # (1)(B) the last reference is the parent: it beats a link from a truncated chain
        _unlink(node)
        if previous is not None and not _is_ancestor(node, previous):
            _link(previous, node)

    # (2) the parentless messages (and dummies) are the children of the root
    root = _Node(None)
    for node in [*nodes, *(n for n in by_id.values() if n.info is None)]:
        if node.parent is None:
            _link(root, node)

    # (3) prune dummies: childless ones vanish; others give way to their children, except
    # that more than one child is never promoted to the root
    for node in _post_order(root):
        kept: list[_Node] = []
        for child in node.children:
            if child.info is None:
                if not child.children:
                    continue
                if node is not root or len(child.children) == 1:
                    for grandchild in child.children:
                        grandchild.parent = node
                    kept.extend(child.children)
                    continue
            kept.append(child)
        node.children = kept

    # (4) sort the top level by sent date, a dummy by its earliest child
    for child in root.children:
        if child.info is None:
            _sort_siblings(child)
    _sort_siblings(root)

    # (5) gather threads with the same base subject
    _gather_subjects(root)

    # (6) sort every set of siblings, deepest first
    for node in _post_order(root):
        _sort_siblings(node)

    return [_to_thread(child) for child in root.children]


def _gather_subjects(root: _Node) -> None:
    """RFC 5256 §2.2 step (5): merge top-level threads that share a base subject."""
    table: dict[str, _Node] = {}
    # (5)(B) one representative per subject: a dummy if any, else a non-reply if any
    for node in root.children:
        first = node.first_message()
        if not first.subject:
            continue
        held = table.get(first.subject)
        if held is None or (
            held.info is not None
            and (node.info is None or (held.info.is_refwd and not node.info.is_refwd))
        ):
            table[first.subject] = node

    # (5)(C) merge the others into it; removal from the root is deferred (parent changes)
    top_level = list(root.children)
    for node in list(top_level):
        if node.parent is not root:  # already merged below a new dummy
            continue
        first = node.first_message()
        if not first.subject:
            continue
        held = table[first.subject]
        if held is node:
            continue
        if held.info is None and node.info is None:
            for child in node.children:
                _link(held, child)
            node.children = []
            node.parent = None
        elif held.info is None or (
            node.info is not None and node.info.is_refwd and not held.info.is_refwd
        ):
            node.parent = None
            _link(held, node)
        else:
            dummy = _Node(None)
            dummy.parent = root
            top_level.append(dummy)
            held.parent = None
            node.parent = None
            _link(dummy, held)
            _link(dummy, node)
            table[first.subject] = dummy
    root.children = [node for node in top_level if node.parent is root]


def _to_thread(top: _Node) -> Thread:
    """Convert a node tree to immutable :class:`Thread` values, bottom-up."""
    built: dict[int, Thread] = {}
    for node in _post_order(top):
        children = tuple(built.pop(id(child)) for child in node.children)
        built[id(node)] = Thread(None if node.info is None else node.info.ident, children)
    return built[id(top)]


# -- response syntax (RFC 5256 §4) -----------------------------------------------------------


def render_threads(threads: Sequence[Thread]) -> bytes:
    """The thread-list data of a THREAD response, e.g. ``b"(2)(3 6 (4 23)(44 7 96))"``.

    RFC 5256 §4: a message with a single child is followed by it after a space; a message
    with several children is followed by a space and one parenthesized list per child; a
    dummy contributes only its children.
    """
    out: list[str] = []
    for thread in threads:
        out.append("(")
        _render_members(thread, out)
        out.append(")")
    return "".join(out).encode("ascii")


def _render_members(top: Thread, out: list[str]) -> None:
    """Append what goes inside the parentheses of ``top``'s thread-list (iteratively)."""
    stack: list[Thread | str] = [top]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
            continue
        pending: list[Thread | str] = []
        if item.id is not None:
            out.append(str(item.id))
            if item.children:
                pending.append(" ")
        if len(item.children) == 1:
            pending.append(item.children[0])
        else:
            for child in item.children:
                pending.extend(("(", child, ")"))
        stack.extend(reversed(pending))
