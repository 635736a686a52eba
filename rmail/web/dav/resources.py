"""The DAV URL space and what lives at each path.

::

    /dav/                                   root: points to the principal
    /dav/principals/{user@domain}/          the principal
    /dav/calendars/{user@domain}/           calendar home
    /dav/calendars/{user@domain}/{cal}/     a calendar
    /dav/calendars/{user@domain}/{cal}/{x}  an event, to-do or journal (.ics)
    /dav/calendars/{user@domain}/_inbox/    the scheduling Inbox (RFC 6638 §2.2), a
                                            collection of iTIP messages (GET, DELETE)
    /dav/calendars/{user@domain}/_outbox/   the scheduling Outbox (RFC 6638 §2.1), POST only
    /dav/addressbooks/{user@domain}/...     the same for address books and vCards

A user reaches only their own paths; another user's path is answered as not found. The
names ``_inbox`` and ``_outbox`` can never be a calendar's (a collection name starts with a
letter or digit), so no calendar is hidden by them.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import Final, Literal

from rmail.store.dav import Kind

__all__ = [
    "INBOX",
    "OUTBOX",
    "PREFIX",
    "Resource",
    "collection_path",
    "home_path",
    "object_path",
    "principal_path",
    "resolve",
]

PREFIX: Final = "/dav"
# Path segments of the scheduling Inbox and Outbox in the calendar home (RFC 6638 §2).
INBOX: Final = "_inbox"
OUTBOX: Final = "_outbox"
ResourceType = Literal["root", "principal", "home", "collection", "object", "principals", "outbox"]


@dataclass(frozen=True, slots=True)
class Resource:
    type: ResourceType
    owner: str | None = None  # user@domain in the path
    kind: Kind | None = None
    collection: str | None = None
    name: str | None = None

    @property
    def inbox(self) -> bool:
        """The scheduling Inbox or a message in it."""
        return self.kind == "calendars" and self.collection == INBOX

    @property
    def path(self) -> str:
        if self.type == "root":
            return f"{PREFIX}/"
        if self.type == "principals":
            return f"{PREFIX}/principals/"
        assert self.owner is not None
        if self.type == "principal":
            return principal_path(self.owner)
        assert self.kind is not None
        if self.type == "home":
            return home_path(self.kind, self.owner)
        if self.type == "outbox":
            return collection_path(self.kind, self.owner, OUTBOX)
        assert self.collection is not None
        if self.type == "collection":
            return collection_path(self.kind, self.owner, self.collection)
        assert self.name is not None
        return object_path(self.kind, self.owner, self.collection, self.name)


def _q(part: str) -> str:
    return urllib.parse.quote(part, safe="@+=~")


def principal_path(owner: str) -> str:
    return f"{PREFIX}/principals/{_q(owner)}/"


def home_path(kind: Kind, owner: str) -> str:
    return f"{PREFIX}/{kind}/{_q(owner)}/"


def collection_path(kind: Kind, owner: str, collection: str) -> str:
    return f"{PREFIX}/{kind}/{_q(owner)}/{_q(collection)}/"


def object_path(kind: Kind, owner: str, collection: str, name: str) -> str:
    return f"{PREFIX}/{kind}/{_q(owner)}/{_q(collection)}/{_q(name)}"


def resolve(path: str) -> Resource | None:
    """The resource a request path names, or None when the path names nothing here.

    ``path`` is the raw (still percent-encoded) path; each segment is decoded on its own,
    so an encoded ``/`` cannot add a level.
    """
    if not path.startswith(PREFIX):
        return None
    rest = path[len(PREFIX) :]
    if rest in ("", "/"):
        return Resource("root")
    if not rest.startswith("/"):
        return None
    parts = [urllib.parse.unquote(p) for p in rest.strip("/").split("/")]
    if any(p in ("", ".", "..") or "/" in p or "\x00" in p for p in parts):
        return None
    head, *tail = parts
    if head == "principals":
        if not tail:
            return Resource("principals")
        if len(tail) == 1:
            return Resource("principal", owner=tail[0].lower())
        return None
    if head not in ("calendars", "addressbooks"):
        return None
    kind: Kind = "calendars" if head == "calendars" else "addressbooks"
    if not tail:
        return None
    owner = tail[0].lower()
    if len(tail) == 1:
        return Resource("home", owner, kind)
    if kind == "calendars" and tail[1] == OUTBOX:
        return Resource("outbox", owner, kind) if len(tail) == 2 else None
    if kind == "addressbooks" and tail[1] == INBOX:
        return None
    if len(tail) == 2:
        return Resource("collection", owner, kind, tail[1])
    if len(tail) == 3:
        return Resource("object", owner, kind, tail[1], tail[2])
    return None
