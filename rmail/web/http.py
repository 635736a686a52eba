"""What every HTTP area shares: the JSON error shape, CORS, and reading JSON bodies.

Errors are ``{"error": "..."}`` with the status the original rmail used: 400 bad input,
401 not logged in, 403 not allowed, 404 not found, 409 exists already, 413 too large or over
quota, 429 rate-limited (with ``Retry-After``), 503 try later. Store errors are mapped once,
here; any other exception is a 500 whose text is never shown.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web

from rmail.errors import (
    AlreadyExists,
    InvalidInput,
    NotFound,
    PermissionDenied,
    QuotaExceeded,
    RateLimited,
    ReadOnly,
    RmailError,
    TemporaryFailure,
)

__all__ = [
    "ApiError",
    "cors_middleware",
    "error_middleware",
    "json_body",
    "json_error",
]

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CORS_HEADERS: Final = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match, If-None-Match",
    "Access-Control-Expose-Headers": "ETag, Retry-After, Location, Content-Disposition",
    "Access-Control-Max-Age": "600",
}
# Paths that are not the API (browser sessions with cookies): no CORS there.
_NO_CORS_PREFIXES: Final = ("/webmail",)
# JSON request bodies other than message uploads; /messages/send has its own, larger one.
MAX_JSON_BYTES: Final = 1024 * 1024


class ApiError(Exception):
    """An HTTP error with a message for the client; ``xml`` replaces the JSON body with a
    WebDAV ``error`` document (a named precondition)."""

    def __init__(
        self,
        status: int,
        message: str,
        headers: dict[str, str] | None = None,
        *,
        xml: bytes | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        # More fields for the JSON body beside "error" (e.g. each recipient's failure).
        self.extra = extra
        self.xml = xml


def json_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def _status_of(exc: RmailError) -> int:
    for kind, status in (
        (NotFound, 404),
        (AlreadyExists, 409),
        (QuotaExceeded, 413),
        (InvalidInput, 400),
        (RateLimited, 429),
        (ReadOnly, 403),
        (PermissionDenied, 403),
        (TemporaryFailure, 503),
    ):
        if isinstance(exc, kind):
            return status
    return 400


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        if exc.xml is not None:
            return web.Response(
                status=exc.status,
                body=exc.xml,
                headers=exc.headers,
                content_type="application/xml",
                charset="utf-8",
            )
        if exc.extra:
            body = {"error": exc.message, **exc.extra}
            return web.json_response(body, status=exc.status, headers=exc.headers)
        return json_error(exc.status, exc.message, exc.headers)
    except RateLimited as exc:
        retry = str(max(1, math.ceil(exc.retry_after)))
        return json_error(429, str(exc), {"Retry-After": retry})
    except RmailError as exc:
        return json_error(_status_of(exc), str(exc))
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        reason = {413: "request body too large"}.get(exc.status, exc.reason.lower())
        return json_error(
            exc.status,
            reason,
            {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")},
        )
    except Exception:
        logger.exception("HTTP %s %s failed", request.method, request.path)
        return json_error(500, "internal error")


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """CORS headers on every API response; any OPTIONS preflight answers 204."""
    if request.path.startswith(_NO_CORS_PREFIXES):
        return await handler(request)
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        return web.Response(status=204, headers=CORS_HEADERS)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers.update(CORS_HEADERS)
        raise
    if not response.prepared:
        response.headers.update(CORS_HEADERS)
    return response


async def json_body(request: web.Request, limit: int = MAX_JSON_BYTES) -> dict[str, Any]:
    """The request's JSON object. Raises ApiError 400 (not an object) or 413 (too large)."""
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "request body too large")
    raw = await request.content.read(limit + 1)
    if len(raw) > limit:
        raise ApiError(413, "request body too large")
    try:
        data = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "request body must be a JSON object")
    return data


def field(data: dict[str, Any], name: str, kind: type, *, required: bool = True) -> Any:
    """``data[name]`` checked to be of ``kind``. Raises ApiError 400 naming the field."""
    if name not in data or data[name] is None:
        if required:
            raise ApiError(400, f"missing field {name!r}")
        return None
    value = data[name]
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ApiError(400, f"field {name!r} must be a whole number")
    if not isinstance(value, kind):
        raise ApiError(400, f"field {name!r} must be {_kind_name(kind)}")
    return value


def _kind_name(kind: type) -> str:
    return {str: "a string", bool: "true or false", list: "a list", dict: "an object"}.get(
        kind, kind.__name__
    )
