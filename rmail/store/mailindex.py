"""The per-folder message index: a snapshot plus an append-only journal.

Files in each Maildir++ folder directory:

``index.json``
    The snapshot: one JSON object. Scalars (``uidvalidity``, ``uidnext``, ``highestmodseq``,
    ``generation``, ``count``) are plain; the per-message columns are packed so that opening a
    100,000-message folder costs one ``json.loads`` of a few large strings, not 100,000 small
    objects. ``uids``, ``flags``, ``sizes``, ``dates``, ``modseqs`` (and the ``expunged_*``
    pair kept for QRESYNC) are base64 of little-endian arrays; ``files`` is the Maildir base
    names joined by ``\\n``; ``keywords`` maps a UID (as a string) to its keyword list.
``index.journal``
    One JSON array per line, appended under the lock: ``["h", generation]`` first, then
    ``["a", uid, base, flags, size, date, modseq, keywords]`` (append),
    ``["f", uid, flags, modseq, keywords]`` (flags replaced) and
    ``["x", modseq, [uid, ...]]`` (expunge). A change costs one short write whatever the
    folder's size; after ``journal_max_records`` records the snapshot is rewritten and the
    journal restarted with the next generation (compaction).
``index.lock``
    The flock sidecar. Writers hold it for the index update only.

Readers take no lock. They rely on the snapshot being replaced atomically and on the journal
only growing within a generation; a trailing line without its newline is a write in progress
(or a crash's remains, which the next writer truncates) and is not read yet. An in-memory
index revalidates with two ``stat`` calls and reads only the journal's new tail.

The flag bitmask holds the IMAP system flags and ``IN_NEW``: the message file is still in
``new/`` (delivered, never touched). \\Recent is a session property and is not stored.
"""

from __future__ import annotations

import array
import base64
import bisect
import gc
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from rmail.errors import NotFound, TemporaryFailure
from rmail.store.fsio import FileLock, atomic_write

__all__ = [
    "ANSWERED",
    "DELETED",
    "DRAFT",
    "FLAGGED",
    "IN_NEW",
    "SEEN",
    "SYSTEM_FLAGS",
    "FlagOp",
    "MailIndex",
    "MessageMeta",
    "MessageRow",
    "flags_to_mask",
    "mask_to_flags",
]

SEEN: Final = 1
ANSWERED: Final = 2
FLAGGED: Final = 4
DELETED: Final = 8
DRAFT: Final = 16
IN_NEW: Final = 32
# IMAP system flag -> bit, and the Maildir info letter mirrored in the file name
# (cr.yp.to/proto/maildir.html: letters in ASCII order).
SYSTEM_FLAGS: Final[dict[str, int]] = {
    "\\Seen": SEEN,
    "\\Answered": ANSWERED,
    "\\Flagged": FLAGGED,
    "\\Deleted": DELETED,
    "\\Draft": DRAFT,
}
_MAILDIR_LETTERS: Final = (
    ("D", DRAFT),
    ("F", FLAGGED),
    ("R", ANSWERED),
    ("S", SEEN),
    ("T", DELETED),
)
_FLAG_BITS: Final = SEEN | ANSWERED | FLAGGED | DELETED | DRAFT
FlagOp = Literal["set", "add", "remove"]
_FORMAT: Final = 1
_SNAPSHOT: Final = "index.json"
_JOURNAL: Final = "index.journal"
_LOCK: Final = "index.lock"


def flags_to_mask(flags: Iterable[str]) -> tuple[int, tuple[str, ...]]:
    """Split IMAP flags into the system-flag bitmask and the sorted keywords.

    System flags match case-insensitively (RFC 3501 §2.3.2); keywords keep their spelling
    and are de-duplicated case-insensitively.
    """
    mask = 0
    keywords: dict[str, str] = {}
    lowered = {name.lower(): bit for name, bit in SYSTEM_FLAGS.items()}
    for flag in flags:
        bit = lowered.get(flag.lower())
        if bit is not None:
            mask |= bit
        elif flag.lower() != "\\recent":
            keywords.setdefault(flag.lower(), flag)
    return mask, tuple(sorted(keywords.values()))


def mask_to_flags(mask: int, keywords: Sequence[str] = ()) -> tuple[str, ...]:
    """The IMAP flags of a bitmask plus keywords, system flags first."""
    out = [name for name, bit in SYSTEM_FLAGS.items() if mask & bit]
    out.extend(keywords)
    return tuple(out)


def maildir_info(mask: int) -> str:
    """The ``:2,`` info letters of a bitmask."""
    return "".join(letter for letter, bit in _MAILDIR_LETTERS if mask & bit)


# (uid, base, mask, keywords, size, date, modseq): the fields of MessageMeta in order.
MessageRow = tuple[int, str, int, tuple[str, ...], int, int, int]


@dataclass(frozen=True, slots=True)
class MessageMeta:
    """What the index knows of one message."""

    uid: int
    base: str
    mask: int
    keywords: tuple[str, ...]
    size: int
    date: int
    modseq: int

    @property
    def flags(self) -> tuple[str, ...]:
        return mask_to_flags(self.mask, self.keywords)

    @property
    def relpath(self) -> str:
        """Where the file should be, relative to the folder directory."""
        if self.mask & IN_NEW:
            return f"new/{self.base}"
        return f"cur/{self.base}:2,{maildir_info(self.mask)}"


def _apply_op(
    current: MessageMeta, op: FlagOp, mask: int, keywords: Sequence[str]
) -> tuple[int, tuple[str, ...]]:
    """The flags after ``op`` (set, add, remove) on ``current``; keywords sorted, unique."""
    mask &= _FLAG_BITS
    old_mask = current.mask & _FLAG_BITS
    if op == "set":
        new_mask, merged = mask, list(keywords)
    elif op == "add":
        new_mask, merged = old_mask | mask, [*current.keywords, *keywords]
    else:
        drop = {k.lower() for k in keywords}
        new_mask = old_mask & ~mask
        merged = [k for k in current.keywords if k.lower() not in drop]
    unique: dict[str, str] = {}
    for keyword in merged:
        unique.setdefault(keyword.lower(), keyword)
    return new_mask, tuple(sorted(unique.values()))


def _pack(typecode: str, values: Iterable[int]) -> str:
    arr = array.array(typecode, values)
    if sys.byteorder != "little":
        arr.byteswap()
    return base64.b64encode(arr.tobytes()).decode("ascii")


def _unpack(typecode: str, text: str) -> array.array[int]:
    arr = array.array(typecode)
    arr.frombytes(base64.b64decode(text))
    if sys.byteorder != "little":
        arr.byteswap()
    return arr


class MailIndex:
    """The index of one folder, cached in memory and kept current with the files.

    Every public method is thread-safe. Mutations take the folder lock, first bring the
    in-memory state up to date with the disk (another process may have written), then append
    one journal record and apply it.
    """

    def __init__(self, folder_dir: Path, *, fsync: bool = True, journal_max: int = 5000) -> None:
        self.dir = folder_dir
        self.fsync = fsync
        self.journal_max = journal_max
        self._lock = FileLock(folder_dir / _LOCK)
        # Plain strings for the paths used on every refresh and write (cheaper than pathlib).
        self._snapshot_path = os.path.join(folder_dir, _SNAPSHOT)
        self._journal_path = os.path.join(folder_dir, _JOURNAL)
        self._mem = threading.RLock()
        self._snap_id: tuple[int, int, int] | None = None
        self._journal_id: tuple[int, int] | None = None
        self._journal_offset = 0
        self._journal_records = 0
        self._journal_fd: int | None = None
        self._journal_fd_id: tuple[int, int] | None = None  # (inode, device) of _journal_fd
        self._journal_seen_size: int | None = None  # the journal's size at the last read
        # time.monotonic() of the last time the memory state was known to match the disk
        # (0.0: never); lets callers that tolerate a little staleness skip a refresh.
        self.refreshed_at = 0.0
        self._reset(uidvalidity=0)

    # -- state ---------------------------------------------------------------------------

    def _reset(self, uidvalidity: int) -> None:
        self.uidvalidity = uidvalidity
        self.uidnext = 1
        self.highestmodseq = 1
        self.generation = 0
        self.uids: array.array[int] = array.array("I")
        self.masks: array.array[int] = array.array("H")
        self.sizes: array.array[int] = array.array("Q")
        self.dates: array.array[int] = array.array("q")
        self.modseqs: array.array[int] = array.array("Q")
        self.bases: list[str] = []
        self.keywords: dict[int, tuple[str, ...]] = {}
        self.expunged_uids: array.array[int] = array.array("I")
        self.expunged_modseqs: array.array[int] = array.array("Q")
        self.total_size = 0
        self.unseen = 0

    def __len__(self) -> int:
        return len(self.uids)

    @property
    def path(self) -> Path:
        return self.dir / _SNAPSHOT

    # -- creation and loading --------------------------------------------------------------

    @classmethod
    def create(
        cls, folder_dir: Path, uidvalidity: int, *, fsync: bool = True, journal_max: int = 5000
    ) -> MailIndex:
        """Write an empty index for a new folder (the directory must exist)."""
        index = cls(folder_dir, fsync=fsync, journal_max=journal_max)
        with index._lock.hold():
            index._reset(uidvalidity)
            index._write_snapshot_and_journal()
        return index

    def refresh(self) -> None:
        """Bring the in-memory state up to date with the disk (cheap when nothing changed).

        Raises:
            NotFound: the folder has no index (it was deleted).
        """
        with self._mem:
            for _attempt in range(20):
                started = time.monotonic()
                if self._refresh_once():
                    self.refreshed_at = started
                    return
            raise TemporaryFailure(f"index of {self.dir.name} keeps changing, try again")

    def _refresh_once(self) -> bool:
        try:
            st = os.stat(self._snapshot_path)
        except FileNotFoundError:
            raise NotFound("no such folder") from None
        snap_id = (st.st_ino, st.st_mtime_ns, st.st_size)
        if snap_id != self._snap_id:
            self._load_snapshot()
            self._snap_id = snap_id
            self._journal_id = None
        return self._read_journal()

    def _load_snapshot(self) -> None:
        with open(self._snapshot_path, "rb") as f:
            raw = f.read()
        # The columns are a few large strings, but a cold parse still allocates enough for
        # the cyclic GC to wake up repeatedly; nothing here makes cycles.
        enabled = gc.isenabled()
        gc.disable()
        try:
            doc: dict[str, Any] = json.loads(raw)
            self._reset(int(doc["uidvalidity"]))
            self.uidnext = int(doc["uidnext"])
            self.highestmodseq = int(doc["highestmodseq"])
            self.generation = int(doc["generation"])
            self.uids = _unpack("I", doc["uids"])
            self.masks = _unpack("H", doc["flags"])
            self.sizes = _unpack("Q", doc["sizes"])
            self.dates = _unpack("q", doc["dates"])
            self.modseqs = _unpack("Q", doc["modseqs"])
            self.bases = doc["files"].split("\n") if doc["files"] else []
            self.keywords = {int(k): tuple(v) for k, v in doc["keywords"].items()}
            self.expunged_uids = _unpack("I", doc["expunged_uids"])
            self.expunged_modseqs = _unpack("Q", doc["expunged_modseqs"])
        finally:
            if enabled:
                gc.enable()
        self.total_size = sum(self.sizes)
        self.unseen = sum(1 for m in self.masks if not m & SEEN)

    def _read_journal(self) -> bool:
        """Apply the journal's unread tail. False: the journal is ahead of our snapshot."""
        path = self._journal_path
        try:
            st = os.stat(path)
        except FileNotFoundError:
            self._journal_seen_size = None
            return True  # a compaction crashed before the new journal; the snapshot is whole
        self._journal_seen_size = st.st_size
        journal_id = (st.st_ino, st.st_dev)
        if journal_id != self._journal_id:
            self._journal_id = journal_id
            self._journal_offset = 0
            self._journal_records = 0
        if st.st_size <= self._journal_offset:
            return True
        with open(path, "rb") as f:
            f.seek(self._journal_offset)
            data = f.read(st.st_size - self._journal_offset)
        end = data.rfind(b"\n") + 1
        if end == 0:
            return True
        complete = data[:end]
        records: list[list[Any]] = json.loads(b"[" + complete[:-1].replace(b"\n", b",") + b"]")
        start = 0
        if self._journal_offset == 0:
            header = records[0]
            if header[0] != "h":
                raise TemporaryFailure(f"index journal of {self.dir.name} has no header")
            if header[1] > self.generation:
                # Compacted between our snapshot read and now: read the snapshot again.
                self._snap_id = None
                self._journal_id = None
                return False
            if header[1] < self.generation:
                # Left by a compaction that died before restarting the journal: all in the
                # snapshot already. Skip it; the next writer replaces it.
                self._journal_offset = st.st_size
                self._journal_records = self.journal_max  # ask the next writer to compact
                return True
            start = 1
        for record in records[start:]:
            self._apply(record)
        self._journal_offset += end
        self._journal_records += len(records) - start
        return True

    def _apply(self, record: list[Any]) -> None:
        kind = record[0]
        if kind == "a":
            _, uid, base, mask, size, date, modseq, keywords = record
            self.uids.append(uid)
            self.bases.append(base)
            self.masks.append(mask)
            self.sizes.append(size)
            self.dates.append(date)
            self.modseqs.append(modseq)
            if keywords:
                self.keywords[uid] = tuple(keywords)
            self.uidnext = max(self.uidnext, uid + 1)
            self.highestmodseq = max(self.highestmodseq, modseq)
            self.total_size += size
            if not mask & SEEN:
                self.unseen += 1
        elif kind == "f":
            _, uid, mask, modseq, keywords = record
            pos = self._position(uid)
            if pos is None:
                return
            old = self.masks[pos]
            self.unseen += (not mask & SEEN) - (not old & SEEN)
            self.masks[pos] = mask
            self.modseqs[pos] = modseq
            if keywords:
                self.keywords[uid] = tuple(keywords)
            else:
                self.keywords.pop(uid, None)
            self.highestmodseq = max(self.highestmodseq, modseq)
        elif kind == "x":
            _, modseq, uids = record
            self._remove(uids, modseq)
            self.highestmodseq = max(self.highestmodseq, modseq)
        else:
            raise TemporaryFailure(f"index journal of {self.dir.name}: unknown record {kind!r}")

    def _remove(self, uids: Iterable[int], modseq: int) -> None:
        positions = sorted({p for p in (self._position(u) for u in uids) if p is not None})
        if not positions:
            return
        for pos in positions:
            self.total_size -= self.sizes[pos]
            if not self.masks[pos] & SEEN:
                self.unseen -= 1
            self.keywords.pop(self.uids[pos], None)
            self.expunged_uids.append(self.uids[pos])
            self.expunged_modseqs.append(modseq)
        if len(positions) == 1:
            (pos,) = positions
            for column in (self.uids, self.masks, self.sizes, self.dates, self.modseqs):
                del column[pos]
            del self.bases[pos]
            return
        drop = set(positions)
        keep = [i for i in range(len(self.uids)) if i not in drop]
        self.uids = array.array("I", (self.uids[i] for i in keep))
        self.masks = array.array("H", (self.masks[i] for i in keep))
        self.sizes = array.array("Q", (self.sizes[i] for i in keep))
        self.dates = array.array("q", (self.dates[i] for i in keep))
        self.modseqs = array.array("Q", (self.modseqs[i] for i in keep))
        self.bases = [self.bases[i] for i in keep]

    def _position(self, uid: int) -> int | None:
        pos = bisect.bisect_left(self.uids, uid)
        if pos < len(self.uids) and self.uids[pos] == uid:
            return pos
        return None

    # -- reading ---------------------------------------------------------------------------

    def meta_at(self, pos: int) -> MessageMeta:
        """The message at 0-based position ``pos`` (sequence number - 1)."""
        uid = self.uids[pos]
        return MessageMeta(
            uid=uid,
            base=self.bases[pos],
            mask=self.masks[pos],
            keywords=self.keywords.get(uid, ()),
            size=self.sizes[pos],
            date=self.dates[pos],
            modseq=self.modseqs[pos],
        )

    def get(self, uid: int) -> MessageMeta:
        """The message with ``uid``. Raises NotFound when it is not (or no longer) there."""
        with self._mem:
            pos = self._position(uid)
            if pos is None:
                raise NotFound(f"no message with UID {uid}")
            return self.meta_at(pos)

    def get_many(self, uids: Iterable[int]) -> list[MessageMeta]:
        """The messages of ``uids`` still in the index, in the order given (one lock hold)."""
        out = []
        with self._mem:
            for uid in uids:
                pos = self._position(uid)
                if pos is not None:
                    out.append(self.meta_at(pos))
        return out

    def rows(self) -> list[MessageRow]:
        """Every message as a :data:`MessageRow`, in UID order (a snapshot taken now).

        For scans of a whole folder: much cheaper than :meth:`messages`, and
        ``MessageMeta(*row)`` gives the full entry of the few rows that need it.
        """
        with self._mem:
            return list(
                zip(
                    self.uids,
                    self.bases,
                    self.masks,
                    [self.keywords.get(uid, ()) for uid in self.uids]
                    if self.keywords
                    else [()] * len(self.uids),
                    self.sizes,
                    self.dates,
                    self.modseqs,
                    strict=True,
                )
            )

    def position(self, uid: int) -> int | None:
        with self._mem:
            return self._position(uid)

    def messages(self) -> Iterator[MessageMeta]:
        """Every message in UID order (a snapshot of the list taken now)."""
        with self._mem:
            metas = [self.meta_at(i) for i in range(len(self.uids))]
        return iter(metas)

    def keywords_in_use(self) -> set[str]:
        with self._mem:
            return {k for kws in self.keywords.values() for k in kws}

    def vanished_since(self, modseq: int) -> list[int]:
        """UIDs expunged with a MODSEQ above ``modseq`` (RFC 7162 §3.2.10 VANISHED)."""
        with self._mem:
            return sorted(
                u
                for u, m in zip(self.expunged_uids, self.expunged_modseqs, strict=True)
                if m > modseq
            )

    # -- writing ---------------------------------------------------------------------------

    def add(
        self, base: str, mask: int, keywords: Sequence[str], size: int, date: int
    ) -> MessageMeta:
        """Index a message whose file is already in place; returns it with its new UID."""
        with self._mem, self._lock.hold():
            self._refresh_locked()
            uid = self.uidnext
            modseq = self.highestmodseq + 1
            self._log(["a", uid, base, mask, size, date, modseq, list(keywords)], sync=True)
            return self.meta_at(len(self.uids) - 1)

    def add_many(
        self, items: Sequence[tuple[str, int, Sequence[str], int, int]]
    ) -> list[MessageMeta]:
        """:meth:`add` for several messages under one lock and one fsync (COPY, MULTIAPPEND)."""
        with self._mem, self._lock.hold():
            self._refresh_locked()
            records = []
            for offset, (base, mask, keywords, size, date) in enumerate(items):
                uid = self.uidnext + offset
                modseq = self.highestmodseq + 1 + offset
                records.append(["a", uid, base, mask, size, date, modseq, list(keywords)])
            self._log_many(records, sync=True)
            n = len(self.uids)
            return [self.meta_at(i) for i in range(n - len(items), n)]

    def change_flags(
        self,
        uid: int,
        op: FlagOp,
        mask: int,
        keywords: Sequence[str],
        *,
        unchanged_since: int | None = None,
        on_change: Callable[[MessageMeta, MessageMeta], None] | None = None,
    ) -> tuple[MessageMeta, MessageMeta]:
        """Set, add or remove one message's flags; returns (before, after).

        The new flags are computed from the current ones under the lock, so two writers
        adding different flags at once both win. When nothing changes no record is
        written and ``after`` is ``before``. With ``unchanged_since`` (RFC 7162
        UNCHANGEDSINCE) a message modified after that MODSEQ is left alone. ``on_change``
        runs under the lock after a change is recorded (the caller renames the file there,
        so that no other process can record newer flags before the name follows).

        Raises:
            NotFound: no message with that UID.
        """
        with self._mem, self._lock.hold():
            self._refresh_locked()
            pos = self._position(uid)
            if pos is None:
                raise NotFound(f"no message with UID {uid}")
            before = self.meta_at(pos)
            new_mask, new_keywords = _apply_op(before, op, mask, keywords)
            if (before.mask & _FLAG_BITS) == new_mask and before.keywords == new_keywords:
                return before, before
            if unchanged_since is not None and before.modseq > unchanged_since:
                return before, before
            modseq = self.highestmodseq + 1
            self._log(["f", uid, new_mask, modseq, list(new_keywords)], sync=False)
            after = self.meta_at(pos)
            if on_change is not None:
                on_change(before, after)
            return before, after

    def change_flags_many(
        self,
        uids: Sequence[int],
        op: FlagOp,
        mask: int,
        keywords: Sequence[str],
        *,
        unchanged_since: int | None = None,
        on_change: Callable[[MessageMeta, MessageMeta], None] | None = None,
    ) -> list[tuple[MessageMeta, MessageMeta]]:
        """:meth:`change_flags` for several messages under one lock, one refresh and one
        journal write; (before, after) for each UID still in the index, in the order given.

        Each change gets its own MODSEQ, as if the UIDs were changed one after the other (a
        UID given twice sees its first change). ``on_change`` runs for each change, in
        order, under the lock, once all the records are written.
        """
        with self._mem, self._lock.hold():
            self._refresh_locked()
            out: list[tuple[MessageMeta, MessageMeta]] = []
            records: list[list[Any]] = []
            current: dict[int, MessageMeta] = {}  # entries changed by this call so far
            modseq = self.highestmodseq
            for uid in uids:
                before = current.get(uid)
                if before is None:
                    pos = self._position(uid)
                    if pos is None:
                        continue
                    before = self.meta_at(pos)
                new_mask, new_keywords = _apply_op(before, op, mask, keywords)
                unchanged = (
                    before.mask & _FLAG_BITS
                ) == new_mask and before.keywords == new_keywords
                if unchanged or (unchanged_since is not None and before.modseq > unchanged_since):
                    out.append((before, before))
                    continue
                modseq += 1
                records.append(["f", uid, new_mask, modseq, list(new_keywords)])
                after = MessageMeta(
                    uid, before.base, new_mask, new_keywords, before.size, before.date, modseq
                )
                current[uid] = after
                out.append((before, after))
            if records:
                self._log_many(records, sync=False)
                if on_change is not None:
                    for before, after in out:
                        if after is not before:
                            on_change(before, after)
            return out

    def set_flags(
        self, uid: int, mask: int, keywords: Sequence[str], *, unchanged_since: int | None = None
    ) -> tuple[MessageMeta, MessageMeta]:
        """Replace one message's flags (see :meth:`change_flags`)."""
        return self.change_flags(uid, "set", mask, keywords, unchanged_since=unchanged_since)

    def expunge(
        self, uids: Iterable[int] | None, *, only_deleted: bool = False
    ) -> list[MessageMeta]:
        """Remove messages from the index; returns what was removed (files are the caller's).

        Args:
            uids: the messages to remove; None means every message flagged \\Deleted.
            only_deleted: remove only those of ``uids`` still flagged \\Deleted now, under
                the lock (IMAP EXPUNGE: another session may have cleared the flag).
        """
        with self._mem, self._lock.hold():
            self._refresh_locked()
            if uids is None:
                positions = [i for i, m in enumerate(self.masks) if m & DELETED]
            else:
                positions = sorted({p for p in (self._position(u) for u in uids) if p is not None})
                if only_deleted:
                    positions = [p for p in positions if self.masks[p] & DELETED]
            gone = [self.meta_at(p) for p in positions]
            if gone:
                modseq = self.highestmodseq + 1
                self._log(["x", modseq, [m.uid for m in gone]], sync=True)
            return gone

    def compact(self) -> None:
        """Rewrite the snapshot and restart the journal (normally automatic)."""
        with self._mem, self._lock.hold():
            self._refresh_locked()
            self.generation += 1
            self._write_snapshot_and_journal()

    def _refresh_locked(self) -> None:
        started = time.monotonic()
        for _attempt in range(3):
            if self._refresh_once():
                self.refreshed_at = started
                break
        else:  # pragma: no cover - only if the files change while we hold the lock
            raise TemporaryFailure(f"index of {self.dir.name} changed under its lock")
        self._truncate_partial_tail()
        if self._journal_records >= self.journal_max or self._journal_id is None:
            self.generation += 1
            self._write_snapshot_and_journal()

    def _truncate_partial_tail(self) -> None:
        """Under the lock nobody else is writing: bytes past the last newline are a crash's.

        Uses the size seen by the refresh just made under the same lock (no second stat).
        """
        size = self._journal_seen_size
        if size is not None and size > self._journal_offset:
            os.truncate(self._journal_path, self._journal_offset)
            self._journal_seen_size = self._journal_offset

    def _log(self, record: list[Any], *, sync: bool) -> None:
        self._log_many([record], sync=sync)

    def _log_many(self, records: list[list[Any]], *, sync: bool) -> None:
        data = b"".join(
            json.dumps(r, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
            for r in records
        )
        fd = self._journal()
        try:
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(28, "short write")
            if sync and self.fsync:
                os.fdatasync(fd)
        except OSError as exc:
            # Nothing was applied in memory; cut what may have reached the file.
            os.ftruncate(fd, self._journal_offset)
            raise TemporaryFailure(f"cannot write index of {self.dir.name}: {exc}") from exc
        for record in records:
            self._apply(record)
        self._journal_offset += len(data)
        self._journal_records += len(records)

    def _journal(self) -> int:
        """The journal's descriptor, reopened if compaction replaced the file."""
        assert self._journal_id is not None
        if self._journal_fd is not None:
            # _journal_id was just read from the path under the lock; an open descriptor
            # keeps its inode, so comparing remembered identities needs no system call.
            if self._journal_fd_id == self._journal_id:
                return self._journal_fd
            os.close(self._journal_fd)
            self._journal_fd = None
        fd = os.open(self._journal_path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        st = os.fstat(fd)
        self._journal_fd, self._journal_fd_id = fd, (st.st_ino, st.st_dev)
        return fd

    def _write_snapshot_and_journal(self) -> None:
        """Compaction: the snapshot of generation g, then a journal holding only ``["h", g]``."""
        doc = {
            "format": _FORMAT,
            "uidvalidity": self.uidvalidity,
            "uidnext": self.uidnext,
            "highestmodseq": self.highestmodseq,
            "generation": self.generation,
            "count": len(self.uids),
            "uids": _pack("I", self.uids),
            "flags": _pack("H", self.masks),
            "sizes": _pack("Q", self.sizes),
            "dates": _pack("q", self.dates),
            "modseqs": _pack("Q", self.modseqs),
            "files": "\n".join(self.bases),
            "keywords": {str(k): list(v) for k, v in self.keywords.items()},
            "expunged_uids": _pack("I", self.expunged_uids),
            "expunged_modseqs": _pack("Q", self.expunged_modseqs),
        }
        atomic_write(
            self.dir / _SNAPSHOT,
            json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode(),
            fsync=self.fsync,
        )
        header = json.dumps(["h", self.generation]).encode() + b"\n"
        atomic_write(self.dir / _JOURNAL, header, fsync=self.fsync)
        st = os.stat(self.dir / _SNAPSHOT)
        self._snap_id = (st.st_ino, st.st_mtime_ns, st.st_size)
        jst = os.stat(self.dir / _JOURNAL)
        self._journal_id = (jst.st_ino, jst.st_dev)
        self._journal_offset = len(header)
        self._journal_records = 0

    def close(self) -> None:
        with self._mem:
            if self._journal_fd is not None:
                os.close(self._journal_fd)
                self._journal_fd = None
                self._journal_fd_id = None
            self._lock.close()
