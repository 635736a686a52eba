"""The HTTP application: one aiohttp app behind the HTTP and HTTPS listeners.

Each HTTP area (API, CalDAV, drive, webmail, autoconfig) is a subpackage that adds its
routes here. App state lives under typed :class:`aiohttp.web.AppKey` keys. Every response
of an error is ``{"error": ...}`` (:mod:`rmail.web.http`).

Routes now: ``GET /health`` (liveness and readiness for load balancers and monitors) and
the JSON API (:mod:`rmail.web.api`).
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from rmail import __version__
from rmail.auth import Authenticator
from rmail.config import Config
from rmail.delivery import Delivery
from rmail.events import EventBus
from rmail.store import Store
from rmail.store.keys import ensure_jwt_key
from rmail.web import api
from rmail.web.http import cors_middleware, error_middleware
from rmail.web.tokens import TokenService

__all__ = ["CONFIG", "STARTED", "STORE", "make_app"]

CONFIG = web.AppKey("config", Config)
STORE = web.AppKey("store", Store)
STARTED = web.AppKey("started", float)


async def health(request: web.Request) -> web.Response:
    """200 when the data directory is readable; 503 otherwise."""
    store = request.app[STORE]
    ok = await asyncio.to_thread((store.root / "domains").is_dir)
    body = {
        "status": "ok" if ok else "unavailable",
        "version": __version__,
        "uptime_seconds": round(time.monotonic() - request.app[STARTED], 1),
    }
    return web.json_response(body, status=200 if ok else 503)


def make_app(
    config: Config,
    store: Store,
    authenticator: Authenticator,
    delivery: Delivery,
    events: EventBus,
) -> web.Application:
    """Build the HTTP application for ``config`` on ``store`` and the server's services."""
    # Bodies are read by each route with its own limit; this is only the outer bound (a
    # message with base64 attachments in a JSON send request).
    app = web.Application(
        client_max_size=config.smtp.max_message_size * 4 // 3 + 1024 * 1024,
        middlewares=[cors_middleware, error_middleware],
    )
    app[CONFIG] = config
    app[STORE] = store
    app[STARTED] = time.monotonic()
    app.router.add_get("/health", health)
    secret = config.exchange_api.token_secret
    key = secret.encode() if secret is not None else ensure_jwt_key(config.root)
    api.setup(
        app,
        api.ApiServices(
            store=store,
            authenticator=authenticator,
            delivery=delivery,
            events=events,
            tokens=TokenService(key, config.exchange_api.token_lifetime),
            hostname=config.hostname,
            max_message_size=config.smtp.max_message_size,
            max_recipients=config.smtp.max_recipients,
            relay_enabled=config.relay.enabled,
            webhook_allow_private=config.exchange_api.webhook_allow_private,
        ),
    )
    return app
