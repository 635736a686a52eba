"""Webmail settings: display name and signature (:mod:`rmail.store.preferences`), password
change, the user's aliases (read only) and quota usage (mail plus drive).

A password change needs the current password (checked by the shared authenticator, so it
counts toward the login rate limit). :meth:`Accounts.set_password` bumps the account's
``token_version``, which ends every other webmail session and revokes every API token; the
session making the change gets a fresh cookie, so its user stays logged in.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

import aiohttp_jinja2
from aiohttp import web

from rmail.errors import InvalidInput, PermissionDenied, RateLimited, RmailError
from rmail.store.preferences import load_preferences, save_preferences
from rmail.web.api import API
from rmail.web.drive.base import drive_of as _drive
from rmail.web.webmail import AREAS, PREFIX, base_url, page
from rmail.web.webmail.mail import _context
from rmail.web.webmail.session import Session, start_session

__all__ = ["setup"]

# The same bounds as the admin API (rmail.web.api.admin): 1-1024 bytes.
MAX_PASSWORD_BYTES: Final = 1024
_SAVED: Final = {
    "profile": "Display name and signature saved.",
    "password": "Password changed. Other sessions and API tokens were signed out.",
}


def _settings_url(request: web.Request, **query: str) -> str:
    url = f"{base_url(request)}{PREFIX}/settings"
    if query:
        url += "?" + "&".join(f"{k}={v}" for k, v in query.items())
    return url


async def _render(
    request: web.Request,
    session: Session,
    *,
    error: str | None = None,
    status: int = 200,
    form: dict[str, str] | None = None,
) -> web.StreamResponse:
    account = session.account
    store = request.app[API].store
    drive = _drive(request, account.address)

    def work() -> dict[str, Any]:
        user_dir = store.accounts.user_dir(account.address)
        aliases = [
            a.pattern
            for a in store.accounts.list_aliases(account.domain)
            if account.address in a.targets
        ]
        mail_bytes = store.mailbox(account.address).usage_bytes()
        drive_bytes = drive.usage()
        quota = store.accounts.mail_quota_bytes(account.address)
        return {
            "prefs": load_preferences(user_dir),
            "aliases": aliases,
            "mail_bytes": mail_bytes,
            "drive_bytes": drive_bytes,
            "used_bytes": mail_bytes + drive_bytes,
            "quota_bytes": quota,
        }

    facts = await asyncio.to_thread(work)
    if form is not None:
        facts["prefs"] = form
    context = _context(
        request,
        session,
        area="settings",
        page_title="Settings",
        settings_url=_settings_url(request),
        saved=_SAVED.get(request.query.get("saved", "")),
        error=error,
        **facts,
    )
    return aiohttp_jinja2.render_template("settings.html", request, context, status=status)


@page
async def settings_page(request: web.Request, session: Session) -> web.StreamResponse:
    return await _render(request, session)


def _field(form: Any, name: str) -> str:
    value = form.get(name, "")
    return value if isinstance(value, str) else ""


@page
async def settings_post(request: web.Request, session: Session) -> web.StreamResponse:
    form = await request.post()
    action = _field(form, "action")
    account = session.account
    store = request.app[API].store
    if action == "profile":
        name, signature = _field(form, "display_name"), _field(form, "signature")
        try:
            await asyncio.to_thread(
                lambda: save_preferences(
                    store.accounts.user_dir(account.address), name, signature, fsync=store.fsync
                )
            )
        except InvalidInput as exc:
            kept = {"display_name": name, "signature": signature}
            return await _render(request, session, error=str(exc), status=400, form=kept)
        raise web.HTTPSeeOther(_settings_url(request, saved="profile"))
    if action != "password":
        return await _render(request, session, error="Unknown action.", status=400)
    current, new, again = _field(form, "current"), _field(form, "new"), _field(form, "confirm")
    try:
        await request.app[API].authenticator.login(
            account.address, current, request.remote, "webmail"
        )
    except RateLimited:
        return await _render(
            request, session, error="Too many failed attempts. Try again later.", status=429
        )
    except (PermissionDenied, RmailError):
        return await _render(request, session, error="The current password is wrong.", status=403)
    if new != again:
        return await _render(request, session, error="The new passwords differ.", status=400)
    if not 1 <= len(new.encode("utf-8", "surrogatepass")) <= MAX_PASSWORD_BYTES:
        return await _render(request, session, error="A password has 1 to 1024 bytes.", status=400)
    try:
        changed = await asyncio.to_thread(store.accounts.set_password, account.address, new)
    except InvalidInput as exc:
        return await _render(request, session, error=str(exc), status=400)
    response = web.HTTPSeeOther(_settings_url(request, saved="password"))
    start_session(request, response, changed)
    raise response


def setup(app: web.Application) -> None:
    app.router.add_get(PREFIX + "/settings", settings_page)
    app.router.add_post(PREFIX + "/settings", settings_post)
    app[AREAS].append(("settings", "Settings", False))
