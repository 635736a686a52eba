"""Admin routes: users (``/admin/users``) and aliases (``/aliases``); admin accounts only.

Validation as in the original: a username is 1-64 of ``a-z 0-9 . _ -``; a password 1-1024
bytes; ``quota_mb`` 1-1048576. ``?domain=`` picks the domain, defaulting to the admin's own;
``{username}`` may also be a whole ``user@domain``.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any, Final

from aiohttp import web

from rmail.errors import NotFound
from rmail.store.accounts import Account
from rmail.web.api import API, require_admin
from rmail.web.http import ApiError, field, json_body

_USERNAME: Final = re.compile(r"^[a-z0-9._-]{1,64}$")
MAX_QUOTA_MB: Final = 1048576


def _user_json(account: Account) -> dict[str, Any]:
    return {
        "username": account.username,
        "domain": account.domain,
        "address": account.address,
        "admin": account.admin,
        "enabled": account.enabled,
        "quota_mb": account.quota_mb,
        "created": account.created,
    }


def _domain(request: web.Request, admin: Account, given: str | None = None) -> str:
    domain = (given or request.query.get("domain") or admin.domain).strip().lower().rstrip(".")
    if not request.app[API].store.accounts.has_domain(domain):
        raise ApiError(404, f"no such domain {domain}")
    return domain


def _address(request: web.Request, admin: Account, name: str) -> str:
    name = name.strip().lower()
    if "@" in name:
        user, _, domain = name.rpartition("@")
        domain = _domain(request, admin, domain)
    else:
        user, domain = name, _domain(request, admin)
    if not _USERNAME.match(user):
        raise ApiError(400, "username may only hold a-z, 0-9, '.', '_' and '-' (1-64)")
    return f"{user}@{domain}"


def _password(data: dict[str, Any]) -> str:
    password: str = field(data, "password", str)
    if not 1 <= len(password.encode("utf-8", "surrogatepass")) <= 1024:
        raise ApiError(400, "password must be 1 to 1024 bytes")
    return password


def _quota(data: dict[str, Any]) -> int | None:
    quota: int | None = field(data, "quota_mb", int, required=False)
    if quota is not None and not 1 <= quota <= MAX_QUOTA_MB:
        raise ApiError(400, f"quota_mb must be 1 to {MAX_QUOTA_MB}")
    return quota


# -- users -----------------------------------------------------------------------------------


async def list_users(request: web.Request) -> web.Response:
    admin = await require_admin(request)
    domain = _domain(request, admin) if request.query.get("domain") else None
    accounts = request.app[API].store.accounts
    users = await asyncio.to_thread(accounts.list_users, domain)
    return web.json_response({"users": [_user_json(a) for a in users]})


async def create_user(request: web.Request) -> web.Response:
    admin = await require_admin(request)
    data = await json_body(request)
    username = field(data, "username", str)
    domain = field(data, "domain", str, required=False)
    if "@" in username:
        if domain:
            raise ApiError(400, "give the domain once: in username or in domain")
        address = _address(request, admin, username)
    else:
        address = _address(request, admin, f"{username}@{_domain(request, admin, domain)}")
    password = _password(data)
    is_admin = bool(field(data, "admin", bool, required=False))
    quota = _quota(data) or 1024
    store = request.app[API].store
    account = await asyncio.to_thread(
        lambda: store.create_user(address, password, admin=is_admin, quota_mb=quota)
    )
    return web.json_response(_user_json(account), status=201)


async def get_user(request: web.Request) -> web.Response:
    admin = await require_admin(request)
    address = _address(request, admin, request.match_info["username"])
    account = await asyncio.to_thread(request.app[API].store.accounts.get_user, address)
    return web.json_response(_user_json(account))


async def change_user(request: web.Request) -> web.Response:
    admin = await require_admin(request)
    address = _address(request, admin, request.match_info["username"])
    data = await json_body(request)
    unknown = set(data) - {"admin", "enabled", "quota_mb"}
    if unknown:
        raise ApiError(400, f"unknown field {sorted(unknown)[0]!r} (admin, enabled, quota_mb)")
    is_admin = field(data, "admin", bool, required=False)
    enabled = field(data, "enabled", bool, required=False)
    quota = _quota(data)
    if address == admin.address and (is_admin is False or enabled is False):
        raise ApiError(400, "an admin cannot remove their own admin right or disable themselves")
    accounts = request.app[API].store.accounts
    account = await asyncio.to_thread(
        lambda: accounts.set_user(address, admin=is_admin, enabled=enabled, quota_mb=quota)
    )
    return web.json_response(_user_json(account))


async def delete_user(request: web.Request) -> web.Response:
    admin = await require_admin(request)
    address = _address(request, admin, request.match_info["username"])
    if address == admin.address:
        raise ApiError(400, "an admin cannot delete their own account")
    await asyncio.to_thread(request.app[API].store.delete_user, address)
    return web.Response(status=204)


async def set_password(request: web.Request) -> web.Response:
    admin = await require_admin(request)
    address = _address(request, admin, request.match_info["username"])
    password = _password(await json_body(request))
    accounts = request.app[API].store.accounts
    account = await asyncio.to_thread(accounts.set_password, address, password)
    return web.json_response(_user_json(account))


# -- aliases ---------------------------------------------------------------------------------


async def list_aliases(request: web.Request) -> web.Response:
    admin = await require_admin(request)
    domain = _domain(request, admin)
    aliases = await asyncio.to_thread(request.app[API].store.accounts.list_aliases, domain)
    return web.json_response(
        {"domain": domain, "aliases": [{"pattern": a.pattern, "target": a.target} for a in aliases]}
    )


async def create_alias(request: web.Request) -> web.Response:
    admin = await require_admin(request)
    data = await json_body(request)
    domain = _domain(request, admin, field(data, "domain", str, required=False))
    pattern = field(data, "pattern", str)
    target = field(data, "target", str)
    accounts = request.app[API].store.accounts
    alias = await asyncio.to_thread(accounts.add_alias, domain, pattern, target)
    return web.json_response(
        {"domain": domain, "pattern": alias.pattern, "target": alias.target}, status=201
    )


async def delete_alias(request: web.Request) -> web.Response:
    admin = await require_admin(request)
    domain = _domain(request, admin)
    pattern = request.match_info["pattern"]
    accounts = request.app[API].store.accounts
    try:
        await asyncio.to_thread(accounts.delete_alias, domain, pattern)
    except NotFound:
        raise ApiError(404, f"no alias {pattern!r} in {domain}") from None
    return web.Response(status=204)


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/admin/users", list_users)
    r.add_post("/admin/users", create_user)
    r.add_get("/admin/users/{username}", get_user)
    r.add_patch("/admin/users/{username}", change_user)
    r.add_delete("/admin/users/{username}", delete_user)
    r.add_put("/admin/users/{username}/password", set_password)
    r.add_get("/aliases", list_aliases)
    r.add_post("/aliases", create_alias)
    r.add_delete("/aliases/{pattern}", delete_alias)
