"""The sign-up page, ``/webmail/register``, when ``webmail.registration`` is on (off by
default: without it the page does not exist).

A visitor picks a user name in one of the hosted domains and a password (8 to 1024 bytes)
and is logged in. Each account made counts against the visitor's IP in the login limiter
shared by every protocol, so one address can make at most ``auth.max_failures`` accounts
per ``auth.failure_window`` seconds; a form posted from another site is refused.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any, Final

import aiohttp_jinja2
from aiohttp import web

from rmail.errors import AlreadyExists, InvalidInput, RateLimited
from rmail.web.api import API
from rmail.web.webmail import PREFIX, base_url
from rmail.web.webmail.mail import _url
from rmail.web.webmail.session import load_session, start_session

__all__ = ["setup"]

_USERNAME: Final = re.compile(r"^[a-z0-9._-]{1,64}$")
MIN_PASSWORD: Final = 8


def _enabled(request: web.Request) -> tuple[bool, int]:
    from rmail.web import CONFIG  # the package imports this module: import when serving

    config = request.app[CONFIG]
    return config.webmail.registration, config.webmail.registration_quota_mb


async def _domains(request: web.Request) -> list[str]:
    return await asyncio.to_thread(request.app[API].store.accounts.list_domains)


async def _render(request: web.Request, status: int = 200, **extra: Any) -> web.StreamResponse:
    context = {
        "base": base_url(request),
        "url": lambda *p, **q: _url(request, *p, **q),
        "domains": await _domains(request),
        "error": None,
        "username": "",
        "domain": "",
        **extra,
    }
    return aiohttp_jinja2.render_template("register.html", request, context, status=status)


async def register_page(request: web.Request) -> web.StreamResponse:
    if not _enabled(request)[0]:
        raise web.HTTPNotFound(text="Sign-up is not open on this server.")
    if await load_session(request) is not None:
        raise web.HTTPSeeOther(_url(request, "mail", "INBOX"))
    return await _render(request)


async def register_submit(request: web.Request) -> web.StreamResponse:
    enabled, quota = _enabled(request)
    if not enabled:
        raise web.HTTPNotFound(text="Sign-up is not open on this server.")
    origin = request.headers.get("Origin")
    if origin is not None and origin != base_url(request):
        raise web.HTTPForbidden(text="The form was not sent by this site.")
    form = await request.post()
    username = str(form.get("username", "")).strip().lower()
    domain = str(form.get("domain", "")).strip().lower()
    password = str(form.get("password", ""))
    again = str(form.get("password2", ""))
    shown = {"username": username, "domain": domain}
    if domain not in await _domains(request):
        return await _render(request, 400, error="Choose one of the domains.", **shown)
    if not _USERNAME.match(username):
        error = "A user name is 1 to 64 of a-z, 0-9, '.', '_' and '-'."
        return await _render(request, 400, error=error, **shown)
    if not MIN_PASSWORD <= len(password.encode("utf-8", "surrogatepass")) <= 1024:
        error = f"The password needs {MIN_PASSWORD} to 1024 bytes."
        return await _render(request, 400, error=error, **shown)
    if password != again:
        return await _render(request, 400, error="The two passwords differ.", **shown)
    services = request.app[API]
    limiter = services.authenticator.limiter
    try:
        limiter.check(request.remote, None)
    except RateLimited:
        error = "Too many accounts from your address. Try again later."
        return await _render(request, 429, error=error, **shown)
    address = f"{username}@{domain}"
    try:
        account = await asyncio.to_thread(
            lambda: services.store.create_user(address, password, quota_mb=quota)
        )
    except AlreadyExists:
        return await _render(request, 409, error=f"{address} is taken.", **shown)
    except InvalidInput as exc:
        return await _render(request, 400, error=str(exc), **shown)
    limiter.failure(request.remote, None)  # counts toward the per-IP cap on sign-ups
    response = web.HTTPSeeOther(_url(request, "mail", "INBOX"))
    start_session(request, response, account)
    raise response


def setup(app: web.Application) -> None:
    app.router.add_get(PREFIX + "/register", register_page)
    app.router.add_post(PREFIX + "/register", register_submit)
