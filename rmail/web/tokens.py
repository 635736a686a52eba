"""JSON API bearer tokens: JWTs signed with HS256 (pyjwt).

The algorithm is pinned: a token whose header names any other algorithm, ``none``
included, is refused before its signature is looked at. A token carries the account
(``sub``), its ``token_version`` (``ver``), ``iat`` and ``exp``; a password change bumps the
account's version, which voids every token issued before it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt

from rmail.errors import PermissionDenied
from rmail.store.accounts import Account

__all__ = ["Claims", "TokenService"]

ALGORITHM = "HS256"


@dataclass(frozen=True, slots=True)
class Claims:
    address: str
    version: int
    expires: int


class TokenService:
    def __init__(self, secret: bytes, lifetime: int) -> None:
        self._secret = secret
        self.lifetime = lifetime

    @property
    def secret(self) -> bytes:
        """The HMAC key, for other signed values of the web layer (webmail sessions)."""
        return self._secret

    def issue(self, account: Account) -> str:
        now = int(time.time())
        claims = {
            "sub": account.address,
            "ver": account.token_version,
            "iat": now,
            "exp": now + self.lifetime,
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def verify(self, token: str) -> Claims:
        """The token's claims. Raises PermissionDenied for a bad, foreign or expired token."""
        try:
            data = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                options={"require": ["sub", "exp", "iat", "ver"]},
            )
        except jwt.ExpiredSignatureError:
            raise PermissionDenied("token expired") from None
        except jwt.PyJWTError:
            raise PermissionDenied("invalid token") from None
        if not isinstance(data.get("sub"), str) or not isinstance(data.get("ver"), int):
            raise PermissionDenied("invalid token")
        return Claims(data["sub"], data["ver"], int(data["exp"]))
