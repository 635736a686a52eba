"""DNS lookups for the relay and for inbound checks, through dnspython.

One :class:`Resolver` per process, built from ``relay.nameservers`` (``ip`` or ``ip:port``,
so tests and split-horizon setups can point at their own server; empty: the system's
``/etc/resolv.conf``). Answers are cached by TTL, NXDOMAIN included.

Errors are split by what the caller must do: :class:`DnsPermanent` (the name does not exist,
or a null MX: bounce now) and :class:`DnsTemporary` (timeout, SERVFAIL, no server reachable:
try again later), as RFC 5321 §5.1 asks.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence
from typing import Final

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.rdatatype
import dns.resolver

from rmail.config import parse_host_port

__all__ = ["DnsPermanent", "DnsTemporary", "Resolver"]

logger = logging.getLogger(__name__)

# Seconds one whole lookup (every server, every retry) may take.
LOOKUP_LIFETIME: Final = 10.0


class DnsTemporary(Exception):
    """The answer could not be had now (timeout, SERVFAIL, no server answered)."""


class DnsPermanent(Exception):
    """The answer says the mail cannot go there (no such domain, null MX)."""


class Resolver:
    """MX, address and TXT lookups, async for the relay and blocking for library callbacks."""

    def __init__(self, nameservers: Sequence[str] = (), lifetime: float = LOOKUP_LIFETIME):
        cache = dns.resolver.LRUCache(4096)
        configure = not nameservers
        try:
            self._async = dns.asyncresolver.Resolver(configure=configure)
            self._sync = dns.resolver.Resolver(configure=configure)
        except dns.resolver.NoResolverConfiguration:
            # No /etc/resolv.conf: start anyway; every lookup fails as temporary (mail stays
            # queued, inbound checks say temperror) until relay.nameservers is set.
            logger.error("no DNS resolver configured: set relay.nameservers")
            self._async = dns.asyncresolver.Resolver(configure=False)
            self._sync = dns.resolver.Resolver(configure=False)
        for resolver in (self._async, self._sync):
            if nameservers:
                resolver.nameservers = [_nameserver(text) for text in nameservers]
            resolver.lifetime = lifetime
            resolver.timeout = min(lifetime, 3.0)
            resolver.cache = cache

    async def _resolve(self, name: str, rdtype: str) -> dns.resolver.Answer | None:
        """The answer, or None when the name exists without records of that type."""
        try:
            return await self._async.resolve(name, rdtype, search=False)
        except dns.resolver.NoAnswer:
            return None
        except dns.resolver.NXDOMAIN:
            raise DnsPermanent(f"{name}: no such domain") from None
        except dns.resolver.YXDOMAIN:
            raise DnsPermanent(f"{name}: name too long after DNAME substitution") from None
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
            raise DnsTemporary(f"{name} {rdtype}: {exc}") from None
        except dns.exception.DNSException as exc:
            raise DnsTemporary(f"{name} {rdtype}: {exc}") from None

    async def mail_hosts(self, domain: str) -> list[str]:
        """Hosts to try for ``domain``, best first (RFC 5321 §5.1).

        MX records by preference (ties in the order the server gave them); a domain without
        MX records is its own mail host (the implicit MX).

        Raises:
            DnsPermanent: no such domain, or a null MX (RFC 7505).
            DnsTemporary: the lookup failed for now.
        """
        answer = await self._resolve(domain, "MX")
        if answer is None:
            return [domain.rstrip(".")]
        records = sorted(answer, key=lambda r: r.preference)
        hosts = [r.exchange.to_text(omit_final_dot=True) for r in records]
        if hosts == [""] or (len(hosts) == 1 and str(records[0].exchange) == "."):
            raise DnsPermanent(f"{domain} accepts no mail (null MX, RFC 7505)")
        return [host for host in hosts if host and host != "."]

    async def addresses(self, host: str) -> list[str]:
        """IPv4 then IPv6 addresses of ``host`` (an address literal is returned as is).

        Raises:
            DnsPermanent: no such host or no address records.
            DnsTemporary: both lookups failed for now.
        """
        try:
            return [str(ipaddress.ip_address(host))]
        except ValueError:
            pass
        found: list[str] = []
        temporary: DnsTemporary | None = None
        for rdtype in ("A", "AAAA"):
            try:
                answer = await self._resolve(host, rdtype)
            except DnsTemporary as exc:
                temporary = exc
                continue
            if answer is not None:
                found += [r.address for r in answer]
        if not found:
            if temporary is not None:
                raise temporary
            raise DnsPermanent(f"{host}: no address records")
        return found

    async def txt(self, name: str) -> list[str]:
        """Every TXT record of ``name`` (its strings joined); [] when there is none.

        Raises:
            DnsTemporary: the lookup failed for now.
        """
        try:
            answer = await self._resolve(name, "TXT")
        except DnsPermanent:
            return []
        return [] if answer is None else [_joined(r.strings) for r in answer]

    def txt_sync(self, name: str) -> list[str]:
        """:meth:`txt`, blocking: for libraries that take a lookup callback (dkimpy)."""
        return [_joined(s) for s in self.lookup_sync(name, "TXT")]

    def lookup_sync(self, name: str, rdtype: str) -> list[tuple[bytes, ...]]:
        """Blocking lookup for library callbacks: TXT strings, or (text,) for other types.

        Raises:
            DnsTemporary: the lookup failed for now. NXDOMAIN and no data give [].
        """
        try:
            answer = self._sync.resolve(name, rdtype, search=False)
        except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN, dns.resolver.YXDOMAIN):
            return []
        except dns.exception.DNSException as exc:
            raise DnsTemporary(f"{name} {rdtype}: {exc}") from None
        if dns.rdatatype.from_text(rdtype) == dns.rdatatype.TXT:
            return [tuple(r.strings) for r in answer]
        return [(r.to_text().encode(),) for r in answer]


def _joined(strings: Sequence[bytes]) -> str:
    return b"".join(strings).decode("utf-8", "replace")


def _nameserver(text: str) -> dns.nameserver.Do53Nameserver:
    parsed = parse_host_port(text, 53)
    if parsed is None:  # the config loader has checked this already
        raise ValueError(f"not ip or ip:port: {text!r}")
    return dns.nameserver.Do53Nameserver(parsed[0], parsed[1])
