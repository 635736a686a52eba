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
from rmail.store.drive import Drive, split_path
from rmail.store.shares import Shares
from rmail.web import davlocks
from rmail.web.api import API
from rmail.web.davif import IfList, parse_if
from rmail.web.davlocks import LockTable
from rmail.web.davxml import error_body, to_bytes
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
    """Every state token named in the If header (negated ones do not count)."""
    return davlocks.submitted_tokens(_if_lists(request))


def check_if(request: web.Request, user: str, drive: Drive, path: tuple[str, ...]) -> None:
    """Evaluate the If header, if any: one of its lists must hold. Raises 412 (400 when
    it cannot be parsed)."""
    lists = _if_lists(request)
    if not lists:
        return

    def target_of(resource: str | None) -> tuple[str, ...] | None:
        return path if resource is None else path_of_url(request, resource)

    def etag_of(target: tuple[str, ...]) -> str | None:
        try:
            return drive.stat("/".join(target)).etag or None
        except NotFound:
            return None

    if not davlocks.if_holds(lists, user, request.app[DRIVES].locks, target_of, etag_of):
        raise ApiError(412, "the If header does not hold")


def require_unlocked(
    request: web.Request,
    user: str,
    path: tuple[str, ...],
    *,
    members: bool = False,
    tree: bool = False,
) -> None:
    """Refuse (423) to change ``path`` while a lock covers it and none of its tokens was
    submitted (see :func:`rmail.web.davlocks.blocking_lock` for ``members`` and ``tree``)."""
    table = request.app[DRIVES].locks
    found = davlocks.blocking_lock(
        table, user, path, submitted_tokens(request), members=members, tree=tree
    )
    if found is not None:
        body = to_bytes(davlocks.lock_token_submitted(href_of(found.path, True)))
        raise ApiError(423, "the resource is locked", xml=body)


def precondition(status: int, condition: str) -> ApiError:
    return ApiError(status, condition, xml=error_body(condition))
