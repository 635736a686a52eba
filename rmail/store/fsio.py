"""The only place that renames, fsyncs and flocks.

Rules (ARCHITECTURE "Rules of the store"):

- every write is atomic: a temp file in the same folder, fsync, rename, fsync the folder;
- an index is changed only under ``fcntl.flock`` on its sidecar ``.lock`` file, and the lock
  is held for the update only;
- a name that comes from a client goes through :func:`check_component` /
  :func:`safe_join`, so it can never leave the folder it is meant for.

Each :class:`FileLock` also holds a ``threading.Lock``: flock belongs to an open file
description, so two threads of one process sharing the descriptor would otherwise both
"hold" it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from rmail.errors import InvalidInput, TemporaryFailure

__all__ = [
    "FileLock",
    "atomic_write",
    "atomic_write_json",
    "check_component",
    "fsync_dir",
    "read_json",
    "safe_join",
    "unique_name",
]

# POSIX NAME_MAX on every filesystem we support.
MAX_COMPONENT_BYTES: Final = 255
_counter_lock = threading.Lock()
_counter = 0


def fsync_dir(path: Path) -> None:
    """fsync a directory so a rename or unlink inside it is durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def unique_name(hostname: str = "") -> str:
    """A Maildir-style unique name: ``{sec}.M{usec}P{pid}Q{n}.{host}`` (cr.yp.to/proto/maildir)."""
    global _counter  # noqa: PLW0603 - a process-wide sequence is the point
    with _counter_lock:
        _counter += 1
        n = _counter
    now = time.time()
    sec = int(now)
    usec = int((now - sec) * 1_000_000)
    host = (hostname or os.uname().nodename).replace("/", "\\057").replace(":", "\\072")
    return f"{sec}.M{usec}P{os.getpid()}Q{n}.{host}"


def atomic_write(path: Path, data: bytes, *, fsync: bool = True, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` so that a reader sees the old or the new file, never a mix.

    Raises:
        TemporaryFailure: the disk refused the write (full, read-only); the old file stays.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        if fsync:
            fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise TemporaryFailure(f"cannot write {path.name}: {exc.strerror}") from exc


def atomic_write_json(path: Path, value: Any, *, fsync: bool = True) -> None:
    """:func:`atomic_write` of ``value`` as indented UTF-8 JSON."""
    data = json.dumps(value, indent=1, ensure_ascii=False, sort_keys=True).encode() + b"\n"
    atomic_write(path, data, fsync=fsync)


def read_json(path: Path) -> Any:
    """Read a JSON file written by :func:`atomic_write_json`; ``FileNotFoundError`` passes."""
    with open(path, "rb") as f:
        return json.loads(f.read())


class FileLock:
    """An exclusive lock on a sidecar lock file, for threads of this process and other processes.

    The descriptor stays open between uses (opening it costs more than the lock itself).
    """

    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        self.path = path
        self.timeout = timeout
        self._thread_lock = threading.Lock()
        self._fd: int | None = None

    def _open(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return self._fd

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Hold the lock for the body of a ``with``.

        Raises:
            TemporaryFailure: another holder kept it longer than ``timeout`` seconds.
        """
        if not self._thread_lock.acquire(timeout=self.timeout):
            raise TemporaryFailure(f"{self.path.name} is busy, try again")
        try:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._wait(fd)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()

    def _wait(self, fd: int) -> None:
        deadline = time.monotonic() + self.timeout
        delay = 0.0005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TemporaryFailure(f"{self.path.name} is busy, try again") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.02)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def check_component(name: str, *, what: str = "name") -> str:
    """Return ``name`` if it is safe as one path component, else raise ``InvalidInput``.

    Refused: empty, ``.``/``..``, ``/``, ``\\``, NUL and other control characters, and more
    than 255 bytes of UTF-8.
    """
    if not name or name in {".", ".."}:
        raise InvalidInput(f"invalid {what}: {name!r}")
    if any(ch in "/\\" or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in name):
        raise InvalidInput(f"invalid {what}: contains '/', '\\' or a control character")
    if len(name.encode("utf-8", "surrogateescape")) > MAX_COMPONENT_BYTES:
        raise InvalidInput(f"invalid {what}: longer than {MAX_COMPONENT_BYTES} bytes")
    return name


def safe_join(root: Path, *parts: str) -> Path:
    """Join checked components under ``root``; the result can never point outside it."""
    path = root
    for part in parts:
        path = path / check_component(part, what="path component")
    return path
