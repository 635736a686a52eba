"""The HTTP application: one aiohttp app behind the HTTP and HTTPS listeners.

Each HTTP area (API, CalDAV, drive, webmail, autoconfig) is a subpackage that adds its
routes here. App state lives under typed :class:`aiohttp.web.AppKey` keys.

Routes now: ``GET /health`` (liveness and readiness for load balancers and monitors), and
client autoconfiguration (:mod:`rmail.web.autoconfig`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

from aiohttp import web

from rmail import __version__
from rmail.config import Config
from rmail.store import Store
from rmail.web import autoconfig

__all__ = ["CONFIG", "PORTS", "STARTED", "STORE", "make_app"]

CONFIG = web.AppKey("config", Config)
STORE = web.AppKey("store", Store)
STARTED = web.AppKey("started", float)
# The ports actually bound, by run/ports.json name; the server fills the dict after binding.
PORTS = web.AppKey("ports", Mapping[str, int])


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
    config: Config, store: Store, ports: Mapping[str, int] | None = None
) -> web.Application:
    """Build the HTTP application for ``config`` on ``store``.

    Args:
        config: the configuration.
        store: the data directory.
        ports: the ports actually bound (``{"imaps": 993, ...}``). The app keeps this very
            mapping, so a caller may fill it after this call, before the first request;
            a port missing from it is taken from ``config``.
    """
    app = web.Application(client_max_size=config.smtp.max_message_size + 1024 * 1024)
    app[CONFIG] = config
    app[STORE] = store
    app[STARTED] = time.monotonic()
    app[PORTS] = ports if ports is not None else {}
    app.router.add_get("/health", health)
    autoconfig.setup(app, config, store, app[PORTS])
    return app
