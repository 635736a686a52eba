"""Calendars and address books of a user: collections of small text resources.

Layout (ARCHITECTURE "Data directory"), for ``kind`` ``calendars`` or ``addressbooks``::

    users/{user}/{kind}/{collection}/calendar.json   properties (display name, colour, ...)
                                     index.json      sync counter, per-object facts, tombstones
                                     events/{name}   the resources (.ics or .vcf), as sent
                                     reminders.json  alarms already sent (rmail.scheduler)

Writes hold the collection's ``.lock`` (flock) and replace files atomically: the resource
first, then the index, so a reader that finds an object in the index finds its file. Reads
take no lock: the index is cached and re-read when its mtime or size changes.

Every write bumps the collection's sync counter. The ctag and the WebDAV sync token
(RFC 6578) are made from it and from the collection's random ``instance``, so that a
collection deleted and created again never reuses a token. Deletions leave a tombstone,
kept for the last ``TOMBSTONES_KEPT`` deletions; a sync token older than the oldest
tombstone kept is answered as expired.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import shutil
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from rmail.errors import AlreadyExists, InvalidInput, NotFound, PermissionDenied
from rmail.store.fsio import FileLock, atomic_write, atomic_write_json, fsync_dir, read_json

__all__ = [
    "Collection",
    "CollectionInfo",
    "DavStore",
    "Kind",
    "ObjectMeta",
    "PreconditionFailed",
    "SyncTokenExpired",
]

Kind = Literal["calendars", "addressbooks"]
# Service records kept in a collection's folder: reminders.json (alarms already sent).
_StateKey = Literal["reminders"]
TOMBSTONES_KEPT: Final = 10_000
MAX_COLLECTIONS: Final = 200
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+=~-]{0,199}$")
_PROPS_FILE: Final = "calendar.json"
_INDEX_FILE: Final = "index.json"
_OBJECTS: Final = "events"


class PreconditionFailed(InvalidInput):
    """An If-Match / If-None-Match condition did not hold (HTTP 412)."""


class SyncTokenExpired(InvalidInput):
    """The sync token is not one of this collection's, or too old (RFC 6578 §3.2)."""


@dataclass(frozen=True, slots=True)
class ObjectMeta:
    name: str
    uid: str
    etag: str
    size: int
    component: str
    start: float | None
    end: float | None
    recurring: bool
    token: int  # the sync counter when it last changed

    def to_json(self) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "etag": self.etag,
            "size": self.size,
            "component": self.component,
            "start": self.start,
            "end": self.end,
            "recurring": self.recurring,
            "token": self.token,
        }

    @classmethod
    def from_json(cls, name: str, data: Mapping[str, Any]) -> ObjectMeta:
        return cls(
            name,
            str(data["uid"]),
            str(data["etag"]),
            int(data["size"]),
            str(data["component"]),
            data.get("start"),
            data.get("end"),
            bool(data.get("recurring", False)),
            int(data["token"]),
        )


@dataclass(frozen=True, slots=True)
class CollectionInfo:
    name: str
    props: dict[str, Any]
    sync: int
    instance: str

    @property
    def ctag(self) -> str:
        return f'"{self.instance}-{self.sync}"'

    @property
    def sync_token(self) -> str:
        return f"http://rmail.invalid/sync/{self.instance}/{self.sync}"


@dataclass
class _Index:
    sync: int
    instance: str
    objects: dict[str, ObjectMeta]
    tombstones: dict[str, int]
    oldest: int  # the oldest token still answerable
    by_uid: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, data: Mapping[str, Any]) -> _Index:
        objects = {n: ObjectMeta.from_json(n, d) for n, d in data.get("objects", {}).items()}
        return cls(
            sync=int(data.get("sync", 0)),
            instance=str(data.get("instance", "0")),
            objects=objects,
            tombstones={n: int(t) for n, t in data.get("tombstones", {}).items()},
            oldest=int(data.get("oldest", 0)),
            by_uid={m.uid: n for n, m in objects.items()},
        )

    def dump(self) -> dict[str, Any]:
        return {
            "sync": self.sync,
            "instance": self.instance,
            "objects": {n: m.to_json() for n, m in self.objects.items()},
            "tombstones": self.tombstones,
            "oldest": self.oldest,
        }


class Collection:
    """One calendar or address book."""

    def __init__(self, path: Path, fsync: bool) -> None:
        self.path = path
        self.name = path.name
        self.fsync = fsync
        self._lock = FileLock(path / ".lock")
        self._cache: tuple[tuple[int, int], _Index] | None = None
        self._guard = threading.Lock()

    # -- reading ---------------------------------------------------------------------------

    def _index(self) -> _Index:
        try:
            st = os.stat(self.path / _INDEX_FILE)
        except FileNotFoundError:
            raise NotFound(f"no collection {self.name!r}") from None
        key = (st.st_mtime_ns, st.st_size)
        with self._guard:
            if self._cache is not None and self._cache[0] == key:
                return self._cache[1]
        index = _Index.load(read_json(self.path / _INDEX_FILE))
        with self._guard:
            self._cache = (key, index)
        return index

    def info(self) -> CollectionInfo:
        index = self._index()
        try:
            props = read_json(self.path / _PROPS_FILE)
        except FileNotFoundError:
            raise NotFound(f"no collection {self.name!r}") from None
        return CollectionInfo(self.name, props, index.sync, index.instance)

    def objects(self) -> list[ObjectMeta]:
        return list(self._index().objects.values())

    def by_uid(self, uid: str) -> ObjectMeta | None:
        """The object with this UID, if the collection has one."""
        index = self._index()
        name = index.by_uid.get(uid)
        return index.objects.get(name) if name is not None else None

    def get(self, name: str) -> ObjectMeta:
        meta = self._index().objects.get(name)
        if meta is None:
            raise NotFound(f"no object {name!r}")
        return meta

    def read(self, name: str) -> tuple[bytes, ObjectMeta]:
        meta = self.get(name)
        try:
            return (self.path / _OBJECTS / _check_name(name)).read_bytes(), meta
        except FileNotFoundError:
            raise NotFound(f"no object {name!r}") from None

    def changes_since(
        self, token: int | None, instance: str | None
    ) -> tuple[list[ObjectMeta], list[str], int]:
        """(changed objects, deleted names, current token) since ``token`` (None: all).

        Raises:
            SyncTokenExpired: the token is not this collection's or older than what is kept.
        """
        index = self._index()
        if token is None:
            return list(index.objects.values()), [], index.sync
        if instance != index.instance or token > index.sync or token < index.oldest:
            raise SyncTokenExpired("the sync token is unknown or too old")
        changed = [m for m in index.objects.values() if m.token > token]
        gone = [n for n, t in index.tombstones.items() if t > token]
        return changed, gone, index.sync

    # -- writing ---------------------------------------------------------------------------

    def put(
        self,
        name: str,
        data: bytes,
        *,
        uid: str,
        component: str,
        start: float | None = None,
        end: float | None = None,
        recurring: bool = False,
        if_match: str | None = None,
        if_none_match: bool = False,
    ) -> tuple[ObjectMeta, bool]:
        """Store a resource; returns its meta and whether it was created.

        Raises:
            PreconditionFailed: ``if_match`` is not the current ETag, or ``if_none_match``
                and the resource exists.
            AlreadyExists: another resource of the collection has this UID.
        """
        name = _check_name(name)
        etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
        with self._lock.hold():
            index = _Index.load(read_json(self.path / _INDEX_FILE))
            current = index.objects.get(name)
            if if_none_match and current is not None:
                raise PreconditionFailed(f"{name} exists")
            if if_match is not None and (current is None or current.etag != if_match):
                raise PreconditionFailed(f"{name} has changed (ETag mismatch)")
            holder = index.by_uid.get(uid)
            if holder is not None and holder != name:
                raise AlreadyExists(f"UID {uid} is already used by {holder}")
            index.sync += 1
            meta = ObjectMeta(
                name, uid, etag, len(data), component, start, end, recurring, index.sync
            )
            folder = self.path / _OBJECTS
            atomic_write(folder / name, data, fsync=self.fsync, mode=0o600)
            index.objects[name] = meta
            index.tombstones.pop(name, None)
            self._write_index(index)
        return meta, current is None

    def delete(self, name: str, *, if_match: str | None = None) -> None:
        """Remove a resource. Raises NotFound, PreconditionFailed."""
        name = _check_name(name)
        with self._lock.hold():
            index = _Index.load(read_json(self.path / _INDEX_FILE))
            current = index.objects.get(name)
            if current is None:
                raise NotFound(f"no object {name!r}")
            if if_match is not None and current.etag != if_match:
                raise PreconditionFailed(f"{name} has changed (ETag mismatch)")
            index.sync += 1
            del index.objects[name]
            index.tombstones[name] = index.sync
            if len(index.tombstones) > TOMBSTONES_KEPT:
                oldest = sorted(index.tombstones.items(), key=lambda item: item[1])
                for dropped, token in oldest[: len(oldest) - TOMBSTONES_KEPT]:
                    del index.tombstones[dropped]
                    index.oldest = max(index.oldest, token)
            self._write_index(index)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path / _OBJECTS / name)

    def state(self, key: _StateKey) -> dict[str, Any]:
        """A small JSON record kept beside the collection by a service ({} when none)."""
        try:
            data = read_json(self.path / f"{key}.json")
        except FileNotFoundError:
            return {}
        return data if isinstance(data, dict) else {}

    def set_state(self, key: _StateKey, value: Mapping[str, Any]) -> None:
        """Replace the record ``key`` (atomically; the sync token does not change)."""
        with self._lock.hold():
            atomic_write_json(self.path / f"{key}.json", dict(value), fsync=self.fsync)

    def set_props(self, changes: Mapping[str, Any]) -> CollectionInfo:
        """Set (value) or remove (None) properties; bumps the ctag."""
        with self._lock.hold():
            props = read_json(self.path / _PROPS_FILE)
            for key, value in changes.items():
                if value is None:
                    props.pop(key, None)
                else:
                    props[key] = value
            atomic_write_json(self.path / _PROPS_FILE, props, fsync=self.fsync)
            index = _Index.load(read_json(self.path / _INDEX_FILE))
            index.sync += 1
            self._write_index(index)
        return self.info()

    def _write_index(self, index: _Index) -> None:
        atomic_write_json(self.path / _INDEX_FILE, index.dump(), fsync=self.fsync)
        with self._guard:
            self._cache = None


class DavStore:
    """The calendars (or address books) of one user."""

    def __init__(self, user_dir: Path, kind: Kind, *, fsync: bool = True) -> None:
        self.root = user_dir / kind
        self.kind = kind
        self.fsync = fsync
        self._collections: dict[str, Collection] = {}
        self._guard = threading.Lock()

    def names(self) -> list[str]:
        try:
            entries = os.listdir(self.root)
        except FileNotFoundError:
            return []
        return sorted(n for n in entries if (self.root / n / _INDEX_FILE).exists())

    def collection(self, name: str) -> Collection:
        """An existing collection. Raises NotFound (also for a malformed name)."""
        try:
            _check_name(name)
        except InvalidInput:
            raise NotFound(f"no collection {name!r}") from None
        with self._guard:
            found = self._collections.get(name)
            if found is None:
                found = self._collections[name] = Collection(self.root / name, self.fsync)
        if not (found.path / _INDEX_FILE).exists():
            raise NotFound(f"no collection {name!r}")
        return found

    def collections(self) -> Iterator[Collection]:
        for name in self.names():
            with contextlib.suppress(NotFound):
                yield self.collection(name)

    def create(self, name: str, props: Mapping[str, Any]) -> Collection:
        """Make a collection. Raises AlreadyExists, InvalidInput, PermissionDenied (limit)."""
        name = _check_name(name)
        self.root.mkdir(parents=True, exist_ok=True)
        if len(self.names()) >= MAX_COLLECTIONS:
            raise PermissionDenied(f"at most {MAX_COLLECTIONS} {self.kind} per user")
        path = self.root / name
        try:
            path.mkdir()
        except FileExistsError:
            if (path / _INDEX_FILE).exists():
                raise AlreadyExists(f"{name!r} exists") from None
        (path / _OBJECTS).mkdir(exist_ok=True)
        atomic_write_json(path / _PROPS_FILE, dict(props), fsync=self.fsync)
        index = _Index(0, secrets.token_hex(6), {}, {}, 0)
        # The index last: its presence is what makes the collection exist.
        atomic_write_json(path / _INDEX_FILE, index.dump(), fsync=self.fsync)
        if self.fsync:
            fsync_dir(self.root)
        return self.collection(name)

    def delete(self, name: str) -> None:
        collection = self.collection(name)
        # The index first: a crash half-way leaves a directory that is no collection.
        os.unlink(collection.path / _INDEX_FILE)
        with self._guard:
            self._collections.pop(name, None)
        shutil.rmtree(collection.path, ignore_errors=True)


def _check_name(name: str) -> str:
    if not _NAME.match(name) or ".." in name or name.endswith((".tmp", ".lock")):
        raise InvalidInput(f"invalid name {name!r}")
    return name
