"""The webmail: server-rendered pages at ``/webmail/`` (aiohttp-jinja2), plain CSS and a
little JavaScript that only enhances. Every page works with JavaScript off.

It uses the same store and services as IMAP and the JSON API (never a loopback IMAP
connection). Pages need a session cookie (:mod:`rmail.web.webmail.session`); every form
carries a CSRF token. Areas: :mod:`.mail` (login, folders, list, message, compose),
:mod:`.calendar` (month, week, day and agenda views, events, invitations),
:mod:`.drive` (files, uploads, share links), :mod:`.settings` (name, signature, password,
aliases, quota) and :mod:`.admin` (users and aliases, admins only). Links
are absolute (scheme, host and port of the request).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

import aiohttp_jinja2
import jinja2
from aiohttp import web

from rmail import __version__
from rmail.web.webmail.session import ENDED, Session, check_csrf, load_session

__all__ = ["AREAS", "PREFIX", "base_url", "page", "setup"]

PREFIX: Final = "/webmail"
HERE: Final = Path(__file__).parent
# The areas in the top bar besides Mail: (route name, label, admins only). Each area's
# module adds itself in its setup().
AREAS: web.AppKey[list[tuple[str, str, bool]]] = web.AppKey("webmail_areas")
# Pages are HTML made here: a strict CSP (no inline script, no remote anything).
CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-src 'self'; frame-ancestors 'self'; form-action 'self'; base-uri 'none'; "
    "object-src 'none'"
)

Page = Callable[[web.Request, Session], Awaitable[web.StreamResponse]]


def base_url(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def page(handler: Page) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A handler that needs a session (else: to the login page) and, for POST, a valid CSRF
    token (else: 403)."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        session = await load_session(request)
        if session is None:
            if request.method == "GET":
                target = request.path_qs
                raise web.HTTPSeeOther(f"{base_url(request)}{PREFIX}/login?next={_quote(target)}")
            raise web.HTTPForbidden(text="Your session has ended. Log in again.")
        if request.method == "POST":
            form = await request.post()
            if not check_csrf(session, _text(form.get("csrf"))):
                raise web.HTTPForbidden(text="The form has expired or was not sent by this site.")
        request["session"] = session
        return await handler(request, session)

    return wrapped


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _quote(text: str) -> str:
    import urllib.parse

    return urllib.parse.quote(text, safe="")


@web.middleware
async def security_headers(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    response = await handler(request)
    if request.path.startswith(PREFIX):
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if request.path.startswith(PREFIX + "/static/"):
            # URLs carry a content hash (?v=...): they can be kept for good.
            if "v" in request.query:
                response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
        else:
            response.headers.setdefault("Cache-Control", "no-store")
    return response


def setup(app: web.Application) -> None:
    from rmail.web.webmail import admin, calendar, drive, mail, register, settings

    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(str(HERE / "templates")),
        autoescape=jinja2.select_autoescape(["html"]),
        default_helpers=False,
    )
    static = app.router.add_static(PREFIX + "/static", HERE / "static", append_version=True)

    @jinja2.pass_context
    def asset(context: Any, name: str) -> str:
        return str(context.get("base", "")) + str(static.url_for(filename=name))

    env.globals.update(version=__version__, prefix=PREFIX, asset=asset)
    env.filters["bytes"] = human_bytes
    app.middlewares.append(security_headers)
    app[AREAS] = []
    app[ENDED] = {}
    mail.setup(app)
    calendar.setup(app)
    drive.setup(app)
    settings.setup(app)
    admin.setup(app)
    register.setup(app)


def human_bytes(value: int) -> str:
    size = float(value)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"
