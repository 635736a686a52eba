"""Calendars and address books of a user: collections of small text resources.

Layout (ARCHITECTURE "Data directory"), for ``kind`` ``calendars`` or ``addressbooks``::

    users/{user}/{kind}/{collection}/calendar.json   properties (display name, colour, ...)
                                     index.json      snapshot: sync counter, per-object
                                                     facts, tombstones, generation
                                     index.journal   changes since the snapshot, one JSON
                                                     array per line
                                     events/{name}   the resources (.ics or .vcf), as sent
                                     reminders.json  alarms already sent (rmail.scheduler)
                                     .lock           the flock sidecar of writers
    users/{user}/schedule/inbox/                     the scheduling Inbox (RFC 6638 §2.2): the
                                                     same layout, iTIP messages as resources

The index is a snapshot plus an append-only journal (:mod:`rmail.store.journal`, the same
machinery as the drive's folders), so that one PUT or DELETE costs one short append
whatever the collection's size. The records: ``["p", name, facts]`` (an object stored;
``facts`` as in the snapshot, with its new ``token``), ``["d", name, sync]`` (an object
deleted at that sync value) and ``["s", sync]`` (properties changed); the snapshot is
rewritten after ``JOURNAL_MAX`` of them.

Writes hold the collection's ``.lock`` (flock), write the resource first (atomically), then
append the journal record (fdatasync), so a reader that finds an object in the index finds
its file. Reads take no lock: the index is cached and brought up to date with two ``stat``
calls and a read of the journal's new tail.

Every write bumps the collection's sync counter. The ctag and the WebDAV sync token
(RFC 6578) are made from it and from the collection's random ``instance``, so that a
collection deleted and created again never reuses a token. Deletions leave a tombstone,
kept for the last ``TOMBSTONES_KEPT`` deletions; a sync token older than the oldest
tombstone kept is answered as expired.
"""

from __future__ import annotations

import contextlib
import dataclasses
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

from rmail.errors import (
    AlreadyExists,
    InvalidInput,
    NotFound,
    PermissionDenied,
    TemporaryFailure,
)
from rmail.store.fsio import FileLock, atomic_write, atomic_write_json, fsync_dir, read_json
from rmail.store.journal import JournaledIndex

__all__ = [
    "Collection",
    "CollectionInfo",
    "DavStore",
    "Kind",
    "ObjectMeta",
    "PreconditionFailed",
    "ScheduleTagChange",
    "SyncTokenExpired",
]

Kind = Literal["calendars", "addressbooks"]
ScheduleTagChange = Literal["new", "keep"] | None
# Service records kept in a collection's folder: reminders.json (alarms already sent).
_StateKey = Literal["reminders"]
TOMBSTONES_KEPT: Final = 10_000
MAX_COLLECTIONS: Final = 200
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+=~-]{0,199}$")
_PROPS_FILE: Final = "calendar.json"
_INDEX_FILE: Final = "index.json"
_JOURNAL_FILE: Final = "index.journal"
# Journal records before the snapshot is rewritten: one compaction (O(collection)) per
# this many writes keeps the rewrite off the cost of a single PUT.
JOURNAL_MAX: Final = 1000
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
    # One component, no recurrence: start/end are its exact span (False when unknown, as in
    # entries written before this field existed).
    simple: bool = False
    # RFC 6638 §3.2.10: the Schedule-Tag of a scheduling object resource (None: not one).
    schedule_tag: str | None = None

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
            "simple": self.simple,
            **({"stag": self.schedule_tag} if self.schedule_tag is not None else {}),
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
            bool(data.get("simple", False)),
            str(data["stag"]) if data.get("stag") is not None else None,
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
    generation: int = 0

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
            generation=int(data.get("generation", 0)),
        )

    def dump(self) -> dict[str, Any]:
        return {
            "sync": self.sync,
            "instance": self.instance,
            "objects": {n: m.to_json() for n, m in self.objects.items()},
            "tombstones": self.tombstones,
            "oldest": self.oldest,
            "generation": self.generation,
        }

    def apply(self, record: list[Any]) -> None:
        """One journal record (see the module docstring)."""
        kind = record[0]
        if kind == "p":
            meta = ObjectMeta.from_json(record[1], record[2])
            previous = self.objects.get(meta.name)
            if previous is not None and self.by_uid.get(previous.uid) == meta.name:
                del self.by_uid[previous.uid]
            self.objects[meta.name] = meta
            self.by_uid[meta.uid] = meta.name
            self.tombstones.pop(meta.name, None)
            self.sync = max(self.sync, meta.token)
        elif kind == "d":
            name, sync = record[1], int(record[2])
            gone = self.objects.pop(name, None)
            if gone is not None and self.by_uid.get(gone.uid) == name:
                del self.by_uid[gone.uid]
            self.sync = sync
            self.tombstones[name] = sync
            if len(self.tombstones) > TOMBSTONES_KEPT:
                oldest = sorted(self.tombstones.items(), key=lambda item: item[1])
                for dropped, token in oldest[: len(oldest) - TOMBSTONES_KEPT]:
                    del self.tombstones[dropped]
                    self.oldest = max(self.oldest, token)
        elif kind == "s":
            self.sync = int(record[1])
        else:
            raise TemporaryFailure(f"unknown index journal record {kind!r}")


class Collection:
    """One calendar or address book."""

    def __init__(self, path: Path, fsync: bool) -> None:
        self.path = path
        self.name = path.name
        self.fsync = fsync
        self._lock = FileLock(path / ".lock")
        # The snapshot + journal machinery is shared with the drive (rmail.store.journal);
        # its guard serializes the threads of this process that refresh or read the index.
        self._journal: JournaledIndex[_Index] = JournaledIndex(
            path / _INDEX_FILE,
            path / _JOURNAL_FILE,
            _Index.load,
            fsync=fsync,
            name=f"collection {self.name!r}",
            journal_max=JOURNAL_MAX,
        )
        self._guard = self._journal.guard

    # -- reading ---------------------------------------------------------------------------

    def _index(self) -> _Index:
        """The index, up to date with the disk. Raises NotFound."""
        try:
            return self._journal.read()
        except NotFound:
            raise NotFound(f"no collection {self.name!r}") from None

    def info(self) -> CollectionInfo:
        with self._guard:
            index = self._index()
            sync, instance = index.sync, index.instance
        try:
            props = read_json(self.path / _PROPS_FILE)
        except FileNotFoundError:
            raise NotFound(f"no collection {self.name!r}") from None
        return CollectionInfo(self.name, props, sync, instance)

    def objects(self) -> list[ObjectMeta]:
        with self._guard:
            return list(self._index().objects.values())

    def by_uid(self, uid: str) -> ObjectMeta | None:
        """The object with this UID, if the collection has one."""
        with self._guard:
            index = self._index()
            name = index.by_uid.get(uid)
            return index.objects.get(name) if name is not None else None

    def get(self, name: str) -> ObjectMeta:
        with self._guard:
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
        with self._guard:
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
        simple: bool = False,
        if_match: str | None = None,
        if_none_match: bool = False,
        schedule_tag: ScheduleTagChange = None,
        if_schedule_tag: str | None = None,
    ) -> tuple[ObjectMeta, bool]:
        """Store a resource; returns its meta and whether it was created.

        ``schedule_tag`` (RFC 6638 §3.2.10): ``"new"`` gives the resource a fresh
        Schedule-Tag (a client's or an organizer's change), ``"keep"`` keeps the current one
        (a reply merged into the organizer's copy), None stores none (not a scheduling
        object resource).

        Raises:
            PreconditionFailed: ``if_match`` is not the current ETag, ``if_none_match``
                and the resource exists, or ``if_schedule_tag`` (If-Schedule-Tag-Match) is
                not the current Schedule-Tag.
            AlreadyExists: another resource of the collection has this UID.
        """
        name = _check_name(name)
        etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
        with self._lock.hold():
            with self._guard:
                index = self._refresh_locked()
                current = index.objects.get(name)
                if if_none_match and current is not None:
                    raise PreconditionFailed(f"{name} exists")
                if if_match is not None and (current is None or current.etag != if_match):
                    raise PreconditionFailed(f"{name} has changed (ETag mismatch)")
                _check_schedule_tag(current, if_schedule_tag)
                tag: str | None = None
                if schedule_tag == "keep" and current is not None:
                    tag = current.schedule_tag
                if schedule_tag is not None and tag is None:
                    tag = '"' + secrets.token_hex(8) + '"'
                holder = index.by_uid.get(uid)
                if holder is not None and holder != name:
                    raise AlreadyExists(f"UID {uid} is already used by {holder}")
                meta = ObjectMeta(
                    name,
                    uid,
                    etag,
                    len(data),
                    component,
                    start,
                    end,
                    recurring,
                    index.sync + 1,
                    simple,
                    tag,
                )
            atomic_write(self.path / _OBJECTS / name, data, fsync=self.fsync, mode=0o600)
            self._log(["p", name, meta.to_json()])
        return meta, current is None

    def delete(
        self, name: str, *, if_match: str | None = None, if_schedule_tag: str | None = None
    ) -> None:
        """Remove a resource. Raises NotFound, PreconditionFailed."""
        name = _check_name(name)
        with self._lock.hold():
            with self._guard:
                index = self._refresh_locked()
                _existing(index, name, if_match, if_schedule_tag)
                sync = index.sync
            self._log(["d", name, sync + 1])
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path / _OBJECTS / name)

    def move_to(
        self,
        name: str,
        target: Collection,
        new_name: str,
        *,
        overwrite: bool = True,
        if_match: str | None = None,
        if_schedule_tag: str | None = None,
    ) -> tuple[ObjectMeta, bool]:
        """Move a resource to ``target`` (this collection or another of the same user and
        kind) as ``new_name``, bytes, ETag and Schedule-Tag unchanged (WebDAV MOVE).

        The copy is written and logged in the target before the source's deletion is logged,
        so a crash between the two leaves the resource twice, never nowhere. Returns the
        moved resource's meta and whether ``new_name`` was created (False: replaced).

        Raises:
            NotFound: no resource ``name``.
            PreconditionFailed: ``if_match`` or ``if_schedule_tag`` is not the source's, or
                ``new_name`` exists and ``overwrite`` is false.
            AlreadyExists: another resource of the target has the same UID.
        """
        name, new_name = _check_name(name), _check_name(new_name)
        same = target.path == self.path
        collections = [self] if same else sorted((self, target), key=lambda c: str(c.path))
        with contextlib.ExitStack() as held:
            for collection in collections:
                held.enter_context(collection._lock.hold())
            with self._guard:
                meta = _existing(self._refresh_locked(), name, if_match, if_schedule_tag)
            if same and new_name == name:
                return meta, False
            with target._guard:
                index = target._refresh_locked()
                existing = index.objects.get(new_name)
                if existing is not None and not overwrite:
                    raise PreconditionFailed(f"{new_name} exists")
                holder = index.by_uid.get(meta.uid)
                if holder is not None and holder != new_name and not (same and holder == name):
                    raise AlreadyExists(f"UID {meta.uid} is already used by {holder}")
                moved = dataclasses.replace(meta, name=new_name, token=index.sync + 1)
            data = (self.path / _OBJECTS / name).read_bytes()
            atomic_write(target.path / _OBJECTS / new_name, data, fsync=self.fsync, mode=0o600)
            target._log(["p", new_name, moved.to_json()])
            with self._guard:
                sync = self._refresh_locked().sync
            self._log(["d", name, sync + 1])
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path / _OBJECTS / name)
        return moved, existing is None

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
            with self._guard:
                sync = self._refresh_locked().sync
            self._log(["s", sync + 1])
        return self.info()

    def _refresh_locked(self) -> _Index:
        """Under the lock: the index up to date, the journal ready for one more record."""
        try:
            return self._journal.prepare()
        except NotFound:
            raise NotFound(f"no collection {self.name!r}") from None

    def _log(self, record: list[Any]) -> None:
        """Under the lock: append one record (durable when ``fsync``), then read it back.

        The in-memory index is not held during the write, so readers in this process do
        not wait for the fdatasync; they may see the record as soon as it is in the file.
        """
        self._journal.append([record])


class DavStore:
    """The calendars (or address books) of one user."""

    def __init__(
        self, user_dir: Path, kind: Kind, *, fsync: bool = True, folder: str | None = None
    ) -> None:
        # ``folder``: another folder than ``kind`` under the user's directory (the
        # scheduling inbox lives in ``schedule/``, apart from the calendars).
        self.root = user_dir / (folder or kind)
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
        # The journal, then the snapshot last: its presence makes the collection exist.
        atomic_write(path / _JOURNAL_FILE, b'["h",0]\n', fsync=self.fsync)
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


def _existing(
    index: _Index, name: str, if_match: str | None, if_schedule_tag: str | None
) -> ObjectMeta:
    """The resource ``name`` about to be removed or moved, its preconditions checked.

    Raises:
        NotFound: no such resource.
        PreconditionFailed: ``if_match`` or ``if_schedule_tag`` is not the current one.
    """
    current = index.objects.get(name)
    if current is None:
        raise NotFound(f"no object {name!r}")
    if if_match is not None and current.etag != if_match:
        raise PreconditionFailed(f"{name} has changed (ETag mismatch)")
    _check_schedule_tag(current, if_schedule_tag)
    return current


def _check_schedule_tag(current: ObjectMeta | None, expected: str | None) -> None:
    """RFC 6638 §3.2.10 If-Schedule-Tag-Match: the current Schedule-Tag or a 412."""
    if expected is None:
        return
    if current is None or current.schedule_tag != expected.strip():
        raise PreconditionFailed("the Schedule-Tag does not match")
