"""Webmail preferences of one user: ``users/{user}/webmail.json``.

One JSON object of sections (``{"calendar": {...}, ...}``), each owned by one webmail area,
which reads and writes only its own section. Writes hold ``webmail.lock`` (flock) and
replace the file atomically, so two areas (or two servers) updating their sections at once
both keep their change. Reads take no lock. Nothing here knows HTTP.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from rmail.store.fsio import FileLock, atomic_write_json, read_json

__all__ = ["Preferences"]

_FILE: Final = "webmail.json"
_LOCK: Final = "webmail.lock"


class Preferences:
    """The webmail preferences of the user whose directory is ``user_dir``."""

    def __init__(self, user_dir: Path, *, fsync: bool = True) -> None:
        self.path = user_dir / _FILE
        self._lock_path = user_dir / _LOCK
        self.fsync = fsync

    def read(self) -> dict[str, Any]:
        """Every section; an empty object when nothing was saved yet (or the file is bad)."""
        try:
            data = read_json(self.path)
        except FileNotFoundError:
            return {}
        except (json.JSONDecodeError, UnicodeDecodeError):
            # A damaged file loses the preferences, never the page: they are only settings.
            return {}
        return data if isinstance(data, dict) else {}

    def section(self, name: str) -> dict[str, Any]:
        value = self.read().get(name)
        return dict(value) if isinstance(value, dict) else {}

    def update(self, name: str, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Apply ``change`` to section ``name`` under the lock and save; returns the section.

        Raises:
            TemporaryFailure: the lock stayed busy, or the disk refused the write.
        """
        lock = FileLock(self._lock_path)
        try:
            with lock.hold():
                data = self.read()
                current = data.get(name)
                section = dict(current) if isinstance(current, dict) else {}
                change(section)
                data[name] = section
                atomic_write_json(self.path, data, fsync=self.fsync)
        finally:
            lock.close()
        return section
