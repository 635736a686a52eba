"""A user's file drive: folders and files under ``users/{user}/drive/files/``.

Layout::

    drive/_meta.json            ctag (changes on every write) and the drive's totals
    drive/files/                the root folder
    drive/files/**/_index.json  in every folder: its own counts, the recursive totals of
                                everything below it, and its children (type, size, etag,
                                mtime, content type)
    drive/files/**/_index.lock  the folder's flock

Every write changes the folder it touches and adds the difference to the totals of every
folder above it, so any folder's totals are read in O(1). A write holds the locks of the
folder and of each ancestor, taken from the deepest up (one order for every writer: no
deadlock), so concurrent writers keep the totals exact. File contents are written to a
temporary file in the same folder and renamed into place; ETags are SHA-256 hashes of the
content, computed while the bytes stream through.

Names: a path component may not be empty, ``.``/``..``, hold ``/``, ``\\``, NUL or another
control character, or be longer than 255 bytes; ``_index*``, ``_meta.json`` and ``*.tmp``
are reserved; a path has at most 64 components.
"""

from __future__ import annotations

import contextlib
import hashlib
import mimetypes
import os
import secrets
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Final

from rmail.errors import AlreadyExists, InvalidInput, NotFound, QuotaExceeded
from rmail.store.fsio import FileLock, atomic_write_json, fsync_dir, read_json

__all__ = ["Drive", "Entry", "PreconditionFailedError", "Totals", "content_type_of", "split_path"]

MAX_DEPTH: Final = 64
MAX_COMPONENT: Final = 255
_INDEX: Final = "_index.json"
_LOCK: Final = "_index.lock"
_CHUNK: Final = 1024 * 1024
_LISTING_CACHE: Final = 256  # folders whose parsed listing a Drive keeps


@dataclass(frozen=True, slots=True)
class Totals:
    files: int = 0
    dirs: int = 0
    bytes: int = 0

    def __add__(self, other: Totals) -> Totals:
        return Totals(self.files + other.files, self.dirs + other.dirs, self.bytes + other.bytes)

    def __neg__(self) -> Totals:
        return Totals(-self.files, -self.dirs, -self.bytes)

    def to_json(self) -> dict[str, int]:
        return {"files": self.files, "dirs": self.dirs, "bytes": self.bytes}

    @classmethod
    def from_json(cls, data: Any) -> Totals:
        data = data or {}
        return cls(int(data.get("files", 0)), int(data.get("dirs", 0)), int(data.get("bytes", 0)))


@dataclass(frozen=True, slots=True)
class Entry:
    name: str
    type: str  # "file" or "dir"
    size: int
    etag: str
    mtime: float
    content_type: str
    # Dead (client-set) properties: Clark name -> the property element as XML text.
    props: dict[str, str] = field(default_factory=dict, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "size": self.size,
            "etag": self.etag,
            "mtime": self.mtime,
            "content_type": self.content_type,
        }


def split_path(path: str) -> list[str]:
    """``a/b/c`` (leading and trailing ``/`` ignored) as checked components.

    Raises:
        InvalidInput: a bad or reserved component, or too deep.
    """
    parts = [p for p in path.strip("/").split("/")] if path.strip("/") else []
    if len(parts) > MAX_DEPTH:
        raise InvalidInput(f"paths have at most {MAX_DEPTH} components")
    for part in parts:
        _check(part)
    return parts


def _check(name: str) -> None:
    if not name or name in (".", ".."):
        raise InvalidInput(f"invalid name {name!r}")
    if any(ch in "/\\" or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in name):
        raise InvalidInput("a name may not hold '/', '\\\\' or control characters")
    if len(name.encode("utf-8", "surrogateescape")) > MAX_COMPONENT:
        raise InvalidInput(f"a name has at most {MAX_COMPONENT} bytes")
    if name.startswith("_index") or name == "_meta.json" or name.endswith(".tmp"):
        raise InvalidInput(f"{name!r} is a reserved name")


# Magic numbers sniffed when the name says nothing: only types a browser cannot be
# talked into running as script (no HTML, SVG or XML sniffing).
_MAGIC: Final = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"%PDF-", "application/pdf"),
    (b"PK\x03\x04", "application/zip"),
    (b"\x1f\x8b", "application/gzip"),
    (b"OggS", "audio/ogg"),
    (b"fLaC", "audio/flac"),
    (b"ID3", "audio/mpeg"),
)
_OCTETS: Final = "application/octet-stream"


def content_type_of(name: str, head: bytes = b"") -> str:
    """The type a name implies; for an unknown extension, what the first bytes show."""
    guessed, _ = mimetypes.guess_type(name, strict=False)
    if guessed and guessed != _OCTETS:  # ".bin" says octets: look at the bytes anyway
        return guessed
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[4:8] == b"ftyp":
        return "video/mp4"
    return _OCTETS


class Drive:
    """The drive of one user."""

    def __init__(
        self,
        root: Path,
        *,
        fsync: bool = True,
        quota: Any = None,
    ) -> None:
        """``root`` is ``users/{user}/drive``; ``quota()`` returns (quota bytes, bytes used
        elsewhere, e.g. by mail), or None for no quota."""
        self.root = root
        self.files = root / "files"
        self.fsync = fsync
        self._quota = quota
        self._locks: dict[str, FileLock] = {}
        # Parsed listings by folder, with the (inode, mtime, size) of the _index.json they
        # came from: an index is replaced by rename, so a changed file has a new inode.
        self._listings: dict[Path, tuple[tuple[int, int, int], list[Entry], Totals, Totals]] = {}

    # -- reading ---------------------------------------------------------------------------

    def _dir(self, parts: list[str]) -> Path:
        return self.files.joinpath(*parts)

    def _read_index(self, folder: Path) -> dict[str, Any]:
        try:
            data = read_json(folder / _INDEX)
        except FileNotFoundError:
            if folder == self.files:
                return {"self": {}, "total": {}, "children": {}}
            raise NotFound("no such folder") from None
        assert isinstance(data, dict)
        return data

    def stat(self, path: str) -> Entry:
        """The entry at ``path`` (the root is a dir named ``""``). Raises NotFound."""
        parts = split_path(path)
        if not parts:
            index = self._read_index(self.files)
            total = Totals.from_json(index.get("total"))
            props = dict(index.get("props") or {})
            return Entry("", "dir", total.bytes, self._meta_ctag(), 0.0, "", props)
        parent = self._read_index(self._dir(parts[:-1]))
        child = parent.get("children", {}).get(parts[-1])
        if child is None:
            raise NotFound(f"no such file or folder: /{'/'.join(parts)}")
        return _entry(parts[-1], child)

    def listing(self, path: str) -> tuple[list[Entry], Totals, Totals]:
        """A folder's children, its own counts and its recursive totals. Raises NotFound."""
        parts = split_path(path)
        if parts and self.stat(path).type != "dir":
            raise NotFound(f"not a folder: {path}")
        folder = self._dir(parts)
        try:
            st = os.stat(folder / _INDEX)
        except FileNotFoundError:
            self._read_index(folder)  # NotFound, unless the root before its first write
            return [], Totals(), Totals()
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        hit = self._listings.get(folder)
        if hit is not None and hit[0] == key:
            return list(hit[1]), hit[2], hit[3]
        index = self._read_index(folder)
        children = [_entry(name, c) for name, c in sorted(index.get("children", {}).items())]
        own, total = Totals.from_json(index.get("self")), Totals.from_json(index.get("total"))
        if len(self._listings) >= _LISTING_CACHE:
            self._listings.clear()
        self._listings[folder] = (key, children, own, total)
        return list(children), own, total

    def version(self, path: str) -> tuple[int, ...]:
        """A value that changes whenever the file or folder ``path`` (its entry or, for a
        folder, its listing) changes: the inode, mtime and size of its parent's and its own
        ``_index.json``. For caching what is rendered from them. Raises NotFound."""
        parts = split_path(path)
        key: list[int] = []
        folders = [self._dir(parts[:-1]), self._dir(parts)] if parts else [self.files]
        for folder in folders:
            try:
                st = os.stat(folder / _INDEX)
            except NotADirectoryError:
                key += [0, 0, 0]  # a file: its entry is in the parent's index
                continue
            except FileNotFoundError:
                if folder != self.files:
                    raise NotFound(f"no such file or folder: /{'/'.join(parts)}") from None
                key += [0, 0, 0]
                continue
            key += [st.st_ino, st.st_mtime_ns, st.st_size]
        return tuple(key)

    def open(self, path: str) -> tuple[BinaryIO, Entry]:
        """An open file and its entry. Raises NotFound (also for a folder)."""
        entry = self.stat(path)
        if entry.type != "file":
            raise NotFound(f"not a file: {path}")
        try:
            return open(self._dir(split_path(path)), "rb"), entry
        except FileNotFoundError:
            raise NotFound(f"no such file: {path}") from None

    def file_path(self, path: str) -> Path:
        """Where a file's bytes are (for sendfile). Raises NotFound."""
        entry = self.stat(path)
        if entry.type != "file":
            raise NotFound(f"not a file: {path}")
        return self._dir(split_path(path))

    def usage(self) -> int:
        """Bytes in the drive (the root's total: O(1))."""
        try:
            return Totals.from_json(read_json(self.files / _INDEX).get("total")).bytes
        except FileNotFoundError:
            return 0

    def _meta_ctag(self) -> str:
        try:
            return str(read_json(self.root / "_meta.json").get("ctag", ""))
        except FileNotFoundError:
            return ""

    def walk(self, path: str) -> Iterator[tuple[str, Entry]]:
        """Every entry below ``path`` (depth first), with its path relative to the drive."""
        children, _, _ = self.listing(path)
        base = "/".join(split_path(path))
        for child in children:
            child_path = f"{base}/{child.name}" if base else child.name
            yield child_path, child
            if child.type == "dir":
                yield from self.walk(child_path)

    # -- locking and propagation ---------------------------------------------------------

    def _lock(self, folder: Path) -> FileLock:
        key = str(folder)
        lock = self._locks.get(key)
        if lock is None:
            if len(self._locks) > 4096:
                self._locks.clear()
            lock = self._locks[key] = FileLock(folder / _LOCK)
        return lock

    @contextlib.contextmanager
    def _chain(self, parts: list[str]) -> Iterator[None]:
        """Hold the locks of the folder ``parts`` and of every folder above it."""
        self.files.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as stack:
            for depth in range(len(parts), -1, -1):
                folder = self._dir(parts[:depth])
                if not folder.is_dir():
                    raise NotFound(f"no such folder: /{'/'.join(parts[:depth])}")
                stack.enter_context(self._lock(folder).hold())
            yield

    def _propagate(self, parts: list[str], delta: Totals) -> None:
        """Add ``delta`` to the totals of folder ``parts`` and of each ancestor (locked)."""
        for depth in range(len(parts), -1, -1):
            folder = self._dir(parts[:depth])
            index = self._read_index(folder)
            index["total"] = (Totals.from_json(index.get("total")) + delta).to_json()
            atomic_write_json(folder / _INDEX, index, fsync=self.fsync)
        meta_path = self.root / "_meta.json"
        try:
            meta = read_json(meta_path)
        except FileNotFoundError:
            meta = {}
        meta["ctag"] = f"{int(time.time() * 1000)}-{secrets.token_hex(4)}"
        meta["sync_token"] = int(meta.get("sync_token", 0)) + 1
        root_total = Totals.from_json(self._read_index(self.files).get("total"))
        meta["totals"] = root_total.to_json()
        atomic_write_json(meta_path, meta, fsync=self.fsync)

    def _set_child(self, parts: list[str], name: str, child: dict[str, Any] | None) -> Totals:
        """Replace (or remove, None) a child of folder ``parts`` and update the folder's own
        counts; returns the change in those direct counts. The caller propagates."""
        folder = self._dir(parts)
        index = self._read_index(folder)
        children = index.setdefault("children", {})
        change = _direct(child) + -_direct(children.get(name))
        if child is None:
            children.pop(name, None)
        else:
            children[name] = child
        index["self"] = (Totals.from_json(index.get("self")) + change).to_json()
        atomic_write_json(folder / _INDEX, index, fsync=self.fsync)
        return change

    def _check_quota(self, incoming: int) -> None:
        if self._quota is None or incoming <= 0:
            return
        limits = self._quota()
        if limits is None:
            return
        quota, elsewhere = limits
        used = self.usage() + elsewhere
        if quota > 0 and used + incoming > quota:
            raise QuotaExceeded(f"over quota: {used + incoming} bytes of {quota}")

    # -- writing ---------------------------------------------------------------------------

    def write(
        self,
        path: str,
        chunks: Iterable[bytes],
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
        size_hint: int | None = None,
        make_parents: bool = True,
        props: dict[str, str] | None = None,
    ) -> tuple[Entry, bool]:
        """Store a file from ``chunks`` (streamed to disk); returns its entry and whether it
        is new. Parents are created when missing. A replaced file keeps its dead properties
        unless ``props`` gives new ones.

        Raises:
            InvalidInput: bad path, or a folder is in the way.
            PreconditionFailedError: ``if_match`` is not the current ETag.
            AlreadyExists: ``if_none_match`` and the file exists.
            QuotaExceeded: no room (checked as the bytes arrive, and again at the end).
        """
        parts = split_path(path)
        if not parts:
            raise InvalidInput("a file needs a name")
        try:
            replaced = self.stat(path).size  # an overwrite needs room for the difference
        except NotFound:
            replaced = 0
        if size_hint is not None:
            self._check_quota(size_hint - replaced)
        self.files.mkdir(parents=True, exist_ok=True)
        if make_parents:
            self.make_folders(parts[:-1])
        folder = self._dir(parts[:-1])
        if not folder.is_dir():
            raise NotFound(f"no such folder: /{'/'.join(parts[:-1])}")
        tmp = folder / f".{secrets.token_hex(8)}.upload.tmp"
        digest = hashlib.sha256()
        size = 0
        head = b""
        try:
            with open(tmp, "wb") as out:
                for chunk in chunks:
                    if len(head) < 16:
                        head += chunk[: 16 - len(head)]
                    size += len(chunk)
                    if size_hint is None or size > size_hint:
                        self._check_quota(size - replaced)
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                if self.fsync:
                    os.fsync(out.fileno())
            etag = '"' + digest.hexdigest()[:40] + '"'
            with self._chain(parts[:-1]):
                index = self._read_index(folder)
                current = index.get("children", {}).get(parts[-1])
                if current is not None and current["type"] == "dir":
                    raise InvalidInput(f"a folder is in the way: /{'/'.join(parts)}")
                if if_none_match and current is not None:
                    raise AlreadyExists(f"/{'/'.join(parts)} exists")
                if if_match is not None and (current is None or current.get("etag") != if_match):
                    raise PreconditionFailedError(f"/{'/'.join(parts)} has changed")
                grow = size - (int(current["size"]) if current else 0)
                self._check_quota(grow)
                os.replace(tmp, folder / parts[-1])
                if self.fsync:
                    fsync_dir(folder)
                now = time.time()
                kind = content_type_of(parts[-1], head)
                child = {
                    "type": "file",
                    "size": size,
                    "etag": etag,
                    "mtime": now,
                    "content_type": kind,
                }
                kept = dict(current.get("props") or {}) if current else {}
                if props is not None:
                    kept = dict(props)
                if kept:
                    child["props"] = kept
                delta = self._set_child(parts[:-1], parts[-1], child)
                self._propagate(parts[:-1], delta)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return Entry(parts[-1], "file", size, etag, now, kind, kept), current is None

    def make_folders(self, parts: list[str]) -> None:
        """Create the folders of ``parts`` that are missing (like ``mkdir -p``)."""
        for depth in range(1, len(parts) + 1):
            with contextlib.suppress(AlreadyExists):
                self._mkdir(parts[:depth], exist_ok=True)

    def mkdir(self, path: str) -> Entry:
        """Create one folder (its parent must exist). Raises AlreadyExists, NotFound."""
        parts = split_path(path)
        if not parts:
            raise AlreadyExists("the root folder exists")
        return self._mkdir(parts, exist_ok=False)

    def _mkdir(
        self, parts: list[str], *, exist_ok: bool, props: dict[str, str] | None = None
    ) -> Entry:
        parent = self._dir(parts[:-1])
        with self._chain(parts[:-1]):
            index = self._read_index(parent)
            current = index.get("children", {}).get(parts[-1])
            if current is not None:
                if current["type"] == "dir" and exist_ok:
                    return Entry(parts[-1], "dir", 0, "", float(current.get("mtime", 0)), "")
                if current["type"] != "dir":
                    raise InvalidInput(f"a file is in the way: /{'/'.join(parts)}")
                raise AlreadyExists(f"/{'/'.join(parts)} exists")
            folder = parent / parts[-1]
            folder.mkdir(exist_ok=True)
            atomic_write_json(
                folder / _INDEX, {"self": {}, "total": {}, "children": {}}, fsync=self.fsync
            )
            now = time.time()
            child: dict[str, Any] = {
                "type": "dir",
                "size": 0,
                "etag": "",
                "mtime": now,
                "content_type": "",
            }
            if props:
                child["props"] = dict(props)
            delta = self._set_child(parts[:-1], parts[-1], child)
            self._propagate(parts[:-1], delta)
        return Entry(parts[-1], "dir", 0, "", now, "", dict(props or {}))

    def delete(self, path: str, *, if_match: str | None = None) -> Totals:
        """Remove a file or a whole folder. Returns what was removed. Raises NotFound."""
        parts = split_path(path)
        if not parts:
            raise InvalidInput("the root folder cannot be deleted")
        parent = self._dir(parts[:-1])
        with self._chain(parts[:-1]):
            index = self._read_index(parent)
            current = index.get("children", {}).get(parts[-1])
            if current is None:
                raise NotFound(f"no such file or folder: /{'/'.join(parts)}")
            if if_match is not None and current.get("etag") != if_match:
                raise PreconditionFailedError(f"/{'/'.join(parts)} has changed")
            removed = _direct(current)
            if current["type"] == "dir":
                below = self._read_index(parent / parts[-1]).get("total")
                removed = removed + Totals.from_json(below)
            self._set_child(parts[:-1], parts[-1], None)
            self._propagate(parts[:-1], -removed)
            target = parent / parts[-1]
            if current["type"] == "dir":
                graveyard = parent / f".{secrets.token_hex(8)}.deleted.tmp"
                os.rename(target, graveyard)
                shutil.rmtree(graveyard, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    target.unlink()
            if self.fsync:
                fsync_dir(parent)
        return removed

    def move(self, source: str, target: str, *, overwrite: bool = True) -> tuple[Entry, bool]:
        """Rename a file or folder (any depth). Returns the new entry and whether the target
        was created (False: it replaced something). Raises NotFound, AlreadyExists."""
        src, dst = split_path(source), split_path(target)
        if not src or not dst:
            raise InvalidInput("the root folder cannot be moved")
        if dst[: len(src)] == src:
            raise InvalidInput("a folder cannot be moved into itself")
        entry = self.stat(source)
        self.make_folders(dst[:-1])
        replaced = False
        try:
            existing = self.stat(target)
        except NotFound:
            existing = None
        if existing is not None:
            if not overwrite:
                raise AlreadyExists(f"/{'/'.join(dst)} exists")
            self.delete(target)
            replaced = True
        moved = self._subtree(src, entry)
        src_parent, dst_parent = self._dir(src[:-1]), self._dir(dst[:-1])
        # Take both chains in one deepest-first order (sorted by depth, then path).
        chains = {tuple(src[:d]) for d in range(len(src))}
        chains |= {tuple(dst[:d]) for d in range(len(dst))}
        order = sorted(chains, key=lambda p: (-len(p), p))
        with contextlib.ExitStack() as stack:
            for folder_parts in order:
                stack.enter_context(self._lock(self._dir(list(folder_parts))).hold())
            src_index = self._read_index(src_parent)
            child = src_index.get("children", {}).get(src[-1])
            if child is None:
                raise NotFound(f"no such file or folder: /{'/'.join(src)}")
            dst_index = self._read_index(dst_parent)
            if dst[-1] in dst_index.get("children", {}):
                raise AlreadyExists(f"/{'/'.join(dst)} exists")
            os.rename(src_parent / src[-1], dst_parent / dst[-1])
            if child["type"] == "file":
                kind = content_type_of(dst[-1])
                if kind == _OCTETS:
                    kind = str(child.get("content_type") or _OCTETS)
                child = {**child, "content_type": kind, "mtime": time.time()}
            self._set_child(src[:-1], src[-1], None)
            self._propagate(src[:-1], -moved)
            self._set_child(dst[:-1], dst[-1], child)
            self._propagate(dst[:-1], moved)
            if self.fsync:
                fsync_dir(src_parent)
                fsync_dir(dst_parent)
        return self.stat(target), not replaced

    def copy(
        self, source: str, target: str, *, overwrite: bool = True, recursive: bool = True
    ) -> tuple[Entry, bool]:
        """Copy a file or folder (with everything below it unless not ``recursive``), dead
        properties included. Returns the new entry and whether it is new.

        Raises:
            NotFound: no source.
            AlreadyExists: the target exists and not ``overwrite``.
            InvalidInput: a folder onto or into itself.
        """
        src, dst = split_path(source), split_path(target)
        if not dst:
            raise InvalidInput("cannot copy onto the root folder")
        if dst[: len(src)] == src:
            raise InvalidInput("a folder cannot be copied into itself")
        entry = self.stat(source)
        replaced = False
        try:
            self.stat(target)
            if not overwrite:
                raise AlreadyExists(f"/{'/'.join(dst)} exists")
            self.delete(target)
            replaced = True
        except NotFound:
            pass
        if entry.type == "file":
            self._check_quota(entry.size)
            with open(self._dir(src), "rb") as f:
                self.write(target, _chunks(f), props=entry.props)
            return self.stat(target), not replaced
        if recursive:
            self._check_quota(self._subtree(src, entry).bytes)
        self.make_folders(dst[:-1])
        self._mkdir(dst, exist_ok=False, props=entry.props)
        if recursive:
            for rel, child in list(self.walk(source)):
                dest = "/".join([*dst, *split_path(rel)[len(src) :]])
                if child.type == "dir":
                    self._mkdir(split_path(dest), exist_ok=False, props=child.props)
                else:
                    with open(self._dir(split_path(rel)), "rb") as f:
                        self.write(dest, _chunks(f), props=child.props)
        return self.stat(target), not replaced

    def adopt(self, path: str) -> Totals:
        """Index the files put straight into folder ``path`` by other means (a restore,
        rsync, a bulk import): each regular file there that its ``_index.json`` does not
        list is hashed and added, in one index write. Folders and symlinks are left alone.
        Returns what was added. Raises NotFound.
        """
        parts = split_path(path)
        folder = self._dir(parts)
        with self._chain(parts):
            index = self._read_index(folder)
            children = index.setdefault("children", {})
            added = Totals()
            for item in sorted(os.scandir(folder), key=lambda e: e.name):
                try:
                    _check(item.name)
                except InvalidInput:
                    continue
                if item.name in children or not item.is_file(follow_symlinks=False):
                    continue
                digest = hashlib.sha256()
                head = b""
                with open(item.path, "rb") as f:
                    for chunk in _chunks(f):
                        head = head or chunk[:16]
                        digest.update(chunk)
                stat = item.stat(follow_symlinks=False)
                children[item.name] = {
                    "type": "file",
                    "size": stat.st_size,
                    "etag": '"' + digest.hexdigest()[:40] + '"',
                    "mtime": stat.st_mtime,
                    "content_type": content_type_of(item.name, head),
                }
                added = added + Totals(1, 0, stat.st_size)
            self._check_quota(added.bytes)
            index["self"] = (Totals.from_json(index.get("self")) + added).to_json()
            atomic_write_json(folder / _INDEX, index, fsync=self.fsync)
            self._propagate(parts, added)
        return added

    # -- dead properties -------------------------------------------------------------------

    def set_props(self, path: str, changes: Iterable[tuple[str, str | None]]) -> Entry:
        """Apply property changes in order (value None removes the property) at once.

        The properties of a file or folder live in its entry in the parent's _index.json
        (the root's in the root index under ``props``). Raises NotFound.
        """
        parts = split_path(path)
        folder = self._dir(parts[:-1]) if parts else self.files
        with self._chain(parts[:-1] if parts else []):
            index = self._read_index(folder)
            if parts:
                holder = index.get("children", {}).get(parts[-1])
                if holder is None:
                    raise NotFound(f"no such file or folder: /{'/'.join(parts)}")
            else:
                holder = index
            props = dict(holder.get("props") or {})
            for name, value in changes:
                if value is None:
                    props.pop(name, None)
                else:
                    props[name] = value
            if props:
                holder["props"] = props
            else:
                holder.pop("props", None)
            atomic_write_json(folder / _INDEX, index, fsync=self.fsync)
        return self.stat(path)

    def quota(self) -> tuple[int, int | None]:
        """Bytes used by the drive, and bytes still free (None: no quota)."""
        used = self.usage()
        limits = self._quota() if self._quota is not None else None
        if limits is None or limits[0] <= 0:
            return used, None
        quota, elsewhere = limits
        return used, max(0, quota - used - elsewhere)

    def _subtree(self, parts: list[str], entry: Entry) -> Totals:
        if entry.type == "file":
            return Totals(1, 0, entry.size)
        return Totals.from_json(self._read_index(self._dir(parts)).get("total")) + Totals(0, 1, 0)


class PreconditionFailedError(InvalidInput):
    """If-Match did not hold (HTTP 412)."""


def _chunks(f: BinaryIO) -> Iterator[bytes]:
    while chunk := f.read(_CHUNK):
        yield chunk


def _entry(name: str, child: dict[str, Any]) -> Entry:
    return Entry(
        name,
        str(child["type"]),
        int(child.get("size", 0)),
        str(child.get("etag", "")),
        float(child.get("mtime", 0)),
        str(child.get("content_type", "")),
        dict(child.get("props") or {}),
    )


def _direct(child: dict[str, Any] | None) -> Totals:
    """What one child adds to its folder's own counts."""
    if child is None:
        return Totals()
    if child["type"] == "file":
        return Totals(1, 0, int(child.get("size", 0)))
    return Totals(0, 1, 0)
