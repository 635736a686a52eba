"""A folder's cache of the header fields that mail clients list and search by.

The file ``headers.cache`` in the folder directory, beside the index, holds one JSON array a
line, ``[base, {field: [value, ...]}]``: for each field of :data:`CACHED_FIELDS` that the
message's top-level header has, every occurrence in message order, unfolded as
:attr:`rmail.mime.HeaderField.value` gives it (RFC 5322 §2.2.3: CR and LF removed, leading
blanks stripped; RFC 2047 words stay encoded). The values are plain header data, no protocol
syntax; ``base`` is the message file's Maildir base name.

A record is written when a message is stored (append, delivery, copy), before it is indexed,
and for a message stored without one (older mail, a record lost in a crash, a file another
program put there) the first time it is asked for. The cache is never the truth: a record
that is missing or does not read means reading the message file. So:

- records are appended (``O_APPEND``, one write per batch) without a lock and without fsync;
- a line without its newline (a crash in the middle of a write) or that does not parse is
  skipped;
- a message file never changes, so a record keyed by its base name never goes stale;
- records of messages that are gone (expunged, or never indexed because a crash came
  between writing the files and indexing them) stay until :meth:`HeaderCache.compact`
  rewrites the file with the live ones (after expunges, once most of the file is dead).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any, Final

from rmail.mime import header_end, parse_fields
from rmail.store.fsio import atomic_write

__all__ = ["CACHED_FIELDS", "HeaderCache", "HeaderValues", "header_values"]

logger = logging.getLogger(__name__)

# The fields of an IMAP ENVELOPE (RFC 3501 §7.4.2), which are also the ones clients search
# by (FROM, TO, CC, BCC, SUBJECT); lower case, as HeaderField.name.
CACHED_FIELDS: Final = frozenset(
    {"date", "subject", "from", "sender", "reply-to", "to", "cc", "bcc", "in-reply-to",
     "message-id"}
)  # fmt: skip
# field name -> its values in message order (only fields the header has).
HeaderValues = dict[str, tuple[str, ...]]

_FILE: Final = "headers.cache"
# Compaction rewrites the file once it holds more records than twice the live messages
# plus this many (so that a small folder is not rewritten after every expunge).
_COMPACT_SLACK: Final = 1000


def header_values(message: bytes) -> HeaderValues:
    """The :data:`CACHED_FIELDS` values of a message, or of its header block alone."""
    found: dict[str, list[str]] = {}
    for f in parse_fields(message, 0, header_end(message, 0, len(message))):
        if f.name in CACHED_FIELDS:
            found.setdefault(f.name, []).append(f.value)
    return {name: tuple(values) for name, values in found.items()}


def _record(line: Any) -> tuple[str, HeaderValues] | None:
    """A parsed line as (base, values), or None if it is not a well-formed record."""
    if not (isinstance(line, list) and len(line) == 2 and isinstance(line[0], str)):
        return None
    base, fields = line
    if not isinstance(fields, dict):
        return None
    values: HeaderValues = {}
    for name, items in fields.items():
        if name not in CACHED_FIELDS or not isinstance(items, list) or not items:
            return None
        if not all(isinstance(item, str) for item in items):
            return None
        values[name] = tuple(items)
    return base, values


def _encode(base: str, values: HeaderValues) -> bytes:
    # ASCII JSON: lone surrogates (header bytes that are not UTF-8) travel as \udcxx escapes.
    fields = {name: list(items) for name, items in values.items()}
    return json.dumps([base, fields], separators=(",", ":")).encode("ascii") + b"\n"


class HeaderCache:
    """The header cache of one folder, in memory and in its file (see the module docstring).

    Thread-safe. Lookups of a record already in memory take no lock and make no system
    call; a miss first reads what other processes appended since the last look.
    """

    def __init__(self, folder_dir: Path, *, compact_slack: int = _COMPACT_SLACK) -> None:
        self._path = os.path.join(folder_dir, _FILE)
        self._compact_slack = compact_slack
        self._records: dict[str, HeaderValues] = {}
        self._lock = threading.Lock()
        self._file_id: tuple[int, int] | None = None  # (inode, device) read so far
        self._offset = 0  # bytes of that file read so far
        self._lines = 0  # records in the file, as far as this object knows

    def get(self, base: str) -> HeaderValues | None:
        """The record of the message file ``base``, or None if there is none."""
        found = self._records.get(base)
        if found is None:
            with self._lock:
                self._read_new()
            found = self._records.get(base)
        return found

    def put_many(self, records: Sequence[tuple[str, HeaderValues]]) -> None:
        """Add records, in memory and at the end of the file (one write).

        A write that fails is logged and otherwise ignored: the records are then only in
        memory, and another process makes them again from the files.
        """
        if not records:
            return
        data = b"".join(_encode(base, values) for base, values in records)
        with self._lock:
            for base, values in records:
                self._records[base] = values
            try:
                fd = os.open(
                    self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600
                )
                try:
                    written = os.write(fd, data)
                    st = os.fstat(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                logger.warning("cannot write header cache path=%s reason=%s", self._path, exc)
                return
            self._lines += len(records)
            if (st.st_ino, st.st_dev) == self._file_id and st.st_size == self._offset + written:
                self._offset = st.st_size  # nobody else wrote meanwhile: no need to read it back

    def compact(self, live: Callable[[], Collection[str]], count: int) -> None:
        """Rewrite the file with the records of live messages only, if most of it is dead.

        Args:
            live: the base names of the messages the folder holds now.
            count: how many messages the folder holds (checked before ``live`` is called).
        """
        with self._lock:
            self._read_new()
            if self._lines <= 2 * count + self._compact_slack:
                return
            keep = set(live())
            self._records = {b: v for b, v in self._records.items() if b in keep}
            data = b"".join(_encode(base, values) for base, values in self._records.items())
            # A record another process appends between our read and the rename is lost;
            # it is made again from the message file when asked for.
            try:
                atomic_write(Path(self._path), data, fsync=False)
                st = os.stat(self._path)
            except OSError as exc:
                logger.warning("cannot compact header cache path=%s reason=%s", self._path, exc)
                return
            self._file_id, self._offset = (st.st_ino, st.st_dev), st.st_size
            self._lines = len(self._records)

    def _read_new(self) -> None:
        """Read the records appended since the last read (the caller holds the lock)."""
        try:
            st = os.stat(self._path)
        except FileNotFoundError:
            return
        file_id = (st.st_ino, st.st_dev)
        if file_id != self._file_id:  # compacted (or made) by someone: read it from the start
            self._file_id, self._offset, self._lines = file_id, 0, 0
        if st.st_size <= self._offset:
            return
        try:
            with open(self._path, "rb") as f:
                f.seek(self._offset)
                data = f.read(st.st_size - self._offset)
        except OSError as exc:
            logger.warning("cannot read header cache path=%s reason=%s", self._path, exc)
            return
        end = data.rfind(b"\n") + 1
        if end == 0:
            return  # a write in progress, or a crash's remains: nothing whole yet
        lines = data[:end].splitlines()
        try:
            parsed: list[Any] = json.loads(b"[" + b",".join(lines) + b"]")
        except ValueError:
            parsed = []
            for line in lines:  # one bad line (a torn write) must not hide the others
                try:
                    parsed.append(json.loads(line))
                except ValueError:
                    continue
        for item in parsed:
            record = _record(item)
            if record is not None:
                self._records[record[0]] = record[1]
        self._offset += end
        self._lines += len(lines)
