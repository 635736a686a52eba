"""Logging in, for every protocol: the limiter check, the password check, the audit log line.

Owns the policy around a password check (rate limit first, hash off the event loop, count
the outcome, log it without the password). It does not parse SASL, HTTP headers or IMAP
LOGIN arguments (each protocol does, then calls :meth:`Authenticator.login`) and it does not
store anything itself (:mod:`rmail.store.accounts` does).

Also keeps ``create_user(mail_root, username, domain, password, admin=False)``, the entry
point the original rmail documented for creating the first admin from Python.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import logging
import os
from pathlib import Path
from typing import Any, Final

from rmail.config import AuthConfig
from rmail.errors import AlreadyExists, PermissionDenied, RateLimited
from rmail.metrics import LOGIN_FAILURES
from rmail.ratelimit import LoginLimiter
from rmail.store.accounts import Account, Accounts

__all__ = ["Authenticator", "create_user"]

logger = logging.getLogger(__name__)

# Enough of a user name to find it in the log, not enough to flood it.
_LOG_NAME_CHARS: Final = 100


def _loggable(text: str) -> str:
    """``text`` cut short with control characters replaced, so one event stays one line."""
    return "".join(ch if ch.isprintable() else "?" for ch in text[:_LOG_NAME_CHARS])


class Authenticator:
    """Checks logins for all protocols against one account database and one limiter."""

    def __init__(self, accounts: Accounts, limiter: LoginLimiter) -> None:
        """Create the service.

        Args:
            accounts: where passwords are checked.
            limiter: shared by every protocol, so a client cannot switch protocols to get
                more guesses.
        """
        self.accounts = accounts
        self.limiter = limiter

    async def login(self, address: str, password: str, ip: str | None, protocol: str) -> Account:
        """Check a login and count it toward the rate limit.

        Args:
            address: ``user@domain`` as the client sent it.
            password: the password as the client sent it; never logged.
            ip: the client's address, for the per-IP limit (None if unknown).
            protocol: ``smtp``, ``imap``, ``api``, ``basic``, ``webmail``...; for the log.

        Returns:
            The account that logged in.

        Raises:
            RateLimited: the IP or the account is locked out; the password was not checked.
            PermissionDenied: "invalid credentials" (unknown user, wrong password, disabled).
            TemporaryFailure: the account record cannot be read; not counted as a failure.
        """
        user = _loggable(address) if isinstance(address, str) else "?"
        try:
            self.limiter.check(ip, address)
        except RateLimited as exc:
            LOGIN_FAILURES.labels(protocol, "locked").inc()
            logger.warning(
                "auth refused rate-limited protocol=%s user=%s ip=%s retry_after=%.0f",
                protocol,
                user,
                ip,
                exc.retry_after,
            )
            raise
        try:
            account = await self.accounts.averify_password(address, password)
        except PermissionDenied:
            self.limiter.failure(ip, address)
            LOGIN_FAILURES.labels(protocol, "password").inc()
            logger.info("auth failed protocol=%s user=%s ip=%s", protocol, user, ip)
            raise
        self.limiter.success(ip, address)
        logger.info("auth ok protocol=%s user=%s ip=%s", protocol, account.address, ip)
        return account


def _store_class() -> Any:
    """The Store facade class if ``rmail.store`` provides one yet, else None."""
    try:
        module = importlib.import_module("rmail.store")
    except ImportError:
        return None
    return getattr(module, "Store", None)


async def create_user(
    mail_root: str | os.PathLike[str],
    username: str,
    domain: str,
    password: str,
    admin: bool = False,
) -> Account:
    """Create a user (and its domain if missing), as the original ``rmail.auth.create_user``.

    ``asyncio.run(create_user("./mailstore", "admin", "example.com", "secret", admin=True))``

    Args:
        mail_root: the data directory.
        username: local part.
        domain: domain; created if it is not hosted yet.
        password: the new password.
        admin: grant admin rights.

    Returns:
        The new account.

    Raises:
        InvalidInput: bad user name, domain or password.
        AlreadyExists: the user exists.
    """
    root = Path(mail_root)
    accounts = Accounts(root, AuthConfig())
    address = f"{username}@{domain}"

    def ensure_domain() -> None:
        if not accounts.has_domain(domain):
            # AlreadyExists: created concurrently, which is what we wanted.
            with contextlib.suppress(AlreadyExists):
                accounts.add_domain(domain)

    await asyncio.to_thread(ensure_domain)

    # The Store facade also creates the user's mail folders, so prefer it when it exists.
    # Its module is written separately; until it has Store.create_user, fall back to the
    # account record alone (the mail folders are then created on first delivery/login).
    store_cls = _store_class()
    if store_cls is not None and callable(getattr(store_cls, "create_user", None)):
        store = store_cls.open(root)
        if inspect.isawaitable(store):
            store = await store
        method = store.create_user
        if inspect.iscoroutinefunction(method):
            await method(address, password, admin=admin)
        else:
            await asyncio.to_thread(method, address, password, admin=admin)
        close = getattr(store, "close", None)
        if callable(close):
            result = close()
            if inspect.isawaitable(result):
                await result
        return await asyncio.to_thread(accounts.get_user, address)
    return await asyncio.to_thread(accounts.add_user, address, password, admin=admin)
