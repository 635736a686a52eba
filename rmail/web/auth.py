"""Who is calling: HTTP Basic (``user@domain:password``) or a JSON API bearer token.

Used by the areas that file managers, calendar apps and ``curl`` reach (CalDAV, drive).
Basic passwords go through the shared login limiter and the verified-credentials cache.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import Final

from aiohttp import web

from rmail.errors import NotFound, PermissionDenied
from rmail.store.accounts import REVALIDATE_AFTER, Account
from rmail.web.api import API
from rmail.web.http import ApiError

__all__ = ["CHALLENGE", "authenticate"]

CHALLENGE: Final = {"WWW-Authenticate": 'Basic realm="rmail", charset="UTF-8"'}


async def authenticate(request: web.Request, protocol: str) -> Account:
    """The account behind the request's Authorization header. Raises ApiError 401 (or
    RateLimited for a locked-out client)."""
    services = request.app[API]
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise ApiError(401, "malformed Basic credentials", CHALLENGE) from None
        user, sep, password = decoded.partition(":")
        if not sep:
            raise ApiError(401, "malformed Basic credentials", CHALLENGE)
        try:
            return await services.authenticator.login(user, password, request.remote, protocol)
        except PermissionDenied:
            raise ApiError(401, "invalid credentials", CHALLENGE) from None
    if scheme.lower() == "bearer":
        try:
            claims = services.tokens.verify(value.strip())
            account = await asyncio.to_thread(
                services.store.accounts.get_user, claims.address, max_age=REVALIDATE_AFTER
            )
        except (PermissionDenied, NotFound):
            raise ApiError(401, "invalid token", CHALLENGE) from None
        if account.token_version != claims.version or not account.enabled:
            raise ApiError(401, "token revoked", CHALLENGE)
        return account
    raise ApiError(401, "authentication required", CHALLENGE)
