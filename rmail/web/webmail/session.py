"""Webmail sessions: a signed cookie, and a CSRF token on every form.

The cookie ``rmail_session`` is a JWT (HS256, the server's key) with the account, its
``token_version`` (a password change ends every session), an expiry and the session's CSRF
token. It is HttpOnly, SameSite=Lax, Secure over HTTPS, and scoped to ``/webmail``. Every
POST must carry ``csrf`` equal to the session's token (compared in constant time).

Logging out deletes the cookie and also records the session's id (``sid``) as ended, so a
copy of the cookie taken before the logout no longer works. That record is kept in memory
until the session would have expired anyway (a restart forgets it; a password change ends
every session for good through ``token_version``).
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Final

import jwt
from aiohttp import web

from rmail.errors import NotFound
from rmail.store.accounts import REVALIDATE_AFTER, Account
from rmail.web.api import API

__all__ = [
    "COOKIE",
    "ENDED",
    "Session",
    "check_csrf",
    "end_session",
    "load_session",
    "start_session",
]

COOKIE: Final = "rmail_session"
AUDIENCE: Final = "webmail"
LIFETIME: Final = 7 * 24 * 3600
PATH: Final = "/webmail"
# Ids of sessions ended by a logout -> when their cookie expires anyway (epoch seconds).
ENDED: web.AppKey[dict[str, int]] = web.AppKey("webmail_ended_sessions")


@dataclass(frozen=True, slots=True)
class Session:
    account: Account
    csrf: str
    sid: str
    expires: int


def _key(request: web.Request) -> bytes:
    return request.app[API].tokens.secret


def start_session(request: web.Request, response: web.StreamResponse, account: Account) -> str:
    csrf = secrets.token_urlsafe(24)
    now = int(time.time())
    token = jwt.encode(
        {"sub": account.address, "ver": account.token_version, "csrf": csrf, "aud": AUDIENCE,
         "sid": secrets.token_urlsafe(16), "iat": now, "exp": now + LIFETIME},
        _key(request),
        algorithm="HS256",
    )  # fmt: skip
    response.set_cookie(
        COOKIE,
        token,
        max_age=LIFETIME,
        path=PATH,
        httponly=True,
        samesite="Lax",
        secure=request.secure,
    )
    return csrf


def end_session(request: web.Request, response: web.StreamResponse, session: Session) -> None:
    """Delete the cookie, and refuse the session's token from now on (a copy of it too)."""
    ended = request.app[ENDED]
    now = int(time.time())
    for sid in [sid for sid, expires in ended.items() if expires < now]:
        del ended[sid]
    ended[session.sid] = session.expires
    response.del_cookie(COOKIE, path=PATH)


async def load_session(request: web.Request) -> Session | None:
    """The session of the request's cookie, or None (no cookie, bad, expired or revoked)."""
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    try:
        claims = jwt.decode(token, _key(request), algorithms=["HS256"], audience=AUDIENCE,
                            options={"require": ["sub", "ver", "csrf", "sid", "exp"]})  # fmt: skip
    except jwt.PyJWTError:
        return None
    sid = str(claims["sid"])
    if sid in request.app[ENDED]:
        return None
    store = request.app[API].store
    try:
        account = await asyncio.to_thread(
            store.accounts.get_user, str(claims["sub"]), max_age=REVALIDATE_AFTER
        )
    except NotFound:
        return None
    if account.token_version != claims["ver"] or not account.enabled:
        return None
    return Session(account, str(claims["csrf"]), sid, int(claims["exp"]))


def check_csrf(session: Session, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(session.csrf, str(given))
