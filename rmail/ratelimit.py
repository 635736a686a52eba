"""The failed-login limiter shared by every protocol (SMTP AUTH, IMAP, API, Basic, webmail).

Owns only counting and lockout, in memory, for one process: no I/O, no logging of
credentials, no knowledge of protocols. Callers :meth:`LoginLimiter.check` before verifying a
password, then report :meth:`~LoginLimiter.failure` or :meth:`~LoginLimiter.success`.

Failures are counted per client IP and per account name, each over a sliding window; reaching
``max_failures`` locks that key out for ``lockout`` seconds. IPv6 clients are counted per /64,
since one host usually controls a whole /64. Memory is bounded: at most ``max_keys`` keys are
kept, least recently touched dropped first.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from rmail.errors import RateLimited

__all__ = ["DEFAULT_MAX_KEYS", "LoginLimiter"]

logger = logging.getLogger(__name__)

# One entry is a few hundred bytes, so 100k keys stay in the tens of MB.
DEFAULT_MAX_KEYS: Final = 100_000
# Account names longer than an address can be (RFC 3696 errata 1690) are cut to this.
_MAX_KEY_CHARS: Final = 320
# An IPv6 host usually owns a whole /64 (RFC 4291 §2.5.4), so it is counted as one client.
_IPV6_PREFIX: Final = 64


@dataclass(slots=True)
class _Entry:
    failures: deque[float] = field(default_factory=deque)
    locked_until: float = 0.0


class LoginLimiter:
    """Counts failed logins per IP and per account; locks out either after too many.

    Thread-safe; every method is quick and never blocks on I/O, so it can be called from
    the event loop.
    """

    def __init__(
        self,
        max_failures: int,
        window: float,
        lockout: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_keys: int = DEFAULT_MAX_KEYS,
    ) -> None:
        """Create a limiter.

        Args:
            max_failures: failures within ``window`` that start a lockout (at least 1).
            window: seconds over which failures are counted.
            lockout: seconds a lockout lasts.
            clock: monotonic seconds; tests pass a fake.
            max_keys: most IPs plus accounts remembered at once.

        Raises:
            ValueError: a parameter is out of range (a programming error).
        """
        if max_failures < 1 or window <= 0 or lockout <= 0 or max_keys < 2:
            raise ValueError("max_failures, window, lockout and max_keys must be positive")
        self.max_failures = max_failures
        self.window = window
        self.lockout = lockout
        self.max_keys = max_keys
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._guard = threading.Lock()

    @staticmethod
    def _keys(ip: str | None, account: str | None) -> list[str]:
        keys: list[str] = []
        if ip:
            keys.append("ip:" + _ip_key(ip))
        if account:
            keys.append("account:" + account.strip().lower()[:_MAX_KEY_CHARS])
        return keys

    def check(self, ip: str | None, account: str | None) -> None:
        """Refuse an attempt from a locked-out IP or for a locked-out account.

        Args:
            ip: the client address; None or "" when unknown (not counted).
            account: the login name as given; None or "" when not known yet.

        Raises:
            RateLimited: either key is locked out; ``retry_after`` is the seconds left.
        """
        now = self._clock()
        retry_after = 0.0
        with self._guard:
            for key in self._keys(ip, account):
                entry = self._entries.get(key)
                if entry is not None and entry.locked_until > now:
                    retry_after = max(retry_after, entry.locked_until - now)
        if retry_after > 0:
            raise RateLimited("too many failed logins, try again later", retry_after)

    def failure(self, ip: str | None, account: str | None) -> None:
        """Record a failed login for the IP and the account."""
        now = self._clock()
        with self._guard:
            for key in self._keys(ip, account):
                entry = self._entries.get(key)
                if entry is None:
                    entry = _Entry()
                    self._entries[key] = entry
                else:
                    self._entries.move_to_end(key)
                failures = entry.failures
                failures.append(now)
                while failures and failures[0] <= now - self.window:
                    failures.popleft()
                if len(failures) >= self.max_failures:
                    entry.locked_until = now + self.lockout
                    failures.clear()
                    logger.warning("login lockout key=%s seconds=%g", key, self.lockout)
            self._evict(now)

    def success(self, ip: str | None, account: str | None) -> None:
        """Forget the failures of the IP and the account after a good login.

        A lockout that started meanwhile (a race with another connection) stays.
        """
        now = self._clock()
        with self._guard:
            for key in self._keys(ip, account):
                entry = self._entries.get(key)
                if entry is not None and entry.locked_until <= now:
                    del self._entries[key]

    def _evict(self, now: float) -> None:
        """Drop entries that no longer matter, then the least recently touched beyond the cap."""
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if _expired(entry, now, self.window) or len(self._entries) > self.max_keys:
                del self._entries[key]
            else:
                break

    def __len__(self) -> int:
        """How many keys are remembered (for metrics and tests)."""
        return len(self._entries)


def _expired(entry: _Entry, now: float, window: float) -> bool:
    recent = bool(entry.failures) and entry.failures[-1] > now - window
    return entry.locked_until <= now and not recent


def _ip_key(ip: str) -> str:
    text = ip.strip()
    try:
        addr = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return text[:_MAX_KEY_CHARS]
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, _IPV6_PREFIX), strict=False))
    return str(addr)
