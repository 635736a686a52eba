"""Each user's webhooks: ``domains/{domain}/users/{user}/webhooks.json``.

The file is a JSON object ``{"webhooks": [{id, url, events, secret, created}, ...]}``,
written atomically (mode 0600: it holds the signing secrets) under the flock of its sidecar
``webhooks.lock``, so two writers never lose each other's change. Reads take no lock and
are cached per file, revalidated by a ``stat`` (inode, mtime, size): the dispatcher looks
the hooks up for every event, and an atomic rename always gives the file a new inode.
:meth:`Webhooks.peek` answers from memory (no ``stat``) for a user whose hooks were read
less than ``max_age`` seconds ago, so that the dispatcher can pass over the events of users
without webhooks on the event loop.

What this module checks is the shape of a hook (URL syntax and length, event names, the
count per user). Which addresses a URL may reach is policy, and lives with the dispatcher
(:mod:`rmail.webhooks`). It knows nothing of HTTP.
"""

from __future__ import annotations

import builtins
import secrets
import threading
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal, get_args

from rmail.errors import InvalidInput, NotFound
from rmail.store import fsio
from rmail.store.accounts import Accounts, normalize_address

__all__ = [
    "EVENT_NAMES",
    "MAX_URL_LENGTH",
    "MAX_WEBHOOKS",
    "EventName",
    "Webhook",
    "Webhooks",
    "check_events",
    "check_url",
]

EventName = Literal["messageNew", "messageDeleted", "flagsChanged"]
EVENT_NAMES: Final[tuple[EventName, ...]] = get_args(EventName)
# A handful of integrations per user; each one costs a POST per event.
MAX_WEBHOOKS: Final = 10
# The de facto URL limit of browsers and servers (2,048 in old IE, the common floor).
MAX_URL_LENGTH: Final = 2048
FILE_NAME: Final = "webhooks.json"
_LOCK_NAME: Final = "webhooks.lock"
# 32 random bytes, sent as 64 hex characters: the HMAC-SHA256 key length (RFC 2104 §3: L).
_SECRET_BYTES: Final = 32
_ID_BYTES: Final = 8
_CACHE_MAX: Final = 10_000

_StatKey = tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class Webhook:
    """One registered URL. ``secret`` is the HMAC key, as the 64 hex characters."""

    id: str
    url: str
    events: tuple[EventName, ...]
    secret: str
    created: str

    def wants(self, event: EventName) -> bool:
        return event in self.events


def check_url(url: str) -> str:
    """``url`` if it is an absolute http(s) URL with a host, else raise InvalidInput."""
    if len(url) > MAX_URL_LENGTH:
        raise InvalidInput(f"url longer than {MAX_URL_LENGTH} characters")
    if any(ord(ch) <= 0x20 or ord(ch) == 0x7F for ch in url):
        raise InvalidInput("url must not contain spaces or control characters")
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise InvalidInput("url is not a valid URL") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise InvalidInput("url must start with http:// or https://")
    if not parts.hostname:
        raise InvalidInput("url must name a host")
    return url


def check_events(events: Iterable[object] | None) -> tuple[EventName, ...]:
    """The events a hook wants, in canonical order; ``None`` means all of them.

    Raises:
        InvalidInput: an unknown name, or an empty list.
    """
    if events is None:
        return EVENT_NAMES
    wanted = set()
    for name in events:
        if name not in EVENT_NAMES:
            raise InvalidInput(f"unknown event {name!r} (one of {', '.join(EVENT_NAMES)})")
        wanted.add(name)
    if not wanted:
        raise InvalidInput("events must name at least one event")
    return tuple(name for name in EVENT_NAMES if name in wanted)


def _from_record(record: dict[str, Any]) -> Webhook:
    return Webhook(
        id=str(record["id"]),
        url=str(record["url"]),
        events=tuple(e for e in EVENT_NAMES if e in record.get("events", ())),
        secret=str(record["secret"]),
        created=str(record.get("created", "")),
    )


def _to_record(hook: Webhook) -> dict[str, Any]:
    record = asdict(hook)
    record["events"] = list(hook.events)
    return record


def _stat_key(path: Path) -> _StatKey | None:
    try:
        st = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class Webhooks:
    """List, add and delete the webhooks of a user. Every method blocks."""

    def __init__(self, accounts: Accounts, *, fsync: bool = True) -> None:
        self.accounts = accounts
        self.fsync = fsync
        self._cache: OrderedDict[Path, tuple[_StatKey, tuple[Webhook, ...]]] = OrderedDict()
        self._lock = threading.Lock()
        # For peek(): (user, domain) -> (monotonic time of the last list(), its hooks).
        self._seen: dict[tuple[str, str], tuple[float, tuple[Webhook, ...]]] = {}

    def _path(self, address: str) -> Path:
        return self.accounts.user_dir(address) / FILE_NAME

    def _read(self, path: Path) -> tuple[Webhook, ...]:
        key = _stat_key(path)
        if key is None:
            with self._lock:
                self._cache.pop(path, None)
            return ()
        with self._lock:
            cached = self._cache.get(path)
            if cached is not None and cached[0] == key:
                self._cache.move_to_end(path)
                return cached[1]
        try:
            raw = fsio.read_json(path)
            hooks = tuple(_from_record(r) for r in raw["webhooks"])
        except FileNotFoundError:
            return ()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InvalidInput(f"{path.name} of the user is damaged: {exc}") from exc
        with self._lock:
            self._cache[path] = (key, hooks)
            self._cache.move_to_end(path)
            while len(self._cache) > _CACHE_MAX:
                self._cache.popitem(last=False)
        return hooks

    def _write(self, path: Path, hooks: Iterable[Webhook]) -> None:
        with self._lock:
            self._seen.clear()  # rare: forget every remembered answer rather than one
        fsio.atomic_write_json(path, {"webhooks": [_to_record(h) for h in hooks]}, fsync=self.fsync)

    def list(self, address: str) -> builtins.list[Webhook]:
        """The user's webhooks, oldest first.

        Raises:
            InvalidInput: bad address, or a damaged file.
            NotFound: no such user.
        """
        hooks = self._read(self._path(address))
        with self._lock:
            if len(self._seen) >= _CACHE_MAX:
                self._seen.clear()
            self._seen[normalize_address(address)] = (time.monotonic(), hooks)
        return list(hooks)

    def peek(self, address: str, max_age: float) -> tuple[Webhook, ...] | None:
        """The user's webhooks as :meth:`list` found them less than ``max_age`` seconds ago,
        from memory (no file system access); None when there is no such answer.

        A change made through this object is seen at once; one made by another process,
        within ``max_age``.
        """
        try:
            key = normalize_address(address)
        except InvalidInput:
            return None
        with self._lock:
            found = self._seen.get(key)
        if found is None or time.monotonic() - found[0] > max_age:
            return None
        return found[1]

    def add(self, address: str, url: str, events: Iterable[object] | None = None) -> Webhook:
        """Register ``url`` for ``events`` (default: all); the result holds the new secret.

        Raises:
            InvalidInput: bad URL or events, or the user has ``MAX_WEBHOOKS`` already.
            NotFound: no such user.
            TemporaryFailure: the disk refused the write.
        """
        check_url(url)
        wanted = check_events(events)
        path = self._path(address)
        hook = Webhook(
            id=secrets.token_hex(_ID_BYTES),
            url=url,
            events=wanted,
            secret=secrets.token_hex(_SECRET_BYTES),
            created=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        lock = fsio.FileLock(path.with_name(_LOCK_NAME))
        try:
            with lock.hold():
                hooks = self._read(path)
                if len(hooks) >= MAX_WEBHOOKS:
                    raise InvalidInput(f"at most {MAX_WEBHOOKS} webhooks per user")
                self._write(path, (*hooks, hook))
        finally:
            lock.close()
        return hook

    def delete(self, address: str, hook_id: str) -> None:
        """Remove the user's webhook ``hook_id``.

        Raises:
            NotFound: no such user, or the user has no webhook ``hook_id``.
            TemporaryFailure: the disk refused the write.
        """
        path = self._path(address)
        lock = fsio.FileLock(path.with_name(_LOCK_NAME))
        try:
            with lock.hold():
                hooks = self._read(path)
                kept = [h for h in hooks if h.id != hook_id]
                if len(kept) == len(hooks):
                    raise NotFound(f"no webhook {hook_id!r}")
                self._write(path, kept)
        finally:
            lock.close()
