"""SASL PLAIN (RFC 4616) and LOGIN for SMTP AUTH (RFC 4954), over the shared authenticator.

aiosmtpd's own mechanisms call a synchronous authenticator; ours must wait for a password
hash that runs off the event loop and for the shared login limiter, so the two mechanisms
are reimplemented here as handler methods (aiosmtpd picks up ``auth_<MECH>`` on the
handler). Credentials are never logged.
"""

from __future__ import annotations

import binascii
import logging
from base64 import b64decode
from typing import Any

from aiosmtpd.smtp import MISSING, AuthResult

from rmail.auth import Authenticator
from rmail.errors import PermissionDenied, RateLimited
from rmail.smtp import replies

__all__ = ["decode_plain", "sasl_login", "sasl_plain"]

logger = logging.getLogger(__name__)


def decode_plain(blob: bytes) -> tuple[str, str] | None:
    """``authzid NUL authcid NUL passwd`` -> (authcid, passwd); None when malformed.

    An authorization identity other than empty or the login itself is refused: nobody
    may act as another user here.
    """
    parts = blob.split(b"\x00")
    if len(parts) != 3:
        return None
    authzid, login, password = (p.decode("utf-8", "replace") for p in parts)
    if not login or (authzid and authzid.lower() != login.lower()):
        return None
    return login, password


def _b64(text: str) -> bytes | None:
    try:
        return b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None


async def _check(
    authenticator: Authenticator, server: Any, login: str, password: str
) -> AuthResult:
    peer = server.session.peer
    ip = peer[0] if isinstance(peer, tuple) else None
    try:
        account = await authenticator.login(login, password, ip, "smtp")
    except RateLimited:
        return AuthResult(success=False, handled=False, message=replies.R454_AUTH_LOCKED)
    except PermissionDenied:
        return AuthResult(success=False, handled=False, message=replies.R535_AUTH_FAILED)
    return AuthResult(success=True, auth_data=account, message=replies.R235_AUTH_OK)


async def sasl_plain(authenticator: Authenticator, server: Any, args: list[str]) -> AuthResult:
    """``AUTH PLAIN [initial-response]``."""
    if len(args) == 1:
        blob = await server.challenge_auth("")
        if blob is MISSING:
            return AuthResult(success=False, handled=True)
    else:
        blob = _b64(args[1])
        if blob is None:
            await server.push("501 5.5.2 Cannot decode base64")
            return AuthResult(success=False, handled=True)
    creds = decode_plain(blob)
    if creds is None:
        await server.push("501 5.5.2 Malformed PLAIN credentials")
        return AuthResult(success=False, handled=True)
    return await _check(authenticator, server, *creds)


async def sasl_login(authenticator: Authenticator, server: Any, args: list[str]) -> AuthResult:
    """``AUTH LOGIN [base64-username]``: username and password in two challenges."""
    if len(args) == 1:
        login = await server.challenge_auth("Username:")
        if login is MISSING:
            return AuthResult(success=False, handled=True)
    else:
        login = _b64(args[1])
        if login is None:
            await server.push("501 5.5.2 Cannot decode base64")
            return AuthResult(success=False, handled=True)
    password = await server.challenge_auth("Password:")
    if password is MISSING:
        return AuthResult(success=False, handled=True)
    return await _check(
        authenticator, server, login.decode("utf-8", "replace"), password.decode("utf-8", "replace")
    )
