"""The JSON API: the original rmail's routes, kept exactly, and what API users add to them.

Every route but ``POST /auth/login`` needs ``Authorization: Bearer <token>``; ``/admin/*``
and ``/aliases`` need an admin account. A user only ever reaches their own mailbox: no
route takes another user's address. Store work runs in threads, never on the event loop.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiohttp import web

from rmail.auth import Authenticator
from rmail.delivery import Delivery
from rmail.errors import NotFound, PermissionDenied
from rmail.events import EventBus
from rmail.store import Store
from rmail.store.accounts import REVALIDATE_AFTER, Account
from rmail.web.http import ApiError
from rmail.web.tokens import TokenService

__all__ = ["API", "ApiServices", "current_account", "require_admin", "setup"]


@dataclass
class ApiServices:
    store: Store
    authenticator: Authenticator
    delivery: Delivery
    events: EventBus
    tokens: TokenService
    hostname: str
    max_message_size: int
    max_recipients: int
    relay_enabled: bool
    # exchange_api.webhook_allow_private at start-up (the dispatcher follows SIGHUP).
    webhook_allow_private: bool = False


API = web.AppKey("api", ApiServices)
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="rmail"'}


async def current_account(request: web.Request) -> Account:
    """The account of the request's bearer token. Raises ApiError 401."""
    services = request.app[API]
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "authentication required", _CHALLENGE)
    try:
        claims = services.tokens.verify(token.strip())
    except PermissionDenied as exc:
        raise ApiError(401, str(exc), _CHALLENGE) from None
    try:
        account = await asyncio.to_thread(
            services.store.accounts.get_user, claims.address, max_age=REVALIDATE_AFTER
        )
    except NotFound:
        raise ApiError(401, "invalid token", _CHALLENGE) from None
    if account.token_version != claims.version:
        raise ApiError(401, "token revoked", _CHALLENGE)
    if not account.enabled:
        raise ApiError(403, "account disabled")
    return account


async def require_admin(request: web.Request) -> Account:
    account = await current_account(request)
    if not account.admin:
        raise ApiError(403, "admin only")
    return account


def setup(app: web.Application, services: ApiServices) -> None:
    from rmail.web.api import admin, login, mail, send, webhooks

    app[API] = services
    login.setup(app)
    mail.setup(app)
    send.setup(app)
    admin.setup(app)
    webhooks.setup(app)
