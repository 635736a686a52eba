"""``POST /auth/login``: a password for a bearer token.

Body ``{"username": "alice", "domain": "example.com", "password": ...}`` or
``{"username": "alice@example.com", "password": ...}``. 200 ``{token, username, domain,
expires_in}``; 400 malformed; 401 wrong credentials; 429 locked out (``Retry-After``).
Every attempt goes through the login limiter shared with IMAP and SMTP.
"""

from __future__ import annotations

from aiohttp import web

from rmail.errors import PermissionDenied
from rmail.web.api import API
from rmail.web.http import ApiError, field, json_body


async def login(request: web.Request) -> web.Response:
    services = request.app[API]
    data = await json_body(request)
    username = field(data, "username", str).strip()
    domain = field(data, "domain", str, required=False)
    password = field(data, "password", str)
    if "@" not in username:
        if not domain:
            raise ApiError(400, "give the domain, or the username as user@domain")
        username = f"{username}@{domain.strip()}"
    elif domain and username.rpartition("@")[2].lower() != domain.strip().lower():
        raise ApiError(400, "the username's domain and the domain field differ")
    if not password or len(password.encode("utf-8", "surrogatepass")) > 1024:
        raise ApiError(401, "invalid credentials")
    try:
        account = await services.authenticator.login(username, password, request.remote, "api")
    except PermissionDenied:
        raise ApiError(401, "invalid credentials") from None
    return web.json_response(
        {
            "token": services.tokens.issue(account),
            "username": account.username,
            "domain": account.domain,
            "expires_in": services.tokens.lifetime,
        }
    )


def setup(app: web.Application) -> None:
    app.router.add_post("/auth/login", login)
