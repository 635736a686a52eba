"""WebDAV write locks, kept in memory by this process (RFC 4918 §6-7), shared by the drive
and CalDAV/CardDAV: the lock table, the lockinfo body, the lock XML and the checks of the
``If`` header and of lock tokens. Each area keeps its own :class:`LockTable` and maps its
URLs to path tuples; nothing here knows a URL layout or does I/O.

A lock is on a path (a tuple of names) of one user's tree, with a scope (exclusive or
shared), a depth (0 or infinity: the whole subtree) and a timeout. Locks are not written to
disk: a restart drops them, as a client would see after their timeout anyway, and two
server processes on one data directory do not see each other's locks. Lock tokens are
``opaquelocktoken:{uuid4}``.
"""

from __future__ import annotations

import math
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Final, Literal

from rmail.errors import InvalidInput
from rmail.web.davif import IfList
from rmail.web.davxml import DAV, element, href

__all__ = [
    "Lock",
    "LockConflict",
    "LockTable",
    "Path",
    "Scope",
    "blocking_lock",
    "if_holds",
    "lock_token_submitted",
    "lockdiscovery",
    "parse_lockinfo",
    "parse_timeout",
    "submitted_tokens",
    "supportedlock",
]

Scope = Literal["exclusive", "shared"]
DEFAULT_TIMEOUT: Final = 3600  # seconds, when the client asks for none
MAX_TIMEOUT: Final = 7 * 24 * 3600  # also what "Infinite" gets
MAX_LOCKS: Final = 10_000  # per user: a client cannot grow memory without end


@dataclass(frozen=True, slots=True)
class Lock:
    token: str
    path: tuple[str, ...]
    scope: Scope
    deep: bool  # Depth: infinity
    owner: str  # the client's <owner> element as XML text, or ""
    timeout: int
    expires: float

    def covers(self, path: tuple[str, ...]) -> bool:
        """Whether this lock applies to ``path`` (its root, or below a deep lock)."""
        if self.deep:
            return path[: len(self.path)] == self.path
        return path == self.path


class LockConflict(Exception):
    """Another lock is in the way (HTTP 423)."""


def parse_timeout(header: str | None) -> int:
    """Seconds for a ``Timeout: Second-600, Infinite`` header (the first we understand)."""
    if not header:
        return DEFAULT_TIMEOUT
    for raw in header.split(","):
        item = raw.strip().lower()
        if item == "infinite":
            return MAX_TIMEOUT
        if item.startswith("second-"):
            try:
                return max(1, min(MAX_TIMEOUT, int(item[7:])))
            except ValueError:
                continue
    return DEFAULT_TIMEOUT


class LockTable:
    """The live locks of every user, by user then token."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._locks: dict[str, dict[str, Lock]] = {}

    def _live(self, user: str) -> dict[str, Lock]:
        locks = self._locks.get(user)
        if not locks:
            return {}
        now = self._clock()
        for token in [t for t, lock in locks.items() if lock.expires <= now]:
            del locks[token]
        return locks

    def all(self, user: str) -> Iterator[Lock]:
        yield from list(self._live(user).values())

    def get(self, user: str, token: str) -> Lock | None:
        return self._live(user).get(token)

    def covering(self, user: str, path: tuple[str, ...]) -> list[Lock]:
        """The locks that apply to ``path``."""
        return [lock for lock in self._live(user).values() if lock.covers(path)]

    def below(self, user: str, path: tuple[str, ...]) -> list[Lock]:
        """The locks rooted at ``path`` or anywhere under it."""
        return [lock for lock in self._live(user).values() if lock.path[: len(path)] == path]

    def acquire(
        self,
        user: str,
        path: tuple[str, ...],
        *,
        scope: Scope,
        deep: bool,
        owner: str,
        timeout: int,
    ) -> Lock:
        """A new lock. Raises LockConflict when an exclusive lock (or, for an exclusive
        request, any lock) covers the path or, for a deep request, anything below it."""
        locks = self._live(user)
        if len(locks) >= MAX_LOCKS:
            raise InvalidInput("too many locks")
        for other in locks.values():
            overlaps = other.covers(path) or (deep and other.path[: len(path)] == path)
            if overlaps and (scope == "exclusive" or other.scope == "exclusive"):
                raise LockConflict(other.token)
        lock = Lock(
            f"opaquelocktoken:{uuid.uuid4()}",
            path,
            scope,
            deep,
            owner,
            timeout,
            self._clock() + timeout,
        )
        self._locks.setdefault(user, {})[lock.token] = lock
        return lock

    def refresh(self, user: str, token: str, timeout: int) -> Lock | None:
        lock = self._live(user).get(token)
        if lock is None:
            return None
        lock = replace(lock, timeout=timeout, expires=self._clock() + timeout)
        self._locks[user][token] = lock
        return lock

    def release(self, user: str, token: str) -> bool:
        return self._live(user).pop(token, None) is not None

    def drop_below(self, user: str, path: tuple[str, ...]) -> None:
        """Forget the locks on ``path`` and below (it was deleted or moved away)."""
        for lock in self.below(user, path):
            self._locks[user].pop(lock.token, None)

    def remaining(self, lock: Lock) -> int:
        # Rounded up: a lock granted for 600 s says 600, not 599, in the LOCK answer.
        return max(0, math.ceil(lock.expires - self._clock()))


Path = tuple[str, ...]


def parse_lockinfo(root: ET.Element) -> tuple[Scope, str]:
    """(scope, owner XML text) of a DAV:lockinfo body (RFC 4918 §14.11).

    Raises:
        InvalidInput: not a lockinfo with a lockscope and a write locktype (HTTP 400).
    """
    if root.tag != f"{{{DAV}}}lockinfo":
        raise InvalidInput("the body must be a DAV:lockinfo")
    scope: Scope | None = None
    node = root.find(f"{{{DAV}}}lockscope")
    if node is not None and node.find(f"{{{DAV}}}exclusive") is not None:
        scope = "exclusive"
    elif node is not None and node.find(f"{{{DAV}}}shared") is not None:
        scope = "shared"
    kind = root.find(f"{{{DAV}}}locktype")
    if scope is None or kind is None or kind.find(f"{{{DAV}}}write") is None:
        raise InvalidInput("lockinfo needs a lockscope and a write locktype")
    owner = root.find(f"{{{DAV}}}owner")
    return scope, ET.tostring(owner, encoding="unicode") if owner is not None else ""


def submitted_tokens(lists: Iterable[IfList]) -> set[str]:
    """Every state token named in If-header lists (negated ones do not count)."""
    return {
        c.token for lst in lists for c in lst.conditions if c.token is not None and not c.negated
    }


def if_holds(
    lists: Iterable[IfList],
    user: str,
    table: LockTable,
    target_of: Callable[[str | None], Path | None],
    etag_of: Callable[[Path], str | None],
) -> bool:
    """Whether one of the If header's lists holds (RFC 4918 §10.4). ``target_of`` maps a
    list's resource tag (None: the Request-URI) to a path, None for one elsewhere;
    ``etag_of`` gives the current ETag of a path, None when it does not exist."""
    for lst in lists:
        target = target_of(lst.resource)
        if target is None:
            continue
        tokens = {lock.token for lock in table.covering(user, target)}
        current: str | None = None
        if any(c.etag is not None for c in lst.conditions):
            current = etag_of(target)
        if all(_holds(c.token, c.etag, current, tokens) != c.negated for c in lst.conditions):
            return True
    return False


def _holds(token: str | None, etag: str | None, current: str | None, tokens: set[str]) -> bool:
    if token is not None:
        return token in tokens
    if not current or etag is None:
        return False
    return etag.removeprefix("W/") == current


def blocking_lock(
    table: LockTable,
    user: str,
    path: Path,
    given: set[str],
    *,
    members: bool = False,
    tree: bool = False,
) -> Lock | None:
    """A lock that forbids changing ``path`` without one of its tokens in ``given``, or
    None (RFC 4918 §7.4). ``members``: the parent's membership changes too (create,
    delete, move), so a depth-0 lock on the parent counts; ``tree``: locks anywhere below
    count (a collection is deleted or moved)."""
    locks = table.covering(user, path)
    if members and path:
        locks += [lock for lock in table.covering(user, path[:-1]) if lock not in locks]
    if tree:
        locks += [lock for lock in table.below(user, path) if lock not in locks]
    roots: dict[Path, set[str]] = {}
    for lock in locks:
        roots.setdefault(lock.path, set()).add(lock.token)
    for lock in locks:
        if not roots[lock.path] & given:
            return lock
    return None


def lock_token_submitted(root_href: str) -> ET.Element:
    """The DAV:error body of a 423 for a lock rooted at ``root_href``."""
    node = element(f"{{{DAV}}}lock-token-submitted", None, href(root_href))
    return element(f"{{{DAV}}}error", None, node)


def supportedlock() -> ET.Element:
    node = element(f"{{{DAV}}}supportedlock")
    for scope in ("exclusive", "shared"):
        node.append(
            element(
                f"{{{DAV}}}lockentry",
                None,
                element(f"{{{DAV}}}lockscope", None, element(f"{{{DAV}}}{scope}")),
                element(f"{{{DAV}}}locktype", None, element(f"{{{DAV}}}write")),
            )
        )
    return node


def _activelock(lock: Lock, remaining: int, root_href: str) -> ET.Element:
    node = element(
        f"{{{DAV}}}activelock",
        None,
        element(f"{{{DAV}}}locktype", None, element(f"{{{DAV}}}write")),
        element(f"{{{DAV}}}lockscope", None, element(f"{{{DAV}}}{lock.scope}")),
        element(f"{{{DAV}}}depth", "infinity" if lock.deep else "0"),
    )
    if lock.owner:
        node.append(ET.fromstring(lock.owner))
    node.append(element(f"{{{DAV}}}timeout", f"Second-{remaining}"))
    node.append(element(f"{{{DAV}}}locktoken", None, href(lock.token)))
    node.append(element(f"{{{DAV}}}lockroot", None, href(root_href)))
    return node


def lockdiscovery(
    locks: Iterable[Lock], remaining: Callable[[Lock], int], href_of: Callable[[Path], str]
) -> ET.Element:
    """DAV:lockdiscovery of ``locks``; ``href_of`` gives the URL path of a lock root."""
    return element(
        f"{{{DAV}}}lockdiscovery",
        None,
        *(_activelock(lk, remaining(lk), href_of(lk.path)) for lk in locks),
    )
