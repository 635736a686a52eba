"""``GET /openapi.json`` (OpenAPI 3.1) and the interactive docs page at ``/docs``.

The description is written here, route by route, next to nothing else; a test compares it
with the application's router, so a route added without its description fails CI. The docs
page is Swagger UI from the ``swagger-ui-py`` package (its static files are served as
they are, nothing is copied into this repository).
"""

from __future__ import annotations

import os
from typing import Any, Final

import swagger_ui
from aiohttp import web

from rmail import __version__

__all__ = ["DOCUMENTED_ELSEWHERE", "setup", "spec"]

# Routes that are not part of the JSON API and are described in their own documents.
DOCUMENTED_ELSEWHERE: Final = (
    "/docs",  # the page that shows this document
    "/.well-known",  # autoconfig and DAV discovery: docs/clients.md
    "/mail/config-v1.1.xml",
    "/autodiscover",
    "/Autodiscover",
    "/dav",  # CalDAV and CardDAV: docs/clients.md
    "/drive",  # the file drive and share links: docs/drive.md
    "/webmail",  # the webmail's pages
)

_ERROR: Final = {"$ref": "#/components/schemas/Error"}
_ADDR: Final = {"$ref": "#/components/schemas/Address"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _obj(props: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        out["required"] = list(required)
    return out


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "Malformed request (the error says which field)",
        401: "Missing, invalid, expired or revoked token",
        403: "Not allowed (admin only, disabled account, relaying off)",
        404: "No such folder, message, part, user or alias",
        409: "Exists already",
        413: "Too large, or over quota",
        429: "Too many failed logins; see Retry-After",
    }
    return {str(c): {"description": text[c], **_json(_ERROR)} for c in codes}


_S = {"type": "string"}
_I = {"type": "integer"}
_B = {"type": "boolean"}
_FLAGS = {"type": "array", "items": _S, "examples": [["\\Seen", "$Label1"]]}
_FOLDER = {
    "name": "folder",
    "in": "path",
    "required": True,
    "schema": _S,
    "description": "Folder name; '/' in a nested name is sent as %2F",
}
_UID = {"name": "uid", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}
_DOMAIN_Q = {
    "name": "domain",
    "in": "query",
    "schema": _S,
    "description": "Domain (default: the admin's own)",
}
_USERNAME = {
    "name": "username",
    "in": "path",
    "required": True,
    "schema": _S,
    "description": "user name, or user@domain",
}
_USER = _obj(
    {
        "username": _S,
        "domain": _S,
        "address": _S,
        "admin": _B,
        "enabled": _B,
        "quota_mb": _I,
        "created": _S,
    }
)
_ITEM = _obj(
    {
        "uid": _I,
        "subject": _S,
        "from": {"type": "array", "items": _ADDR},
        "to": {"type": "array", "items": _ADDR},
        "date": {"type": ["string", "null"]},
        "internal_date": _S,
        "size": _I,
        "flags": _FLAGS,
        "has_attachments": _B,
        "preview": _S,
    }
)
_HOOK = _obj({"id": _S, "url": _S, "events": {"type": "array", "items": _S}, "created": _S})
_ATTACHMENT = _obj(
    {
        "id": _S,
        "filename": _S,
        "content_type": _S,
        "size": _I,
        "disposition": _S,
        "content_id": {"type": ["string", "null"]},
    }
)


def _op(
    summary: str,
    *,
    ok: tuple[int, str, dict[str, Any] | None] = (200, "OK", None),
    errors: tuple[int, ...] = (400, 401, 404),
    params: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
    auth: bool = True,
    tags: tuple[str, ...] = ("mail",),
) -> dict[str, Any]:
    status, text, schema = ok
    response: dict[str, Any] = {"description": text}
    if schema is not None:
        response.update(_json(schema) if "content" not in schema else schema)
    op: dict[str, Any] = {
        "summary": summary,
        "tags": list(tags),
        "responses": {str(status): response, **_errors(*errors)},
    }
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {"required": True, **(body if "content" in body else _json(body))}
    if not auth:
        op["security"] = []
    return op


_FLAG_BODY = _obj({"flags": _FLAGS, "add": _FLAGS, "remove": _FLAGS})
_SEARCH_PARAMS = [
    {"name": n, "in": "query", "schema": s, "description": d}
    for n, s, d in (
        ("offset", {"type": "integer", "minimum": 0}, "messages to skip (newest first)"),
        ("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "page size (50)"),
        ("from", _S, "From contains (case-insensitive)"),
        ("to", _S, "To contains"),
        ("subject", _S, "Subject contains"),
        ("text", _S, "subject, addresses or body contain"),
        ("search", _S, "same as text"),
        ("since", {"type": "string", "format": "date"}, "received on or after"),
        ("before", {"type": "string", "format": "date"}, "received before"),
        ("unseen", _B, "only unread"),
        ("flagged", _B, "only flagged"),
    )
]

PATHS: Final[dict[str, dict[str, dict[str, Any]]]] = {
    "/health": {
        "get": _op(
            "Liveness and readiness",
            auth=False,
            errors=(),
            tags=("operations",),
            ok=(
                200,
                "Serving (503 when the data directory is unreadable)",
                _obj(
                    {
                        "status": _S,
                        "version": _S,
                        "uptime_seconds": {"type": "number"},
                        "listeners": {"type": "object"},
                    }
                ),
            ),
        )
    },
    "/metrics": {
        "get": _op(
            "Prometheus metrics",
            auth=False,
            errors=(),
            tags=("operations",),
            ok=(200, "Prometheus text format", {"content": {"text/plain": {"schema": _S}}}),
        )
    },
    "/openapi.json": {
        "get": _op(
            "This description",
            auth=False,
            errors=(),
            tags=("operations",),
            ok=(200, "OpenAPI 3.1 document", {"type": "object"}),
        )
    },
    "/auth/login": {
        "post": _op(
            "Log in: a password for a bearer token",
            auth=False,
            tags=("auth",),
            errors=(400, 401, 429),
            body=_obj({"username": _S, "domain": _S, "password": _S}, ("username", "password")),
            ok=(200, "Token", _obj({"token": _S, "username": _S, "domain": _S, "expires_in": _I})),
        )
    },
    "/folders": {
        "get": _op(
            "List folders with totals and unread counts",
            errors=(401,),
            ok=(
                200,
                "Folders",
                _obj(
                    {
                        "folders": {
                            "type": "array",
                            "items": _obj(
                                {
                                    "name": _S,
                                    "total": _I,
                                    "unread": _I,
                                    "special_use": {"type": ["string", "null"]},
                                    "subscribed": _B,
                                }
                            ),
                        }
                    }
                ),
            ),
        ),
        "post": _op(
            "Create a folder (and missing parents)",
            errors=(400, 401, 409),
            body=_obj({"name": _S, "special_use": _S}, ("name",)),
            ok=(201, "Created", _obj({"name": _S})),
        ),
    },
    "/folders/{folder}": {
        "patch": _op(
            "Rename a folder",
            params=[_FOLDER],
            errors=(400, 401, 404, 409),
            body=_obj({"name": _S}, ("name",)),
            ok=(200, "Renamed", _obj({"name": _S})),
        ),
        "delete": _op(
            "Delete a folder with its messages and subfolders",
            params=[_FOLDER],
            ok=(204, "Deleted", None),
        ),
    },
    "/folders/{folder}/messages": {
        "get": _op(
            "List messages, newest first, optionally searched",
            params=[_FOLDER, *_SEARCH_PARAMS],
            ok=(
                200,
                "A page",
                _obj(
                    {
                        "folder": _S,
                        "total": _I,
                        "offset": _I,
                        "limit": _I,
                        "messages": {"type": "array", "items": _ITEM},
                    }
                ),
            ),
        ),
        "post": _op(
            "Append a raw RFC 5322 message",
            params=[
                _FOLDER,
                {
                    "name": "flag",
                    "in": "query",
                    "schema": _S,
                    "description": "a flag to set (repeatable)",
                },
            ],
            errors=(400, 401, 404, 413),
            body={
                "content": {"message/rfc822": {"schema": {"type": "string", "format": "binary"}}}
            },
            ok=(201, "Stored", _obj({"folder": _S, "uid": _I})),
        ),
    },
    "/folders/{folder}/messages/{uid}": {
        "get": _op(
            "Get a message: raw (message/rfc822) or parsed (?format=json)",
            params=[
                _FOLDER,
                _UID,
                {"name": "format", "in": "query", "schema": {"enum": ["raw", "json"]}},
                {
                    "name": "maxBytes",
                    "in": "query",
                    "schema": _I,
                    "description": "cut the text body to this many bytes",
                },
                {
                    "name": "raw_html",
                    "in": "query",
                    "schema": _B,
                    "description": "the HTML body as sent, not sanitized",
                },
            ],
            ok=(
                200,
                "The message",
                {
                    "content": {
                        "message/rfc822": {"schema": {"type": "string", "format": "binary"}},
                        "application/json": {
                            "schema": _obj(
                                {
                                    "uid": _I,
                                    "folder": _S,
                                    "flags": _FLAGS,
                                    "subject": _S,
                                    "from": {"type": "array", "items": _ADDR},
                                    "to": {"type": "array", "items": _ADDR},
                                    "cc": {"type": "array", "items": _ADDR},
                                    "reply_to": {"type": "array", "items": _ADDR},
                                    "date": {"type": ["string", "null"]},
                                    "message_id": {"type": ["string", "null"]},
                                    "text": {"type": ["string", "null"]},
                                    "html": {"type": ["string", "null"]},
                                    "attachments": {"type": "array", "items": _ATTACHMENT},
                                }
                            )
                        },
                    }
                },
            ),
        ),
        "delete": _op("Delete a message", params=[_FOLDER, _UID], ok=(204, "Deleted", None)),
    },
    "/folders/{folder}/messages/{uid}/flags": {
        "patch": _op(
            "Replace (flags) or add/remove flags",
            params=[_FOLDER, _UID],
            body=_FLAG_BODY,
            ok=(200, "New flags", _obj({"uid": _I, "flags": _FLAGS})),
        ),
    },
    "/folders/{folder}/messages/{uid}/move": {
        "post": _op(
            "Move a message to another folder",
            params=[_FOLDER, _UID],
            errors=(400, 401, 404, 413),
            body=_obj({"folder": _S}, ("folder",)),
            ok=(201, "Moved", _obj({"folder": _S, "uid": _I})),
        ),
    },
    "/folders/{folder}/messages/{uid}/copy": {
        "post": _op(
            "Copy a message to another folder",
            params=[_FOLDER, _UID],
            errors=(400, 401, 404, 413),
            body=_obj({"folder": _S}, ("folder",)),
            ok=(201, "Copied", _obj({"folder": _S, "uid": _I})),
        ),
    },
    "/folders/{folder}/messages/{uid}/attachments/{part}": {
        "get": _op(
            "Download an attachment (decoded)",
            params=[
                _FOLDER,
                _UID,
                {
                    "name": "part",
                    "in": "path",
                    "required": True,
                    "schema": _S,
                    "description": "the attachment id from the parsed message",
                },
            ],
            ok=(
                200,
                "The file",
                {
                    "content": {
                        "application/octet-stream": {
                            "schema": {"type": "string", "format": "binary"}
                        }
                    }
                },
            ),
        ),
    },
    "/messages/send": {
        "post": _op(
            "Send a message, or save it as a draft",
            tags=("send",),
            errors=(400, 401, 403, 404, 413),
            body=_obj(
                {
                    "to": {"oneOf": [_S, {"type": "array", "items": _S}]},
                    "cc": {"oneOf": [_S, {"type": "array", "items": _S}]},
                    "bcc": {"oneOf": [_S, {"type": "array", "items": _S}]},
                    "subject": _S,
                    "body": _S,
                    "html": _S,
                    "draft": _B,
                    "attachments": {
                        "type": "array",
                        "items": _obj(
                            {
                                "filename": _S,
                                "content_type": _S,
                                "content": {"type": "string", "contentEncoding": "base64"},
                            },
                            ("filename", "content"),
                        ),
                    },
                    "reference": _obj(
                        {
                            "folder": _S,
                            "uid": _I,
                            "action": {"enum": ["reply", "reply-all", "forward"]},
                        },
                        ("folder", "uid", "action"),
                    ),
                }
            ),
            ok=(
                200,
                "Sent (201 with folder and uid for a draft)",
                _obj(
                    {
                        "message_id": _S,
                        "delivered": {"type": "array", "items": _S},
                        "queued": {"type": "array", "items": _S},
                        "failed": {"type": "object"},
                        "sent_folder": _S,
                        "sent_uid": _I,
                    }
                ),
            ),
        )
    },
    "/aliases": {
        "get": _op(
            "List a domain's aliases (admin)",
            tags=("admin",),
            params=[_DOMAIN_Q],
            errors=(401, 403, 404),
            ok=(
                200,
                "Aliases",
                _obj(
                    {
                        "domain": _S,
                        "aliases": {"type": "array", "items": _obj({"pattern": _S, "target": _S})},
                    }
                ),
            ),
        ),
        "post": _op(
            "Add an alias (admin)",
            tags=("admin",),
            errors=(400, 401, 403, 404, 409),
            body=_obj({"pattern": _S, "target": _S, "domain": _S}, ("pattern", "target")),
            ok=(201, "Added", _obj({"domain": _S, "pattern": _S, "target": _S})),
        ),
    },
    "/aliases/{pattern}": {
        "delete": _op(
            "Delete an alias (admin)",
            tags=("admin",),
            errors=(401, 403, 404),
            params=[{"name": "pattern", "in": "path", "required": True, "schema": _S}, _DOMAIN_Q],
            ok=(204, "Deleted", None),
        ),
    },
    "/admin/users": {
        "get": _op(
            "List users (admin)",
            tags=("admin",),
            params=[_DOMAIN_Q],
            errors=(401, 403, 404),
            ok=(200, "Users", _obj({"users": {"type": "array", "items": _USER}})),
        ),
        "post": _op(
            "Create a user (admin)",
            tags=("admin",),
            errors=(400, 401, 403, 404, 409),
            body=_obj(
                {
                    "username": {"type": "string", "pattern": "^[a-z0-9._-]{1,64}$"},
                    "domain": _S,
                    "password": {"type": "string", "minLength": 1},
                    "admin": _B,
                    "quota_mb": {"type": "integer", "minimum": 1, "maximum": 1048576},
                },
                ("username", "password"),
            ),
            ok=(201, "Created", _USER),
        ),
    },
    "/admin/users/{username}": {
        "get": _op(
            "Get a user (admin)",
            tags=("admin",),
            params=[_USERNAME, _DOMAIN_Q],
            errors=(400, 401, 403, 404),
            ok=(200, "The user", _USER),
        ),
        "patch": _op(
            "Change admin, enabled or quota_mb (admin)",
            tags=("admin",),
            params=[_USERNAME, _DOMAIN_Q],
            errors=(400, 401, 403, 404),
            body=_obj({"admin": _B, "enabled": _B, "quota_mb": _I}),
            ok=(200, "The user", _USER),
        ),
        "delete": _op(
            "Delete a user and all their data (admin)",
            tags=("admin",),
            params=[_USERNAME, _DOMAIN_Q],
            errors=(400, 401, 403, 404),
            ok=(204, "Deleted", None),
        ),
    },
    "/admin/users/{username}/password": {
        "put": _op(
            "Set a password; revokes the user's tokens (admin)",
            tags=("admin",),
            params=[_USERNAME, _DOMAIN_Q],
            errors=(400, 401, 403, 404),
            body=_obj({"password": _S}, ("password",)),
            ok=(200, "The user", _USER),
        ),
    },
    "/webhooks": {
        "get": _op(
            "List your webhooks (never their secrets)",
            tags=("webhooks",),
            errors=(401,),
            ok=(200, "Hooks", _obj({"webhooks": {"type": "array", "items": _HOOK}})),
        ),
        "post": _op(
            "Register a webhook; the answer shows its secret, once",
            tags=("webhooks",),
            errors=(400, 401),
            body=_obj(
                {
                    "url": {"type": "string", "format": "uri"},
                    "events": {
                        "type": "array",
                        "items": {"enum": ["messageNew", "messageDeleted", "flagsChanged"]},
                    },
                },
                ("url",),
            ),
            ok=(201, "Registered", {**_HOOK, "properties": {**_HOOK["properties"], "secret": _S}}),
        ),
    },
    "/webhooks/{id}": {
        "delete": _op(
            "Delete one of your webhooks",
            tags=("webhooks",),
            errors=(401, 404),
            params=[{"name": "id", "in": "path", "required": True, "schema": _S}],
            ok=(204, "Deleted", None),
        )
    },
}


def spec(server_url: str | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document."""
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "rmail JSON API",
            "version": __version__,
            "description": "Mail, folders, sending and administration. Errors are "
            '`{"error": "..."}`. Get a token from `POST /auth/login` and send it as '
            "`Authorization: Bearer <token>`.",
        },
        "security": [{"bearer": []}],
        "paths": PATHS,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
            "schemas": {
                "Error": _obj({"error": _S}, ("error",)),
                "Address": _obj({"name": _S, "address": _S}),
            },
        },
    }
    if server_url:
        document["servers"] = [{"url": server_url}]
    return document


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(spec())


_STATIC: Final = os.path.join(os.path.dirname(swagger_ui.__file__), "static")
_PAGE: Final = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>rmail API</title>
<link rel="stylesheet" href="/docs/static/swagger-ui.css">
<link rel="icon" type="image/png" href="/docs/static/favicon-32x32.png"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script>
<script src="/docs/static/swagger-ui-standalone-preset.js"></script>
<script src="/docs/init.js"></script></body></html>
"""
_INIT: Final = """window.onload = function () {
  window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui",
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    layout: "StandaloneLayout", persistAuthorization: true});
};
"""


async def docs_page(request: web.Request) -> web.Response:
    return web.Response(text=_PAGE, content_type="text/html")


async def docs_init(request: web.Request) -> web.Response:
    return web.Response(text=_INIT, content_type="application/javascript")


def setup(app: web.Application) -> None:
    app.router.add_get("/openapi.json", openapi_json)
    app.router.add_get("/docs", docs_page)
    app.router.add_get("/docs/init.js", docs_init)
    app.router.add_static("/docs/static", _STATIC)
