"""What the drive's request handlers share: the per-user Drive, hrefs, WebDAV lock checks.

Lock checks follow RFC 4918 §10.4: an ``If`` header that is present must hold (else 412),
and changing a locked resource needs one of its lock tokens in that header (else 423).
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from aiohttp import web

from rmail.errors import InvalidInput, NotFound
from rmail.store.drive import Drive, Entry, split_path
from rmail.store.shares import Shares
from rmail.web.api import API
from rmail.web.davxml import DAV, element, error_body, href, to_bytes
from rmail.web.drive.ifheader import IfList, parse_if
from rmail.web.drive.locks import LockTable
from rmail.web.http import ApiError

__all__ = [
    "DRIVES",
    "PREFIX",
    "DriveServices",
    "RenderCache",
    "check_if",
    "drive_of",
    "href_of",
    "path_of_url",
    "require_unlocked",
]

PREFIX: Final = "/drive"


class RenderCache:
    """Rendered folder listings (JSON or multistatus bytes), by user, path and form, kept
    while the folder's :meth:`Drive.version` is unchanged: clients poll folders, and a
    10,000-entry folder costs far more to render than to check."""

    def __init__(self, entries: int = 256, max_bytes: int = 64 * 1024 * 1024) -> None:
        self._entries = entries
        self._max_bytes = max_bytes
        self._bytes = 0
        self._data: dict[tuple[str, ...], tuple[tuple[int, ...], bytes]] = {}

    def get(self, key: tuple[str, ...], version: tuple[int, ...]) -> bytes | None:
        hit = self._data.get(key)
        return hit[1] if hit is not None and hit[0] == version else None

    def put(self, key: tuple[str, ...], version: tuple[int, ...], body: bytes) -> None:
        if len(body) > self._max_bytes // 4:
            return
        if len(self._data) >= self._entries or self._bytes + len(body) > self._max_bytes:
            self._data.clear()
            self._bytes = 0
        old = self._data.pop(key, None)
        if old is not None:
            self._bytes -= len(old[1])
        self._data[key] = (version, body)
        self._bytes += len(body)


@dataclass
class DriveServices:
    shares: Shares
    drives: dict[str, Drive]
    locks: LockTable
    rendered: RenderCache = field(default_factory=RenderCache)


DRIVES = web.AppKey("drives", DriveServices)


def drive_of(request: web.Request, address: str) -> Drive:
    services = request.app[DRIVES]
    found = services.drives.get(address)
    if found is None:
        store = request.app[API].store
        root = store.accounts.user_dir(address) / "drive"

        def quota() -> tuple[int, int]:
            limit = store.accounts.mail_quota_bytes(address)
            return limit, store.mailbox(address).usage_bytes()

        found = Drive(root, fsync=store.fsync, quota=quota)
        if len(services.drives) > 10_000:
            services.drives.clear()
        services.drives[address] = found
    return found


def owner_list(request: web.Request, address: str) -> Path:
    return request.app[API].store.accounts.user_dir(address) / "drive" / "_shares.json"


def href_of(parts: list[str] | tuple[str, ...], is_dir: bool) -> str:
    """The URL path of a drive path; folders end in ``/``."""
    quoted = "/".join(urllib.parse.quote(p, safe="") for p in parts)
    path = f"{PREFIX}/{quoted}"
    if is_dir and parts:
        path += "/"
    return path


def path_of_url(request: web.Request, raw: str) -> tuple[str, ...] | None:
    """The drive path a URL or absolute path names, or None when it is elsewhere (another
    host, or outside ``/drive/``)."""
    split = urllib.parse.urlsplit(raw)
    if split.netloc and split.netloc.lower() != request.host.lower():
        return None
    path = split.path
    if path == PREFIX:
        return ()
    if not path.startswith(PREFIX + "/"):
        return None
    segments = [urllib.parse.unquote(s) for s in path[len(PREFIX) + 1 :].split("/") if s]
    try:
        return tuple(split_path("/".join(segments))) if segments else ()
    except InvalidInput:
        return None


# -- If header and locks -----------------------------------------------------------------------


def _if_lists(request: web.Request) -> list[IfList]:
    value = request.headers.get("If")
    if not value:
        return []
    return parse_if(value)


def submitted_tokens(request: web.Request) -> set[str]:
    """Every state token named in the If header (negated ones too do not count)."""
    return {
        c.token
        for lst in _if_lists(request)
        for c in lst.conditions
        if c.token is not None and not c.negated
    }


def check_if(request: web.Request, user: str, drive: Drive, path: tuple[str, ...]) -> None:
    """Evaluate the If header, if any: one of its lists must hold. Raises 412 (400 when
    it cannot be parsed)."""
    lists = _if_lists(request)
    if not lists:
        return
    table = request.app[DRIVES].locks
    for lst in lists:
        target = path if lst.resource is None else path_of_url(request, lst.resource)
        if target is None:
            continue
        try:
            entry: Entry | None = drive.stat("/".join(target))
        except NotFound:
            entry = None
        tokens = {lock.token for lock in table.covering(user, target)}
        if all(_holds(c.token, c.etag, entry, tokens) != c.negated for c in lst.conditions):
            return
    raise ApiError(412, "the If header does not hold")


def _holds(token: str | None, etag: str | None, entry: Entry | None, tokens: set[str]) -> bool:
    if token is not None:
        return token in tokens
    if entry is None or not entry.etag or etag is None:
        return False
    return etag.removeprefix("W/") == entry.etag


def require_unlocked(
    request: web.Request,
    user: str,
    path: tuple[str, ...],
    *,
    members: bool = False,
    tree: bool = False,
) -> None:
    """Refuse (423) to change ``path`` while a lock covers it and none of its tokens was
    submitted. ``members``: the parent's membership changes too (create, delete, move), so
    a depth-0 lock on the parent counts; ``tree``: locks anywhere below count (a folder is
    deleted or moved)."""
    table = request.app[DRIVES].locks
    locks = table.covering(user, path)
    if members and path:
        locks += [lock for lock in table.covering(user, path[:-1]) if lock not in locks]
    if tree:
        locks += [lock for lock in table.below(user, path) if lock not in locks]
    if not locks:
        return
    given = submitted_tokens(request)
    roots: dict[tuple[str, ...], set[str]] = {}
    for lock in locks:
        roots.setdefault(lock.path, set()).add(lock.token)
    for lock in locks:
        if not roots[lock.path] & given:
            root = element(f"{{{DAV}}}lock-token-submitted", None, href(href_of(lock.path, True)))
            body = to_bytes(element(f"{{{DAV}}}error", None, root))
            raise ApiError(423, "the resource is locked", xml=body)


def precondition(status: int, condition: str) -> ApiError:
    return ApiError(status, condition, xml=error_body(condition))
