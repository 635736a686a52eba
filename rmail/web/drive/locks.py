"""WebDAV write locks of the drive, kept in memory by this process (RFC 4918 §6-7).

A lock is on a path of one user's drive, with a scope (exclusive or shared), a depth (0 or
infinity: the whole subtree) and a timeout. Locks are not written to disk: a restart drops
them, as a client would see after their timeout anyway, and two server processes on one
data directory do not see each other's locks. Lock tokens are ``opaquelocktoken:{uuid4}``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Final, Literal

from rmail.errors import InvalidInput

__all__ = ["Lock", "LockConflict", "LockTable", "Scope", "parse_timeout"]

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
        return max(0, int(lock.expires - self._clock()))
