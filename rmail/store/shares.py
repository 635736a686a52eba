"""Public share links of drive files and folders.

A share is a record ``{mail_root}/shares/{uid[:2]}/{uid}.json`` (uid: 32 random URL-safe
characters, the only thing that finds it) plus the owner's list of their share uids in
``drive/_shares.json``. Fields: ``uid``, ``owner``, ``target_path``, ``name``,
``permissions`` (a subset of ``RCUD``; R is always implied), ``expires`` (Unix time or
None), ``created``. An expired or deleted share is not found.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Final

from rmail.errors import InvalidInput, NotFound
from rmail.store.fsio import FileLock, atomic_write_json, read_json

__all__ = ["Share", "Shares", "normalize_permissions"]

UID_CHARS: Final = 32
_UID = re.compile(r"^[A-Za-z0-9_-]{32}$")
MAX_SHARES_PER_USER: Final = 1000


@dataclass(frozen=True, slots=True)
class Share:
    uid: str
    owner: str
    target_path: str
    name: str
    permissions: str
    expires: float | None
    created: float

    def allows(self, letter: str) -> bool:
        return letter == "R" or letter in self.permissions

    @property
    def expired(self) -> bool:
        return self.expires is not None and time.time() >= self.expires

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def normalize_permissions(text: str) -> str:
    """``"rw"``-style input is refused; ``"cru"`` -> ``"RCU"`` (R always included)."""
    letters = set(text.upper())
    if not letters <= set("RCUD"):
        raise InvalidInput("permissions are letters of RCUD (read, create, update, delete)")
    return "".join(ch for ch in "RCUD" if ch in letters | {"R"})


def is_share_uid(text: str) -> bool:
    return bool(_UID.match(text))


class Shares:
    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.dir = root / "shares"
        self.fsync = fsync

    def _path(self, uid: str) -> Path:
        return self.dir / uid[:2] / f"{uid}.json"

    def get(self, uid: str) -> Share:
        """The live share. Raises NotFound (unknown, malformed, expired)."""
        if not is_share_uid(uid):
            raise NotFound("no such share")
        try:
            data = read_json(self._path(uid))
        except (FileNotFoundError, ValueError):
            raise NotFound("no such share") from None
        share = Share(**data)
        if share.expired:
            raise NotFound("no such share")
        return share

    def get_owned(self, owner: str, uid: str) -> Share:
        """Like :meth:`get`, also for an expired share, but only the owner's."""
        if not is_share_uid(uid):
            raise NotFound("no such share")
        try:
            share = Share(**read_json(self._path(uid)))
        except (FileNotFoundError, ValueError):
            raise NotFound("no such share") from None
        if share.owner != owner:
            raise NotFound("no such share")
        return share

    def create(
        self,
        owner: str,
        owner_list: Path,
        target_path: str,
        *,
        name: str,
        permissions: str = "R",
        expires: float | None = None,
    ) -> Share:
        uid = secrets.token_urlsafe(24)
        assert len(uid) == UID_CHARS
        share = Share(uid, owner, target_path, name, normalize_permissions(permissions),
                      expires, time.time())  # fmt: skip
        with FileLock(owner_list.with_suffix(".lock")).hold():
            uids = _read_list(owner_list)
            if len(uids) >= MAX_SHARES_PER_USER:
                raise InvalidInput(f"at most {MAX_SHARES_PER_USER} shares per user")
            path = self._path(uid)
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(path, share.to_json(), fsync=self.fsync)
            atomic_write_json(owner_list, [*uids, uid], fsync=self.fsync)
        return share

    def list(self, owner: str, owner_list: Path) -> list[Share]:
        out = []
        for uid in _read_list(owner_list):
            with contextlib.suppress(NotFound):
                out.append(self.get_owned(owner, uid))
        return out

    def update(self, owner: str, uid: str, **changes: Any) -> Share:
        share = self.get_owned(owner, uid)
        if "permissions" in changes:
            changes["permissions"] = normalize_permissions(changes["permissions"])
        new = replace(share, **changes)
        atomic_write_json(self._path(uid), new.to_json(), fsync=self.fsync)
        return new

    def delete(self, owner: str, owner_list: Path, uid: str) -> None:
        self.get_owned(owner, uid)
        with FileLock(owner_list.with_suffix(".lock")).hold():
            os.unlink(self._path(uid))
            uids = [u for u in _read_list(owner_list) if u != uid]
            atomic_write_json(owner_list, uids, fsync=self.fsync)


def _read_list(path: Path) -> list[str]:
    try:
        data = read_json(path)
    except FileNotFoundError:
        return []
    return [str(u) for u in data] if isinstance(data, list) else []
