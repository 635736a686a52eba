"""The outbound relay queue on disk: ``{mail_root}/queue/{id}.eml`` + ``{id}.json``.

A message is queued by writing its ``.eml`` (fsynced) and then its ``.json`` record
(atomic, fsynced); the record's presence is what makes the entry exist, so a crash between
the two leaves an orphan ``.eml`` that no one sends, never a record without its message.
The SMTP server answers ``250`` only after :meth:`Queue.enqueue` returns.

The record: ``id``, ``mail_from``, ``created`` (Unix time), ``next_try``, ``attempts``,
``recipients`` (each ``{address, status: pending|sent|failed, attempts, last_error}``).
The relay service (``rmail/relay/``) takes due entries and updates them through
:meth:`Queue.update`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from rmail.errors import InvalidInput, NotFound
from rmail.store.fsio import atomic_write

__all__ = ["Queue", "QueueEntry", "QueueRecipient", "RecipientStatus"]

RecipientStatus = Literal["pending", "sent", "failed"]


@dataclass(frozen=True, slots=True)
class QueueRecipient:
    address: str
    status: RecipientStatus = "pending"
    attempts: int = 0
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class QueueEntry:
    id: str
    mail_from: str
    recipients: tuple[QueueRecipient, ...]
    created: float
    next_try: float
    attempts: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["recipients"] = [asdict(r) for r in self.recipients]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> QueueEntry:
        return cls(
            id=str(data["id"]),
            mail_from=str(data["mail_from"]),
            recipients=tuple(QueueRecipient(**r) for r in data["recipients"]),
            created=float(data["created"]),
            next_try=float(data["next_try"]),
            attempts=int(data.get("attempts", 0)),
            extra=dict(data.get("extra", {})),
        )


class Queue:
    """The queue directory. Methods block; callers off the event loop use a thread."""

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.dir = root / "queue"
        self.fsync = fsync

    def enqueue(self, message: bytes, mail_from: str, recipients: Sequence[str]) -> QueueEntry:
        """Store a message for relaying; durable when this returns.

        Raises:
            InvalidInput: no recipients.
            TemporaryFailure: the disk refused the write.
        """
        if not recipients:
            raise InvalidInput("a queued message needs at least one recipient")
        self.dir.mkdir(parents=True, exist_ok=True)
        now = time.time()
        entry = QueueEntry(
            id=f"{int(now):x}{secrets.token_hex(6)}",
            mail_from=mail_from,
            recipients=tuple(QueueRecipient(r) for r in dict.fromkeys(recipients)),
            created=now,
            next_try=now,
        )
        atomic_write(self.dir / f"{entry.id}.eml", message, fsync=self.fsync)
        self._write(entry)
        return entry

    def _write(self, entry: QueueEntry) -> None:
        data = json.dumps(entry.to_json(), indent=1, ensure_ascii=False).encode()
        atomic_write(self.dir / f"{entry.id}.json", data, fsync=self.fsync)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialises changes to existing records between the server and ``rmail queue``."""
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def update(self, entry: QueueEntry, **changes: Any) -> QueueEntry:
        """Write a changed record (attempts, next_try, recipients' states).

        Raises:
            NotFound: the entry was deleted meanwhile (``rmail queue delete``); it stays so.
        """
        new = replace(entry, **changes)
        with self._locked():
            if not (self.dir / f"{entry.id}.json").exists():
                raise NotFound(f"no queued message {entry.id!r}")
            self._write(new)
        return new

    def retry_now(self, entry_id: str) -> QueueEntry:
        """Make an entry due now (``rmail queue retry`` / ``flush``). Raises NotFound."""
        with self._locked():
            entry = self.get(entry_id)
            new = replace(entry, next_try=min(entry.next_try, time.time()))
            self._write(new)
        return new

    def get(self, entry_id: str) -> QueueEntry:
        """Raises NotFound (also for an id that is not a queue id)."""
        if not entry_id.isalnum():
            raise NotFound(f"no queued message {entry_id!r}")
        try:
            with open(self.dir / f"{entry_id}.json", "rb") as f:
                return QueueEntry.from_json(json.loads(f.read()))
        except FileNotFoundError:
            raise NotFound(f"no queued message {entry_id!r}") from None

    def message(self, entry_id: str) -> bytes:
        """The queued message's bytes. Raises NotFound."""
        self.get(entry_id)
        return (self.dir / f"{entry_id}.eml").read_bytes()

    def entries(self) -> list[QueueEntry]:
        """Every queued entry, oldest first."""
        if not self.dir.is_dir():
            return []
        found = []
        for path in self.dir.glob("*.json"):
            with contextlib.suppress(NotFound):
                found.append(self.get(path.name[:-5]))
        return sorted(found, key=lambda e: (e.created, e.id))

    def delete(self, entry_id: str) -> None:
        """Remove an entry (record first, so a crash never leaves a record without message)."""
        with self._locked():
            self.get(entry_id)
            os.unlink(self.dir / f"{entry_id}.json")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.dir / f"{entry_id}.eml")
