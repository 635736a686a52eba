"""COPY and MOVE on the drive (RFC 4918 §9.8-9.9).

``Destination`` is an absolute URL or path below ``/drive/`` on this host (elsewhere: 502).
201 when the destination is new, 204 when it replaced something; ``Overwrite: F`` and an
existing destination: 412; a missing destination parent: 409; a resource onto itself: 403.
COPY takes Depth 0 (a folder without its members) or infinity; MOVE moves whole trees.
Dead properties travel with the resource; locks do not.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from rmail.errors import AlreadyExists, NotFound
from rmail.store.drive import Drive, split_path
from rmail.web.drive.base import DRIVES, check_if, path_of_url, require_unlocked
from rmail.web.http import ApiError

__all__ = ["copy_or_move", "destination"]


def destination(request: web.Request) -> tuple[str, ...]:
    raw = request.headers.get("Destination", "")
    if not raw:
        raise ApiError(400, f"{request.method} needs a Destination header")
    target = path_of_url(request, raw)
    if target is None:
        raise ApiError(502, "the Destination is not in this drive")
    return target


def overwrite(request: web.Request) -> bool:
    value = request.headers.get("Overwrite", "T").strip().upper()
    if value not in ("T", "F"):
        raise ApiError(400, "Overwrite is T or F")
    return value == "T"


async def copy_or_move(request: web.Request, user: str, drive: Drive, path: str) -> web.Response:
    is_move = request.method == "MOVE"
    src = tuple(split_path(path))
    dst = destination(request)
    if not src:
        raise ApiError(403, "the root folder cannot be copied or moved")
    if not dst:
        raise ApiError(403, "nothing can replace the root folder")
    if src == dst:
        raise ApiError(403, "the source and the destination are the same")
    if dst[: len(src)] == src:
        raise ApiError(403, "a folder cannot go into itself")
    await asyncio.to_thread(drive.stat, path)  # 404 before anything else
    depth = request.headers.get("Depth", "infinity").strip().lower()
    if depth not in ("0", "infinity") or (is_move and depth != "infinity"):
        raise ApiError(400, "Depth is infinity (or 0 for COPY)")
    replace = overwrite(request)
    target = "/".join(dst)
    try:
        await asyncio.to_thread(drive.stat, "/".join(dst[:-1]))
    except NotFound:
        raise ApiError(409, "the destination folder does not exist") from None
    check_if(request, user, drive, src)
    if is_move:
        require_unlocked(request, user, src, members=True, tree=True)
    require_unlocked(request, user, dst, members=True, tree=True)
    try:
        if is_move:
            _, created = await asyncio.to_thread(
                lambda: drive.move(path, target, overwrite=replace)
            )
        else:
            _, created = await asyncio.to_thread(
                lambda: drive.copy(path, target, overwrite=replace, recursive=depth == "infinity")
            )
    except AlreadyExists:
        raise ApiError(412, "the destination exists (Overwrite: F)") from None
    table = request.app[DRIVES].locks
    if is_move:
        table.drop_below(user, src)
    if not created:
        table.drop_below(user, dst)
    return web.Response(status=201 if created else 204)
