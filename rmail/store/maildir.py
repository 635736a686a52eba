"""A user's mail: Maildir++ folders, each with its :class:`~rmail.store.mailindex.MailIndex`.

Layout under ``users/{user}/mail/``: INBOX is the root (``cur/ new/ tmp/``); folder ``A/B`` is
the directory ``.A.B``. Folder names are Unicode with ``/`` as the hierarchy separator; on
disk each component is UTF-8 with ``%`` and ``.`` written as ``%25`` and ``%2E`` (so a dot in
a name is not taken for the Maildir++ separator). ``subscriptions.json`` lists subscribed
folders, ``special-use.json`` maps folders to their RFC 6154 attribute, ``uidvalidity`` holds
the last UIDVALIDITY handed out.

Message files are standard Maildir files with CRLF line endings (what IMAP serves byte for
byte); a new message goes to ``new/``; once its flags change it lives in
``cur/{base}:2,{letters}``. The index is authoritative for flags; the file name mirrors them.
Each folder also has ``headers.cache`` (see ``headercache.py``): the header fields clients
list and search by, written as messages are stored, so that those need no message file.

Invariants:

- a message file is complete and fsynced in ``new/`` or ``cur/`` before the index names it,
  so a reader that finds a UID always finds its file;
- COPY and MOVE hard-link (one copy of the bytes); MOVE indexes the copy before it expunges
  the original, so a crash leaves a duplicate, never a loss;
- folder create, rename and delete hold the user's ``.folders.lock``; a deleted folder is
  renamed out of sight first, then removed.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from rmail.errors import (
    AlreadyExists,
    InvalidInput,
    NotFound,
    QuotaExceeded,
    RmailError,
    TemporaryFailure,
)
from rmail.store.fsio import (
    FileLock,
    atomic_write_json,
    fsync_dir,
    read_json,
    unique_name,
)
from rmail.store.headercache import HeaderCache, HeaderValues, header_values
from rmail.store.mailindex import (
    IN_NEW,
    FlagOp,
    MailIndex,
    MessageMeta,
    flags_to_mask,
)

__all__ = [
    "DEFAULT_FOLDERS",
    "Folder",
    "FolderInfo",
    "Mailbox",
    "normalize_crlf",
    "normalize_folder_name",
]

logger = logging.getLogger(__name__)

INBOX: Final = "INBOX"
# RFC 6154 special-use folders every new account gets.
DEFAULT_FOLDERS: Final[dict[str, str]] = {
    "Drafts": "\\Drafts",
    "Sent": "\\Sent",
    "Trash": "\\Trash",
    "Junk": "\\Junk",
    "Archive": "\\Archive",
}
SPECIAL_USE: Final = frozenset(
    {"\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash"}
)
# One Maildir++ directory holds the whole encoded path, so the whole name must fit in one
# file name (NAME_MAX 255) with room for the leading dot.
MAX_FOLDER_BYTES: Final = 250
# The quota check runs for every delivery, so it works from memory: the folder list and
# each folder's size may lag changes made by *other* processes (another server, `rmail
# deliver`, a mail client on the same files) by up to this many seconds. Changes made through
# this Mailbox are seen at once.
QUOTA_STALE_SECONDS: Final = 2.0
# ... and the mail dir itself is stat'ed for new, renamed or deleted folders at most this often.
_NAMES_RECHECK: Final = 0.1
# Group commit: how long a leader waits for callers of this process still writing their
# message files into the same folder, to index them with its own batch (see Folder._commit).
GROUP_COMMIT_WAIT: Final = 0.002
# A header block is read in pieces of this size until its blank line.
_HEADER_CHUNK: Final = 16384
_BARE_LF = re.compile(rb"(?<!\r)\n")


def normalize_crlf(data: bytes) -> bytes:
    """Line endings as CRLF (RFC 5322 §2.3); bytes already in CRLF come back unchanged."""
    if data.count(b"\n") == data.count(b"\r\n"):
        return data
    return _BARE_LF.sub(b"\r\n", data)


def normalize_folder_name(name: str) -> str:
    """Check a folder name and return its canonical form (``inbox`` -> ``INBOX``).

    Raises:
        InvalidInput: empty component (``a//b``, leading or trailing ``/``), ``.`` or ``..``
            as a component, control characters or NUL, or too long.
    """
    if name == INBOX:
        return INBOX  # the common case (every delivery), valid as it is
    if not name:
        raise InvalidInput("folder name is empty")
    parts = name.split("/")
    if parts[0].upper() == INBOX:
        parts[0] = INBOX
    for part in parts:
        if not part:
            raise InvalidInput(f"invalid folder name {name!r}: empty hierarchy level")
        if part in {".", ".."}:
            raise InvalidInput(f"invalid folder name {name!r}: '.' and '..' are not names")
        if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in part):
            raise InvalidInput("invalid folder name: control characters are not allowed")
        if "\\" in part:
            raise InvalidInput("invalid folder name: '\\' is not allowed")
    canonical = "/".join(parts)
    if len(_encode(canonical).encode("utf-8", "surrogateescape")) > MAX_FOLDER_BYTES:
        raise InvalidInput(f"invalid folder name: longer than {MAX_FOLDER_BYTES} bytes on disk")
    return canonical


def _encode(name: str) -> str:
    """Folder name -> Maildir++ directory name (without the INBOX special case)."""
    return "." + ".".join(p.replace("%", "%25").replace(".", "%2E") for p in name.split("/"))


def _decode(dirname: str) -> str:
    return "/".join(
        p.replace("%2E", ".").replace("%2e", ".").replace("%25", "%")
        for p in dirname[1:].split(".")
    )


@dataclass(frozen=True, slots=True)
class FolderInfo:
    """A folder as LIST shows it."""

    name: str
    special_use: str | None
    has_children: bool
    subscribed: bool


_Row = tuple[str, int, Sequence[str], int, int]  # MailIndex.add_many: base, mask, kw, size, date


class _Commit:
    """One caller's files waiting to be indexed by :meth:`Folder._commit`.

    ``wake`` is held from the start; whoever settles the request (or makes it the next
    leader) releases it, which is what its waiting caller blocks on.
    """

    __slots__ = ("done", "error", "metas", "placed", "rows", "wake")

    def __init__(self, placed: list[str], rows: list[_Row]) -> None:
        self.placed = placed
        self.rows = rows
        self.done = False
        self.metas: list[MessageMeta] = []
        self.error: BaseException | None = None
        self.wake = threading.Lock()
        self.wake.acquire()


class _Writing:
    """A caller of :meth:`Folder._commit` still writing its files; stopped exactly once."""

    __slots__ = ("folder", "stopped")

    def __init__(self, folder: Folder) -> None:
        self.folder = folder
        self.stopped = False

    def stop_locked(self) -> None:
        """Stop counting this writer (the caller holds the folder's commit lock)."""
        if not self.stopped:
            self.stopped = True
            folder = self.folder
            folder._writers -= 1
            if folder._writers == 0 and folder._leader_wake is not None:
                # The leader waiting for the writers need not wait any more.
                folder._leader_wake.release()
                folder._leader_wake = None

    def stop(self) -> None:
        with self.folder._commit_lock:
            self.stop_locked()

    def abandon(self, placed: list[str]) -> None:
        """Stop, and remove the files this writer placed (its commit failed or never ran)."""
        self.stop()
        for path in placed:
            with contextlib.suppress(OSError):
                os.unlink(path)


class Folder:
    """One folder: its directory, its index and the operations on its messages."""

    def __init__(self, mailbox: Mailbox, name: str, path: Path, index: MailIndex) -> None:
        self.mailbox = mailbox
        self.name = name
        self.dir = path
        self.index = index
        self.headers = HeaderCache(path)
        self._dir_str = os.fspath(path)  # for the paths of every append (cheaper than pathlib)
        # Group commit (see _commit), under _commit_lock: callers writing files, requests
        # waiting for a leader, whether a leader runs, and the lock a leader waiting for
        # the writers blocks on (released by the last writer to finish).
        self._commit_lock = threading.Lock()
        self._writers = 0
        self._commit_queue: list[_Commit] = []
        self._committing = False
        self._leader_wake: threading.Lock | None = None

    # -- reading ---------------------------------------------------------------------------

    def refresh(self) -> MailIndex:
        """Bring the index up to date with the disk and return it."""
        self.index.refresh()
        return self.index

    def message_path(self, meta: MessageMeta) -> Path:
        """Where the message file is now.

        Raises:
            NotFound: the file is gone (expunged meanwhile, or removed behind our back).
        """
        path = self.dir / meta.relpath
        if path.exists():
            return path
        found = self._find(meta.base)
        if found is None:
            raise NotFound(f"message file of UID {meta.uid} is missing")
        return found

    def open_message(self, meta: MessageMeta) -> io.FileIO:
        """The message file opened for reading (binary, unbuffered).

        Raises:
            NotFound: the file is gone (expunged meanwhile, or removed behind our back).
        """
        return io.FileIO(self._open_fd(meta))

    def _open_fd(self, meta: MessageMeta) -> int:
        """A descriptor of the message file, opened for reading.

        Opens the path the index names first and looks further only when that fails, so a
        read costs one ``open`` (no ``stat`` before it).
        """
        flags = os.O_RDONLY | os.O_CLOEXEC
        for _attempt in range(3):
            try:
                return os.open(f"{self._dir_str}/{meta.relpath}", flags)
            except FileNotFoundError:
                pass
            try:
                found = self._find(meta.base)
                if found is None:
                    break
                return os.open(found, flags)
            except FileNotFoundError:
                continue  # renamed by a flag change between lookup and open
        raise NotFound(f"message file of UID {meta.uid} is missing")

    def read_message(self, meta: MessageMeta) -> bytes:
        """The whole message of an index entry the caller already has. Raises NotFound."""
        fd = self._open_fd(meta)
        try:
            # The index knows the size: one read, and no stat or read of the end, when the
            # file is that size (message files never change); otherwise read to the end.
            data = os.read(fd, meta.size + 1)
            if len(data) == meta.size:
                return data
            parts = [data]
            while chunk := os.read(fd, 1 << 20):
                parts.append(chunk)
            return b"".join(parts)
        finally:
            os.close(fd)

    def read_header(self, meta: MessageMeta) -> bytes:
        """The message's header block, blank line included (the whole file if it has none).

        Raises:
            NotFound: the file is gone.
        """
        with self.open_message(meta) as f:
            data = b""
            while True:
                chunk = f.read(_HEADER_CHUNK)
                data += chunk
                end = data.find(b"\r\n\r\n")
                if end >= 0:
                    return data[: end + 4]
                if len(chunk) < _HEADER_CHUNK:
                    return data

    def header_values(self, meta: MessageMeta) -> HeaderValues:
        """The message's cached header fields (``store.headercache.CACHED_FIELDS``).

        Read from its file (and cached) when the cache has no record of it.

        Raises:
            NotFound: no record, and the file is gone.
        """
        found = self.headers.get(meta.base)
        if found is None:
            found = header_values(self.read_header(meta))
            self.headers.put_many([(meta.base, found)])
        return found

    def _find(self, base: str) -> Path | None:
        """The file of ``base`` whatever its flags or subfolder (another program renamed it)."""
        for sub in ("new", "cur", "tmp"):
            candidate = self.dir / sub / base
            if candidate.exists():
                return candidate
        prefix = base + ":"
        with os.scandir(self.dir / "cur") as entries:
            for entry in entries:
                if entry.name.startswith(prefix):
                    return Path(entry.path)
        return None

    def read(self, uid: int) -> bytes:
        """The whole message. Raises NotFound."""
        return self.read_message(self.index.get(uid))

    # -- writing ---------------------------------------------------------------------------

    def append(
        self,
        data: bytes,
        flags: Iterable[str] = (),
        date: int | None = None,
        *,
        check_quota: bool = True,
    ) -> MessageMeta:
        """Store a message: file written and fsynced, then indexed.

        Raises:
            QuotaExceeded: the account has no room for it.
            TemporaryFailure: the disk refused the write.
        """
        return self.append_many([(data, tuple(flags), date)], check_quota=check_quota)[0]

    def append_many(
        self,
        items: Sequence[tuple[bytes, Sequence[str], int | None]],
        *,
        check_quota: bool = True,
    ) -> list[MessageMeta]:
        """Append several messages atomically as a group (RFC 3502 MULTIAPPEND).

        Either every message is indexed or none is. ``check_quota=False`` is for a caller
        that has just checked the quota itself (local delivery).
        """
        prepared = [(normalize_crlf(data), flags, date) for data, flags, date in items]
        if check_quota:
            self.mailbox.check_quota(sum(len(d) for d, _, _ in prepared))
        placed: list[str] = []
        rows: list[_Row] = []
        writing = self._start_writing()
        try:
            for data, flags, date in prepared:
                dest, row = self._place(data, flags, date)
                placed.append(dest)
                rows.append(row)
            metas = self._index_placed(placed, rows, [d for d, _, _ in prepared], writing)
        except BaseException:
            writing.abandon(placed)
            raise
        return metas

    def append_each(self, messages: Sequence[bytes]) -> list[MessageMeta | RmailError]:
        """Store independent messages with one shared commit (local delivery of a batch).

        Unlike :meth:`append_many`, a message whose file cannot be written fails alone
        (its entry is the error); the others are indexed together: one fsync of the
        directory and one journal write for all of them, as a group commit would give
        concurrent :meth:`append` calls, without a thread per message. When that commit
        fails, it raises and nothing is indexed. The quota is not checked: the caller
        (delivery) has done it for the whole batch.

        Raises:
            TemporaryFailure: the shared commit failed (every file written is removed).
        """
        outcomes: list[MessageMeta | RmailError] = []
        placed: list[str] = []
        rows: list[_Row] = []
        datas: list[bytes] = []
        writing = self._start_writing()
        try:
            for message in messages:
                data = normalize_crlf(message)
                try:
                    dest, row = self._place(data, (), None)
                except RmailError as exc:
                    outcomes.append(exc)
                    continue
                outcomes.append(MessageMeta(0, "", 0, (), 0, 0, 0))  # filled in below
                placed.append(dest)
                rows.append(row)
                datas.append(data)
            metas = iter(self._index_placed(placed, rows, datas, writing) if placed else ())
            if not placed:
                writing.stop()
        except BaseException:
            writing.abandon(placed)
            raise
        return [o if isinstance(o, RmailError) else next(metas) for o in outcomes]

    def _place(self, data: bytes, flags: Sequence[str], date: int | None) -> tuple[str, _Row]:
        """Write one message file (complete and fsynced) and rename it into new/ or cur/;
        returns its path there and its index row. Not indexed yet (see :meth:`_commit`)."""
        mask, keywords = flags_to_mask(flags)
        base = unique_name(self.mailbox.hostname)
        tmp = f"{self._dir_str}/tmp/{base}"
        self.mailbox.write_file(tmp, data)
        # Untouched mail goes to new/ (Maildir); mail stored with flags, to cur/.
        mask = mask or IN_NEW
        dest = f"{self._dir_str}/{MessageMeta(0, base, mask, (), 0, 0, 0).relpath}"
        try:
            os.rename(tmp, dest)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise TemporaryFailure(f"cannot store message: {exc.strerror}") from exc
        return dest, (base, mask, keywords, len(data), int(date or time.time()))

    def _index_placed(
        self, placed: list[str], rows: list[_Row], datas: list[bytes], writing: _Writing
    ) -> list[MessageMeta]:
        """Header-cache records, then :meth:`_commit`, for files :meth:`_place` wrote."""
        # Before the index names them, so that whoever finds a UID finds its record.
        self.headers.put_many(
            [(row[0], header_values(data)) for row, data in zip(rows, datas, strict=True)]
        )
        return self._commit(placed, rows, writing)

    def _start_writing(self) -> _Writing:
        """Count a caller that is about to write files it will :meth:`_commit` (see there)."""
        with self._commit_lock:
            self._writers += 1
        return _Writing(self)

    def _commit(self, placed: list[str], rows: list[_Row], writing: _Writing) -> list[MessageMeta]:
        """Make ``placed`` files (complete and fsynced, renamed into new/ or cur/) durable
        in their directories, then index them as ``rows``; returns their new metadata.

        Group commit (leader/follower) for threads of this process appending to this folder
        at once: the first caller to find no commit running becomes the leader and commits
        every request queued so far in one go: one fsync per directory that received files,
        then one journal write with one fdatasync (:meth:`MailIndex.add_many`) under one
        flock. Before it takes the queue, a leader waits up to ``GROUP_COMMIT_WAIT`` for
        callers still writing their files (counted by :meth:`_start_writing`): their files
        are nearly done, and otherwise each would need a commit of its own right after this
        one. Callers that arrive while a commit runs queue up and sleep; when the leader is
        done it wakes the members of its batch and hands the lead to the oldest request
        left, which commits the next batch. Each caller returns only once its own files and
        index records are durable. A batch is indexed whole or not at all, so a failure is
        every member's: each gets the error (followers a copy of it) and removes its own
        files. Other processes are excluded by the index flock as before.
        """
        request = _Commit(placed, rows)
        with self._commit_lock:
            self._commit_queue.append(request)
            writing.stop_locked()
            leader = not self._committing
            self._committing = True
        if not leader:
            request.wake.acquire()  # until settled, or made the next leader
            if request.done:
                return _outcome(request)
        return self._lead(request)

    def _lead(self, request: _Commit) -> list[MessageMeta]:
        """Commit a batch as its leader (see :meth:`_commit`), then pass the lead on."""
        batch = [request]
        try:
            batch = self._gather()
            self._sync_dirs(path for member in batch for path in member.placed)
            metas = self.index.add_many([row for member in batch for row in member.rows])
        except BaseException as exc:
            with self._commit_lock:
                if request in self._commit_queue:  # failed before taking the queue
                    self._commit_queue.remove(request)
            for member in batch:
                member.error = exc
            raise
        else:
            start = 0
            for member in batch:
                member.metas = metas[start : start + len(member.rows)]
                start += len(member.rows)
        finally:
            with self._commit_lock:
                for member in batch:
                    member.done = True
                successor = self._commit_queue[0] if self._commit_queue else None
                self._committing = successor is not None
            for member in batch:
                if member is not request:
                    member.wake.release()
            if successor is not None:
                successor.wake.release()  # not done: it leads the next batch
        return request.metas

    def _gather(self) -> list[_Commit]:
        """Take the queue, once the callers still writing have joined it (or time is up)."""
        deadline = time.monotonic() + GROUP_COMMIT_WAIT
        while True:
            with self._commit_lock:
                remaining = deadline - time.monotonic()
                if self._writers == 0 or remaining <= 0:
                    self._leader_wake = None
                    batch, self._commit_queue = self._commit_queue, []
                    return batch
                wake = self._leader_wake = threading.Lock()
                wake.acquire()
            wake.acquire(timeout=remaining)

    def _sync_dirs(self, placed: Iterable[str]) -> None:
        """fsync the directories that received ``placed`` files (the renames into them)."""
        if self.mailbox.fsync:
            for directory in sorted({os.path.dirname(path) for path in placed}):
                fsync_dir(Path(directory))

    def change_flags(
        self,
        uid: int,
        op: FlagOp,
        flags: Iterable[str],
        *,
        unchanged_since: int | None = None,
    ) -> tuple[MessageMeta, MessageMeta]:
        """Set, add or remove flags of one message (IMAP STORE, API PATCH); (before, after).

        Raises:
            NotFound: no message with that UID.
        """
        mask, keywords = flags_to_mask(flags)
        return self.index.change_flags(
            uid, op, mask, keywords, unchanged_since=unchanged_since, on_change=self._rename_file
        )

    def change_flags_many(
        self,
        uids: Sequence[int],
        op: FlagOp,
        flags: Iterable[str],
        *,
        unchanged_since: int | None = None,
    ) -> list[tuple[MessageMeta, MessageMeta]]:
        """:meth:`change_flags` for several messages at once (one index lock hold and one
        journal write); (before, after) for each UID still in the folder, in order."""
        mask, keywords = flags_to_mask(flags)
        return self.index.change_flags_many(
            uids, op, mask, keywords, unchanged_since=unchanged_since, on_change=self._rename_file
        )

    def _rename_file(self, before: MessageMeta, after: MessageMeta) -> None:
        """Mirror new flags in the file name (called under the index lock)."""
        if before.relpath == after.relpath:
            return
        target = self.dir / after.relpath
        try:
            os.rename(self.dir / before.relpath, target)
        except FileNotFoundError:
            found = self._find(before.base)
            if found is not None and found != target:
                with contextlib.suppress(FileNotFoundError):
                    os.rename(found, target)

    def expunge(
        self, uids: Iterable[int] | None = None, *, only_deleted: bool = False
    ) -> list[MessageMeta]:
        """Remove messages: the given UIDs, or (None) every message flagged \\Deleted.

        With ``only_deleted`` a given UID goes only if it is still flagged \\Deleted when
        the index lock is held (see ``MailIndex.expunge``).
        """
        gone = self.index.expunge(uids, only_deleted=only_deleted)
        for meta in gone:
            self._unlink(meta)
        if gone:
            self.headers.compact(self._live_bases, len(self.index))
        return gone

    def _live_bases(self) -> list[str]:
        return [row[1] for row in self.index.rows()]

    def _unlink(self, meta: MessageMeta) -> None:
        try:
            self.message_path(meta).unlink()
        except (NotFound, FileNotFoundError):
            logger.debug("expunged file already gone folder=%s uid=%d", self.name, meta.uid)

    def copy_to(
        self, uids: Iterable[int], dest: Folder, *, check_quota: bool = True
    ) -> list[tuple[int, int]]:
        """Copy messages with their flags; returns (source UID, new UID) pairs (COPYUID).

        Raises:
            QuotaExceeded: the copies would not fit.
        """
        self.index.refresh()
        metas = [self.index.get(u) for u in sorted(set(uids)) if self.index.position(u) is not None]
        if not metas:
            return []
        if check_quota:
            dest.mailbox.check_quota(sum(m.size for m in metas))
        placed: list[str] = []
        rows: list[_Row] = []
        records: list[tuple[str, HeaderValues]] = []
        writing = dest._start_writing()
        try:
            for meta in metas:
                base = unique_name(dest.mailbox.hostname)
                mask = meta.mask
                target = os.fspath(dest.dir / MessageMeta(0, base, mask, (), 0, 0, 0).relpath)
                src = self.message_path(meta)
                try:
                    os.link(src, target)
                except OSError:
                    # Another filesystem or no hard links: copy the bytes instead.
                    tmp = dest.dir / "tmp" / base
                    dest.mailbox.write_file(tmp, src.read_bytes())
                    os.rename(tmp, target)
                placed.append(target)
                rows.append((base, mask, meta.keywords, meta.size, meta.date))
                values = self.headers.get(meta.base)
                if values is not None:
                    records.append((base, values))
            dest.headers.put_many(records)
            new = dest._commit(placed, rows, writing)
        except BaseException:
            writing.abandon(placed)
            raise
        return [(m.uid, n.uid) for m, n in zip(metas, new, strict=True)]

    def move_to(self, uids: Iterable[int], dest: Folder) -> list[tuple[int, int]]:
        """RFC 6851 MOVE: copy, then expunge the originals. Returns (source, new) UID pairs."""
        # Within one account a move adds no bytes: a full mailbox can still empty itself
        # into Trash.
        pairs = self.copy_to(uids, dest, check_quota=dest.mailbox is not self.mailbox)
        self.expunge([src for src, _ in pairs])
        return pairs


def _outcome(request: _Commit) -> list[MessageMeta]:
    """A follower's result: its metadata, or the batch's error raised in this thread."""
    error = request.error
    if error is None:
        return request.metas
    # The leader raises the original; a follower raises its own copy, so that tracebacks
    # of different threads do not pile up on one exception object.
    copy: RmailError = TemporaryFailure(f"cannot store message: {error}")
    if isinstance(error, RmailError):
        with contextlib.suppress(TypeError):
            copy = type(error)(*error.args)
    raise copy from error


class Mailbox:
    """All folders of one user.

    Args:
        mail_dir: ``users/{user}/mail``.
        hostname: used in Maildir unique names.
        quota_bytes: returns the account's mail quota in bytes now (0: unlimited).
        extra_usage: returns bytes the account uses elsewhere (the drive) that count too.
    """

    def __init__(
        self,
        mail_dir: Path,
        *,
        hostname: str,
        fsync: bool = True,
        journal_max: int = 5000,
        quota_bytes: Callable[[], int] = lambda: 0,
        extra_usage: Callable[[], int] = lambda: 0,
    ) -> None:
        self.dir = mail_dir
        self.hostname = hostname
        self.fsync = fsync
        self.journal_max = journal_max
        self._quota_bytes = quota_bytes
        self._extra_usage = extra_usage
        self._folders_lock = FileLock(mail_dir / ".folders.lock")
        self._cache: dict[str, Folder] = {}
        self._cache_lock = threading.Lock()
        # For usage_bytes: (stat key of the mail dir, monotonic expiry, folder names).
        self._names_cache: tuple[tuple[int, int, int], float, list[str]] | None = None
        self._names_checked = 0.0  # monotonic time the mail dir's stat last matched

    # -- set-up ----------------------------------------------------------------------------

    def initialize(self) -> None:
        """Create INBOX and the special-use folders of a new account (idempotent)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with self._folders_lock.hold():
            self._make_folder(INBOX)
            specials = self._special_use()
            for name, attr in DEFAULT_FOLDERS.items():
                if not self._dir_of(name).exists():
                    self._make_folder(name)
                specials.setdefault(name, attr)
            atomic_write_json(self.dir / "special-use.json", specials, fsync=self.fsync)
            subs = set(self._subscriptions()) | {INBOX, *DEFAULT_FOLDERS}
            atomic_write_json(self.dir / "subscriptions.json", sorted(subs), fsync=self.fsync)

    def _dir_of(self, name: str) -> Path:
        return self.dir if name == INBOX else self.dir / _encode(name)

    def _next_uidvalidity(self) -> int:
        path = self.dir / "uidvalidity"
        try:
            last = int(path.read_text().strip() or 0)
        except FileNotFoundError:
            last = 0
        value = max(int(time.time()), last + 1)
        path.write_text(f"{value}\n")
        return value

    def _make_folder(self, name: str) -> None:
        self._names_cache = None
        path = self._dir_of(name)
        for sub in ("cur", "new", "tmp"):
            (path / sub).mkdir(parents=True, exist_ok=True)
        if not (path / "index.json").exists():
            MailIndex.create(
                path, self._next_uidvalidity(), fsync=self.fsync, journal_max=self.journal_max
            ).close()
        if self.fsync:
            fsync_dir(path)
            fsync_dir(path.parent)

    # -- folders ---------------------------------------------------------------------------

    def folder(self, name: str, *, refresh: bool = True) -> Folder:
        """Open a folder (cached).

        Args:
            name: the folder name.
            refresh: bring a cached folder's index up to date first. A caller that is only
                going to append can pass False: every write refreshes the index under its
                lock anyway (and a folder deleted meanwhile then answers NotFound).

        Raises:
            InvalidInput: the name is not valid.
            NotFound: there is no such folder.
        """
        name = normalize_folder_name(name)
        with self._cache_lock:
            folder = self._cache.get(name)
        if folder is not None:
            if not refresh:
                return folder
            try:
                folder.index.refresh()
                return folder
            except NotFound:
                self._forget(name)
        path = self._dir_of(name)
        if not (path / "index.json").exists():
            raise NotFound(f"no folder named {name!r}")
        index = MailIndex(path, fsync=self.fsync, journal_max=self.journal_max)
        index.refresh()
        folder = Folder(self, name, path, index)
        with self._cache_lock:
            return self._cache.setdefault(name, folder)

    def exists(self, name: str) -> bool:
        return (self._dir_of(normalize_folder_name(name)) / "index.json").exists()

    def _forget(self, name: str) -> None:
        self._names_cache = None
        with self._cache_lock:
            for key in [k for k in self._cache if k == name or k.startswith(name + "/")]:
                self._cache.pop(key).index.close()

    def folder_names(self) -> list[str]:
        """Every folder, INBOX first, then by name."""
        names = []
        with os.scandir(self.dir) as entries:
            for entry in entries:
                if (
                    entry.name.startswith(".")
                    and not entry.name.startswith("..")
                    and entry.is_dir()
                    and os.path.exists(os.path.join(entry.path, "index.json"))
                ):
                    names.append(_decode(entry.name))
        return [INBOX, *sorted(names)]

    def list_folders(self) -> list[FolderInfo]:
        names = self.folder_names()
        specials = self._special_use()
        subs = set(self._subscriptions())
        parents = {n.rsplit("/", 1)[0] for n in names if "/" in n}
        return [
            FolderInfo(
                n,
                specials.get(n),
                n in parents or any(p.startswith(n + "/") for p in parents),
                n in subs,
            )
            for n in names
        ]

    def folder_counts(self) -> list[tuple[FolderInfo, int, int]]:
        """Every folder with its message count and unseen count (from the indexes)."""
        out = []
        for info in self.list_folders():
            index = self.folder(info.name).index
            out.append((info, len(index), index.unseen))
        return out

    def create_folder(self, name: str, special_use: str | None = None) -> None:
        """Create a folder and any missing parents (RFC 3501 §6.3.3).

        Raises:
            AlreadyExists: it exists (INBOX always does).
            InvalidInput: bad name, or an unknown special-use attribute.
        """
        name = normalize_folder_name(name)
        if special_use is not None and special_use not in SPECIAL_USE:
            raise InvalidInput(f"unknown special-use attribute {special_use}")
        with self._folders_lock.hold():
            if name == INBOX or (self._dir_of(name) / "index.json").exists():
                raise AlreadyExists(f"folder {name!r} exists")
            parts = name.split("/")
            for depth in range(1, len(parts)):
                parent = "/".join(parts[:depth])
                if parent != INBOX and not (self._dir_of(parent) / "index.json").exists():
                    self._make_folder(parent)
            self._make_folder(name)
            if special_use is not None:
                specials = self._special_use()
                specials[name] = special_use
                atomic_write_json(self.dir / "special-use.json", specials, fsync=self.fsync)

    def delete_folder(self, name: str) -> None:
        """Delete a folder with its messages and its children.

        Raises:
            InvalidInput: INBOX cannot be deleted.
            NotFound: no such folder.
        """
        name = normalize_folder_name(name)
        if name == INBOX:
            raise InvalidInput("INBOX cannot be deleted")
        with self._folders_lock.hold():
            victims = [n for n in self.folder_names() if n == name or n.startswith(name + "/")]
            if name not in victims:
                raise NotFound(f"no folder named {name!r}")
            trash = self.dir / "tmp" / f"deleted-{secrets.token_hex(8)}"
            trash.mkdir()
            for victim in victims:
                os.rename(self._dir_of(victim), trash / _encode(victim))
            if self.fsync:
                fsync_dir(self.dir)
            self._forget(name)
            self._drop_names(victims)
        shutil.rmtree(trash, ignore_errors=True)

    def rename_folder(self, old: str, new: str) -> None:
        """Rename a folder with its children (RFC 3501 §6.3.5).

        Renaming INBOX moves its messages into a new folder and leaves INBOX empty.

        Raises:
            NotFound: ``old`` does not exist.
            AlreadyExists: ``new`` exists.
            InvalidInput: bad names, or ``new`` inside ``old``.
        """
        old, new = normalize_folder_name(old), normalize_folder_name(new)
        if new == INBOX or new.startswith(old + "/"):
            raise InvalidInput(f"cannot rename {old!r} to {new!r}")
        if old == INBOX:
            self.create_folder(new)
            source = self.folder(INBOX)
            source.move_to(list(source.refresh().uids), self.folder(new))
            return
        with self._folders_lock.hold():
            names = self.folder_names()
            if old not in names:
                raise NotFound(f"no folder named {old!r}")
            if new in names:
                raise AlreadyExists(f"folder {new!r} exists")
            parts = new.split("/")
            for depth in range(1, len(parts)):
                parent = "/".join(parts[:depth])
                if parent not in names and parent != INBOX:
                    self._make_folder(parent)
            moving = [n for n in names if n == old or n.startswith(old + "/")]
            for name in moving:
                os.rename(self._dir_of(name), self._dir_of(new + name[len(old) :]))
            if self.fsync:
                fsync_dir(self.dir)
            self._forget(old)
            self._rename_names(old, new)

    # -- subscriptions and special use ---------------------------------------------------

    def _subscriptions(self) -> list[str]:
        try:
            return list(read_json(self.dir / "subscriptions.json"))
        except FileNotFoundError:
            return []

    def _special_use(self) -> dict[str, str]:
        try:
            return dict(read_json(self.dir / "special-use.json"))
        except FileNotFoundError:
            return {}

    def subscriptions(self) -> list[str]:
        return self._subscriptions()

    def subscribe(self, name: str) -> None:
        """Add a name to the subscriptions (RFC 3501 §6.3.6 allows a missing folder)."""
        name = normalize_folder_name(name)
        with self._folders_lock.hold():
            subs = set(self._subscriptions()) | {name}
            atomic_write_json(self.dir / "subscriptions.json", sorted(subs), fsync=self.fsync)

    def unsubscribe(self, name: str) -> None:
        name = normalize_folder_name(name)
        with self._folders_lock.hold():
            subs = set(self._subscriptions())
            if name not in subs:
                raise NotFound(f"not subscribed to {name!r}")
            subs.discard(name)
            atomic_write_json(self.dir / "subscriptions.json", sorted(subs), fsync=self.fsync)

    def special_use(self) -> dict[str, str]:
        """Folder name -> special-use attribute."""
        return self._special_use()

    def _drop_names(self, victims: Sequence[str]) -> None:
        specials = {k: v for k, v in self._special_use().items() if k not in victims}
        atomic_write_json(self.dir / "special-use.json", specials, fsync=self.fsync)

    def _rename_names(self, old: str, new: str) -> None:
        def moved(name: str) -> str:
            if name == old or name.startswith(old + "/"):
                return new + name[len(old) :]
            return name

        specials = {moved(k): v for k, v in self._special_use().items()}
        atomic_write_json(self.dir / "special-use.json", specials, fsync=self.fsync)
        subs = sorted({moved(n) for n in self._subscriptions()})
        atomic_write_json(self.dir / "subscriptions.json", subs, fsync=self.fsync)

    # -- space -------------------------------------------------------------------------------

    def usage_bytes(self, max_age: float = QUOTA_STALE_SECONDS) -> int:
        """Bytes of mail in every folder (from the indexes; no file is read).

        Works from memory: the folder list is listed again when the mail directory changes
        (its mtime, link count or inode) or is older than ``max_age`` seconds, and a
        folder's index is refreshed only when its last refresh is older than ``max_age``.
        So what another process did in the last ``max_age`` seconds may be missing (what
        this process did never is); ``max_age=0`` gives the exact figure.
        """
        now = time.monotonic()
        total = 0
        for name in self._names_for_usage(now, max_age):
            with self._cache_lock:
                folder = self._cache.get(name)
            try:
                if folder is None:
                    folder = self.folder(name)  # opens and refreshes it
                elif now - folder.index.refreshed_at >= max_age:
                    folder.index.refresh()
            except NotFound:
                self._forget(name)
                continue
            total += folder.index.total_size
        return total

    def _names_for_usage(self, now: float, max_age: float) -> list[str]:
        """:meth:`folder_names`, reused while the mail dir is unchanged (see usage_bytes).

        The mail dir is looked at (one ``stat``) at most every ``_NAMES_RECHECK`` seconds.
        """
        cached = self._names_cache
        if cached is not None and now < cached[1]:
            if now - self._names_checked < min(_NAMES_RECHECK, max_age):
                return cached[2]
            st = os.stat(self.dir)
            if cached[0] == (st.st_mtime_ns, st.st_nlink, st.st_ino):
                self._names_checked = now
                return cached[2]
        st = os.stat(self.dir)
        names = self.folder_names()
        self._names_cache = ((st.st_mtime_ns, st.st_nlink, st.st_ino), now + max_age, names)
        self._names_checked = now
        return names

    def check_quota(self, incoming: int, *, quota: int | None = None) -> int | None:
        """Raises QuotaExceeded when ``incoming`` more bytes would not fit.

        Args:
            incoming: bytes about to be stored.
            quota: the quota in bytes when the caller has it at hand (else it is asked for).

        Returns:
            The bytes free before ``incoming`` (None: no quota). See :meth:`usage_bytes`
            for how current the figure is.
        """
        if quota is None:
            quota = self._quota_bytes()
        if quota <= 0:
            return None
        used = self.usage_bytes() + self._extra_usage()
        if used + incoming > quota:
            raise QuotaExceeded(
                f"mailbox full: {used + incoming} bytes would exceed the quota of {quota}"
            )
        return quota - used

    def write_file(self, path: str | Path, data: bytes) -> None:
        """Write a new message file (not yet visible: it is in ``tmp/``) and fsync it.

        With fsync on the file is opened ``O_SYNC``: each ``write`` returns once the data
        and all the file's metadata are on disk, which is what ``fsync`` after the write
        gives, in one system call instead of two (a message is normally one write).
        """
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        if self.fsync:
            flags |= os.O_SYNC
        try:
            fd = os.open(path, flags, 0o600)
        except FileExistsError:
            raise TemporaryFailure("maildir name clash, try again") from None
        except FileNotFoundError:
            raise NotFound("the folder no longer exists") from None
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except OSError as exc:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise TemporaryFailure(f"cannot store message: {exc.strerror}") from exc
        os.close(fd)

    def close(self) -> None:
        with self._cache_lock:
            for folder in self._cache.values():
                folder.index.close()
            self._cache.clear()
