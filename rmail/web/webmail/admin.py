"""Webmail administration (admin accounts only; anyone else gets 403): a domain's users
(create, enable or disable, quota and admin flag, password reset) and its aliases (add,
delete).

Validation mirrors the JSON API (:mod:`rmail.web.api.admin`): a username is 1-64 of
``a-z 0-9 . _ -``, a password 1-1024 bytes, ``quota_mb`` 1-1048576; an admin cannot disable
themselves or drop their own admin right. Everything goes through the store's accounts.
"""

from __future__ import annotations

import asyncio
import re
import urllib.parse
from typing import Any, Final

import aiohttp_jinja2
from aiohttp import web

from rmail.errors import AlreadyExists, InvalidInput, NotFound, RmailError
from rmail.web.api import API
from rmail.web.webmail import AREAS, PREFIX, base_url, page
from rmail.web.webmail.mail import _context
from rmail.web.webmail.session import Session

__all__ = ["setup"]

_USERNAME: Final = re.compile(r"^[a-z0-9._-]{1,64}$")
MAX_QUOTA_MB: Final = 1048576
MAX_PASSWORD_BYTES: Final = 1024
_DONE: Final = {
    "created": "User created.",
    "enabled": "User enabled.",
    "disabled": "User disabled.",
    "updated": "User updated.",
    "password": "Password reset; the user's sessions and tokens were revoked.",
    "alias-added": "Alias added.",
    "alias-deleted": "Alias deleted.",
}


def _admin_url(request: web.Request, domain: str, **query: str) -> str:
    return f"{base_url(request)}{PREFIX}/admin?" + urllib.parse.urlencode(
        {"domain": domain, **query}
    )


def _require_admin(session: Session) -> None:
    if not session.account.admin:
        raise web.HTTPForbidden(text="Administrators only.")


def _field(form: Any, name: str) -> str:
    value = form.get(name, "")
    return value if isinstance(value, str) else ""


def _username(text: str) -> str:
    name = text.strip().lower()
    if not _USERNAME.match(name):
        raise InvalidInput("a username is 1-64 of a-z, 0-9, '.', '_' and '-'")
    return name


def _password(text: str) -> str:
    if not 1 <= len(text.encode("utf-8", "surrogatepass")) <= MAX_PASSWORD_BYTES:
        raise InvalidInput(f"a password has 1 to {MAX_PASSWORD_BYTES} bytes")
    return text


def _quota(text: str) -> int:
    try:
        quota = int(text.strip())
    except ValueError:
        raise InvalidInput("the quota is a whole number of MiB") from None
    if not 1 <= quota <= MAX_QUOTA_MB:
        raise InvalidInput(f"the quota is 1 to {MAX_QUOTA_MB} MiB")
    return quota


async def _domain(request: web.Request, session: Session, given: str) -> str:
    domain = (given or session.account.domain).strip().lower().rstrip(".")
    accounts = request.app[API].store.accounts
    try:
        known = await asyncio.to_thread(accounts.has_domain, domain)
    except InvalidInput:
        known = False
    if not known:
        raise web.HTTPNotFound(text="No such domain.")
    return domain


async def _render(
    request: web.Request,
    session: Session,
    domain: str,
    *,
    error: str | None = None,
    status: int = 200,
) -> web.StreamResponse:
    accounts = request.app[API].store.accounts

    def work() -> tuple[list[str], list[Any], list[Any]]:
        return (
            accounts.list_domains(),
            accounts.list_users(domain),
            accounts.list_aliases(domain),
        )

    domains, users, aliases = await asyncio.to_thread(work)
    context = _context(
        request,
        session,
        area="admin",
        page_title="Admin",
        domain=domain,
        domains=domains,
        users=users,
        aliases=aliases,
        admin_url=f"{base_url(request)}{PREFIX}/admin",
        done=_DONE.get(request.query.get("done", "")),
        error=error,
    )
    return aiohttp_jinja2.render_template("admin.html", request, context, status=status)


@page
async def admin_page(request: web.Request, session: Session) -> web.StreamResponse:
    _require_admin(session)
    domain = await _domain(request, session, request.query.get("domain", ""))
    return await _render(request, session, domain)


@page
async def admin_post(request: web.Request, session: Session) -> web.StreamResponse:
    _require_admin(session)
    form = await request.post()
    domain = await _domain(request, session, _field(form, "domain"))
    action = _field(form, "action")
    store = request.app[API].store
    accounts = store.accounts
    me = session.account.address
    try:
        if action == "create":
            address = f"{_username(_field(form, 'username'))}@{domain}"
            password = _password(_field(form, "password"))
            quota = _quota(_field(form, "quota_mb") or "1024")
            is_admin = bool(_field(form, "admin"))
            await asyncio.to_thread(
                lambda: store.create_user(address, password, admin=is_admin, quota_mb=quota)
            )
            done = "created"
        elif action in ("enable", "disable", "update", "password"):
            address = f"{_username(_field(form, 'username'))}@{domain}"
            if action == "password":
                password = _password(_field(form, "password"))
                await asyncio.to_thread(accounts.set_password, address, password)
                done = "password"
            elif action == "update":
                quota = _quota(_field(form, "quota_mb"))
                is_admin = bool(_field(form, "admin"))
                if address == me and not is_admin:
                    raise InvalidInput("you cannot remove your own admin right")
                await asyncio.to_thread(
                    lambda: accounts.set_user(address, admin=is_admin, quota_mb=quota)
                )
                done = "updated"
            else:
                enabled = action == "enable"
                if address == me and not enabled:
                    raise InvalidInput("you cannot disable your own account")
                await asyncio.to_thread(lambda: accounts.set_user(address, enabled=enabled))
                done = "enabled" if enabled else "disabled"
        elif action == "alias-add":
            pattern, target = _field(form, "pattern").strip(), _field(form, "target").strip()
            await asyncio.to_thread(accounts.add_alias, domain, pattern, target)
            done = "alias-added"
        elif action == "alias-delete":
            await asyncio.to_thread(accounts.delete_alias, domain, _field(form, "pattern"))
            done = "alias-deleted"
        else:
            raise InvalidInput("unknown action")
    except NotFound as exc:
        return await _render(request, session, domain, error=str(exc), status=404)
    except RmailError as exc:
        status = 409 if isinstance(exc, AlreadyExists) else 400
        return await _render(request, session, domain, error=str(exc), status=status)
    raise web.HTTPSeeOther(_admin_url(request, domain, done=done))


def setup(app: web.Application) -> None:
    app.router.add_get(PREFIX + "/admin", admin_page)
    app.router.add_post(PREFIX + "/admin", admin_post)
    app[AREAS].append(("admin", "Admin", True))
