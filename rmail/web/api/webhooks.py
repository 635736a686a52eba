"""The logged-in user's webhooks: ``GET /webhooks``, ``POST /webhooks``,
``DELETE /webhooks/{id}``.

Hooks live in the user's own directory, so another user's id is simply not found (404).
The secret is shown once, in the answer to ``POST``; listings never include it. Sending
the events is :mod:`rmail.webhooks`' work.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from rmail.store.webhooks import Webhook
from rmail.web.api import API, current_account
from rmail.web.http import ApiError, field, json_body
from rmail.webhooks import check_target

__all__ = ["setup"]

_FIELDS = frozenset({"url", "events"})


def _hook_json(hook: Webhook, *, with_secret: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": hook.id,
        "url": hook.url,
        "events": list(hook.events),
        "created": hook.created,
    }
    if with_secret:
        out["secret"] = hook.secret
    return out


async def list_webhooks(request: web.Request) -> web.Response:
    account = await current_account(request)
    hooks = await asyncio.to_thread(request.app[API].store.webhooks.list, account.address)
    return web.json_response({"webhooks": [_hook_json(h) for h in hooks]})


async def create_webhook(request: web.Request) -> web.Response:
    account = await current_account(request)
    services = request.app[API]
    data = await json_body(request)
    unknown = set(data) - _FIELDS
    if unknown:
        raise ApiError(400, f"unknown field {sorted(unknown)[0]!r} (url, events)")
    url: str = field(data, "url", str)
    events: list[Any] | None = field(data, "events", list, required=False)
    check_target(url, services.webhook_allow_private)
    hook = await asyncio.to_thread(services.store.webhooks.add, account.address, url, events)
    return web.json_response(_hook_json(hook, with_secret=True), status=201)


async def delete_webhook(request: web.Request) -> web.Response:
    account = await current_account(request)
    hook_id = request.match_info["id"]
    await asyncio.to_thread(request.app[API].store.webhooks.delete, account.address, hook_id)
    return web.Response(status=204)


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/webhooks", list_webhooks)
    r.add_post("/webhooks", create_webhook)
    r.add_delete("/webhooks/{id}", delete_webhook)
