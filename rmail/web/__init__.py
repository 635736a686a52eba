"""The HTTP application: one aiohttp app behind the HTTP and HTTPS listeners.

Each HTTP area (API, CalDAV, drive, webmail, autoconfig) is a subpackage that adds its
routes here. App state lives under typed :class:`aiohttp.web.AppKey` keys. Every response
of an error is ``{"error": ...}`` (:mod:`rmail.web.http`).

Routes now: ``GET /health`` (liveness and readiness for load balancers and monitors),
``/metrics``, the JSON API (:mod:`rmail.web.api`, described at ``/openapi.json``) and
client autoconfiguration (:mod:`rmail.web.autoconfig`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from rmail import __version__
from rmail.auth import Authenticator
from rmail.config import Config
from rmail.delivery import Delivery
from rmail.events import EventBus
from rmail.metrics import HTTP_LATENCY, HTTP_REQUESTS, REGISTRY
from rmail.scheduling import Scheduling
from rmail.store import Store
from rmail.store.keys import ensure_jwt_key
from rmail.web import api, autoconfig, dav, drive, openapi, webmail
from rmail.web.http import Handler, cors_middleware, error_middleware
from rmail.web.tokens import TokenService
from rmail.web.webmail import calendar as webmail_calendar

__all__ = ["CONFIG", "PORTS", "STARTED", "STATUS", "STORE", "make_app"]

CONFIG = web.AppKey("config", Config)
STORE = web.AppKey("store", Store)
STARTED = web.AppKey("started", float)
# What the running server reports about itself for /health (listeners, queue length).
StatusSource = Callable[[], dict[str, Any]]
STATUS: web.AppKey[StatusSource] = web.AppKey("status")
# The ports actually bound, by run/ports.json name; the server fills the dict after binding.
PORTS: web.AppKey[Mapping[str, int]] = web.AppKey("ports")


async def health(request: web.Request) -> web.Response:
    """200 when the data directory is readable and every listener serves; 503 otherwise.

    ``listeners`` maps each listener (smtp, submission, smtps, imap, imaps, http, https) to
    ``{"port": n, "serving": bool}``; ``queue`` is the outbound queue's length.
    """
    store = request.app[STORE]
    ok = await asyncio.to_thread((store.root / "domains").is_dir)
    status = request.app[STATUS]()
    listeners = status.get("listeners", {})
    serving = all(item.get("serving") for item in listeners.values())
    body = {
        "status": "ok" if ok and serving else "unavailable",
        "version": __version__,
        "uptime_seconds": round(time.monotonic() - request.app[STARTED], 1),
        **status,
    }
    return web.json_response(body, status=200 if ok and serving else 503)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format (counts only: no addresses or names in any label)."""
    body = await asyncio.to_thread(generate_latest, REGISTRY)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        if route.startswith("/docs/static"):
            route = "/docs/static"
        HTTP_REQUESTS.labels(route, request.method, str(status)).inc()
        HTTP_LATENCY.labels(route).observe(time.perf_counter() - started)


def make_app(
    config: Config,
    store: Store,
    *,
    authenticator: Authenticator,
    delivery: Delivery,
    events: EventBus,
    status: StatusSource = dict,
    ports: Mapping[str, int] | None = None,
    scheduling: Scheduling | None = None,
) -> web.Application:
    """Build the HTTP application for ``config`` on ``store`` and the server's services."""
    # Bodies are read by each route with its own limit; this is only the outer bound (a
    # message with base64 attachments in a JSON send request).
    app = web.Application(
        client_max_size=config.smtp.max_message_size * 4 // 3 + 1024 * 1024,
        middlewares=[metrics_middleware, cors_middleware, error_middleware],
    )
    app[CONFIG] = config
    app[STORE] = store
    app[STARTED] = time.monotonic()
    app[STATUS] = status
    # The caller's own mapping: ports bound after this call show up in the app too; a port
    # missing from it is taken from config.
    app[PORTS] = ports if ports is not None else {}
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    openapi.setup(app)
    autoconfig.setup(app, config, store, app[PORTS])
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
    dav.setup(app, scheduling)
    drive.setup(app)
    webmail.setup(app)
    if scheduling is not None:
        # Invitations, cancellations and answers made in the webmail calendar are mailed.
        app[webmail_calendar.SCHEDULING] = scheduling.for_webmail
    return app
