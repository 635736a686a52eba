"""One delivery attempt of one message to one destination domain, over SMTP (aiosmtplib).

Routing (first that applies): ``relay.smarthost`` for every domain; a ``relay.routes``
entry for that domain; else the domain's MX hosts by preference, each host's addresses in
turn, with the domain itself as the implicit MX (RFC 5321 §5.1) and a null MX (RFC 7505)
as a permanent failure.

To MX hosts TLS is opportunistic: STARTTLS when offered, without checking the certificate
(what RFC 7435 calls opportunistic security; a handshake that fails is retried in clear
text once, as Postfix's ``may`` level does). To a smarthost TLS is as configured, with the
certificate checked, then AUTH when a user name is set.

Connections are kept open for ``IDLE_SECONDS`` after a message and reused by the next
message for the same host, so a burst to one domain pays for one TCP and TLS handshake.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

import aiosmtplib

from rmail.config import RelayConfig, parse_host_port
from rmail.relay.dns import DnsPermanent, DnsTemporary, Resolver

__all__ = ["Outcome", "Transport"]

logger = logging.getLogger(__name__)

# How long an idle connection to a remote host is kept for the next message.
IDLE_SECONDS: Final = 30.0
# Messages sent over one connection before it is closed and a new one opened.
MESSAGES_PER_CONNECTION: Final = 100
_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")

Status = Literal["sent", "temporary", "permanent"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one recipient in this attempt."""

    status: Status
    # The remote reply ("550 5.1.1 no such user") or our own reason ("connection refused").
    reply: str
    # Where it was decided: the remote host, or None when no host was reached.
    host: str | None = None
    # RFC 3463 status for a DSN (from the reply when it carries one).
    code: str = ""

    @property
    def dsn_status(self) -> str:
        if self.code:
            return self.code
        return {"sent": "2.0.0", "temporary": "4.0.0", "permanent": "5.0.0"}[self.status]


@dataclass(frozen=True, slots=True)
class _Target:
    host: str  # name for TLS SNI and for the record
    address: str  # where to connect
    port: int
    smarthost: bool = False


class _Failure(Exception):
    """This host did not take the message: try the next one (temporary) or stop (permanent)."""

    def __init__(self, status: Status, reply: str, code: str = "") -> None:
        super().__init__(reply)
        self.status: Status = status
        self.reply = reply
        self.code = code


class Transport:
    """Sends messages to remote hosts; one per process, shared by the relay workers."""

    def __init__(self, config: RelayConfig, hostname: str, resolver: Resolver) -> None:
        self.config = config
        self.hostname = hostname
        self.resolver = resolver
        self._idle: dict[tuple[str, int], list[tuple[float, aiosmtplib.SMTP, int]]] = {}
        self._opportunistic = ssl.create_default_context()
        self._opportunistic.check_hostname = False
        self._opportunistic.verify_mode = ssl.CERT_NONE
        self._no_tls: dict[tuple[str, int], float] = {}  # hosts whose TLS failed, until when

    async def send(
        self, domain: str, mail_from: str, recipients: Sequence[str], message: bytes
    ) -> dict[str, Outcome]:
        """Try to hand ``message`` for ``recipients`` (all in ``domain``) to a remote host.

        Never raises for a delivery problem: every recipient gets an :class:`Outcome`.
        """
        try:
            targets = await self._targets(domain)
        except DnsPermanent as exc:
            code = "5.1.10" if "null MX" in str(exc) else "5.1.2"
            return {r: Outcome("permanent", str(exc), None, code) for r in recipients}
        except DnsTemporary as exc:
            return {r: Outcome("temporary", f"DNS: {exc}", None, "4.4.3") for r in recipients}
        last = _Failure("temporary", f"no mail host for {domain}", "4.4.4")
        for target in targets:
            try:
                return await self._send_to(target, mail_from, recipients, message)
            except _Failure as failure:
                logger.info(
                    "relay host=%s port=%d failed: %s", target.host, target.port, failure.reply
                )
                if failure.status == "permanent":
                    return {
                        r: Outcome("permanent", failure.reply, target.host, failure.code)
                        for r in recipients
                    }
                last = failure
        return {r: Outcome("temporary", last.reply, None, last.code) for r in recipients}

    async def _targets(self, domain: str) -> list[_Target]:
        cfg = self.config
        if cfg.smarthost:
            parsed = parse_host_port(cfg.smarthost, cfg.smarthost_port) or (cfg.smarthost, 25)
            return [_Target(parsed[0], parsed[0], parsed[1], smarthost=True)]
        route = cfg.routes.get(domain.lower())
        hosts: list[tuple[str, int]]
        if route is not None:
            routed = parse_host_port(route, 25)
            assert routed is not None  # checked by the config loader
            hosts = [routed]
        else:
            port = cfg.port
            hosts = [(host, port) for host in await self.resolver.mail_hosts(domain)]
        targets: list[_Target] = []
        temporary: DnsTemporary | None = None
        for host, port in hosts:
            try:
                addresses = await self.resolver.addresses(host)
            except DnsTemporary as exc:
                temporary = exc
                continue
            except DnsPermanent:
                continue
            targets += [_Target(host, address, port) for address in addresses]
        if not targets:
            if temporary is not None:
                raise temporary
            raise DnsTemporary(f"no address for any mail host of {domain}")
        return targets

    async def _send_to(
        self, target: _Target, mail_from: str, recipients: Sequence[str], message: bytes
    ) -> dict[str, Outcome]:
        key = (target.address, target.port)
        reused = self._take_idle(key)
        if reused is not None:
            client, sent = reused
            try:
                result = await self._transaction(client, target, mail_from, recipients, message)
            except _Failure as failure:
                if not _is_disconnect(failure):
                    raise
                # The host closed the idle connection meanwhile: one fresh try.
                client.close()
            else:
                self._keep(key, client, sent + 1)
                return result
        client = await self._connect(target)
        try:
            result = await self._transaction(client, target, mail_from, recipients, message)
        except BaseException:
            client.close()
            raise
        self._keep(key, client, 1)
        return result

    async def _connect(self, target: _Target) -> aiosmtplib.SMTP:
        cfg = self.config
        timeout = float(cfg.timeout)
        implicit = target.smarthost and cfg.smarthost_tls == "implicit"
        client = aiosmtplib.SMTP(
            hostname=target.address,
            port=target.port,
            local_hostname=self.hostname,
            timeout=timeout,
            use_tls=implicit,
            start_tls=False,
            validate_certs=target.smarthost,
            tls_context=None if target.smarthost else self._opportunistic,
        )
        try:
            await client.connect()
            await self._hello(client, target)
            if target.smarthost and cfg.smarthost_username:
                await client.login(cfg.smarthost_username, cfg.smarthost_password)
        except aiosmtplib.SMTPAuthenticationError as exc:
            client.close()
            reply = f"smarthost AUTH refused: {exc.code} {_one_line(exc.message)}"
            raise _Failure("temporary", reply, "4.7.0") from None
        except aiosmtplib.SMTPResponseException as exc:
            client.close()
            raise _failure_from(exc.code, exc.message) from None
        except (aiosmtplib.SMTPException, OSError, ssl.SSLError, TimeoutError) as exc:
            client.close()
            if isinstance(exc, ssl.SSLError) and not target.smarthost:
                # Opportunistic TLS failed: next time (the retry of this host) in clear.
                self._no_tls[(target.address, target.port)] = time.monotonic() + 3600
            raise _Failure("temporary", f"{target.host}: {_describe(exc)}", "4.4.1") from None
        return client

    async def _hello(self, client: aiosmtplib.SMTP, target: _Target) -> None:
        await client.ehlo()
        if target.smarthost:
            if self.config.smarthost_tls != "starttls":
                return
        elif time.monotonic() < self._no_tls.get((target.address, target.port), 0.0):
            return
        if not client.supports_extension("starttls"):
            if target.smarthost:
                raise _Failure("temporary", f"{target.host} does not offer STARTTLS", "4.7.5")
            return
        await client.starttls(
            server_hostname=target.host,
            validate_certs=target.smarthost,
            tls_context=None if target.smarthost else self._opportunistic,
        )
        await client.ehlo()

    async def _transaction(
        self,
        client: aiosmtplib.SMTP,
        target: _Target,
        mail_from: str,
        recipients: Sequence[str],
        message: bytes,
    ) -> dict[str, Outcome]:
        host = target.host
        options: list[str] = []
        utf8 = not (mail_from.isascii() and all(r.isascii() for r in recipients))
        if utf8:
            if not client.supports_extension("smtputf8"):
                reply = f"{host} does not support SMTPUTF8 for a non-ASCII address"
                raise _Failure("permanent", reply, "5.6.7")
            options.append("SMTPUTF8")
        if client.supports_extension("size"):
            options.append(f"SIZE={len(message)}")
        if not message.isascii() and client.supports_extension("8bitmime"):
            options.append("BODY=8BITMIME")
        encoding = "utf-8" if utf8 else "ascii"
        try:
            await client.mail(mail_from, options=options, encoding=encoding)
        except aiosmtplib.SMTPResponseException as exc:
            await _reset(client)
            raise _failure_from(exc.code, exc.message) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise _Failure("temporary", f"{host}: {_describe(exc)}", "4.4.2") from None
        outcomes: dict[str, Outcome] = {}
        accepted: list[str] = []
        for rcpt in recipients:
            try:
                await client.rcpt(rcpt, encoding=encoding)
            except aiosmtplib.SMTPResponseException as exc:
                outcomes[rcpt] = _outcome(exc.code, exc.message, host)
                continue
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                raise _Failure("temporary", f"{host}: {_describe(exc)}", "4.4.2") from None
            accepted.append(rcpt)
        if not accepted:
            await _reset(client)
            return outcomes
        try:
            response = await client.data(message)
        except aiosmtplib.SMTPResponseException as exc:
            await _reset(client)
            for rcpt in accepted:
                outcomes[rcpt] = _outcome(exc.code, exc.message, host)
            return outcomes
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise _Failure("temporary", f"{host}: {_describe(exc)}", "4.4.2") from None
        for rcpt in accepted:
            outcomes[rcpt] = _outcome(response.code, response.message, host)
        logger.info(
            "relayed host=%s rcpts=%d reply=%s", host, len(accepted), _one_line(response.message)
        )
        return outcomes

    def _take_idle(self, key: tuple[str, int]) -> tuple[aiosmtplib.SMTP, int] | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            since, client, sent = idle.pop()
            if now - since < IDLE_SECONDS and client.is_connected:
                return client, sent
            client.close()
        return None

    def _keep(self, key: tuple[str, int], client: aiosmtplib.SMTP, sent: int) -> None:
        if sent >= MESSAGES_PER_CONNECTION or not client.is_connected:
            asyncio.get_running_loop().create_task(_quit(client))
            return
        self._idle.setdefault(key, []).append((time.monotonic(), client, sent))

    async def expire_idle(self) -> None:
        """Close connections idle for longer than ``IDLE_SECONDS`` (called now and then)."""
        now = time.monotonic()
        for key, idle in list(self._idle.items()):
            keep = [item for item in idle if now - item[0] < IDLE_SECONDS]
            for item in idle:
                if item not in keep:
                    await _quit(item[1])
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]

    async def close(self) -> None:
        """QUIT every idle connection."""
        idle, self._idle = self._idle, {}
        for items in idle.values():
            for _, client, _ in items:
                await _quit(client)


def _outcome(code: int, text: str, host: str) -> Outcome:
    status: Status = "sent" if 200 <= code < 300 else "permanent" if code >= 500 else "temporary"
    return Outcome(status, f"{code} {_one_line(text)}", host, _enhanced(code, text))


def _failure_from(code: int, text: str) -> _Failure:
    status: Status = "permanent" if code >= 500 else "temporary"
    return _Failure(status, f"{code} {_one_line(text)}", _enhanced(code, text))


def _enhanced(code: int, text: str) -> str:
    match = _ENHANCED.match(text.strip())
    if match and match.group(1) == str(code)[0]:
        return match.group(0)
    return f"{str(code)[0]}.0.0" if str(code)[0] in "245" else ""


def _one_line(text: str) -> str:
    return " ".join(text.split())[:500]


def _describe(exc: BaseException) -> str:
    """A short reason for a queue record and a bounce: "connection refused", "timed out"."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, TimeoutError | aiosmtplib.SMTPTimeoutError):
            return "timed out"
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused"
        if isinstance(seen, ConnectionResetError):
            return "connection reset"
        if isinstance(seen, aiosmtplib.SMTPServerDisconnected):
            return "connection closed by the server"
        seen = seen.__cause__ or seen.__context__
    return _one_line(str(exc) or type(exc).__name__)


def _is_disconnect(failure: _Failure) -> bool:
    if failure.reply.startswith("421"):
        return True
    return failure.status == "temporary" and failure.code in ("4.4.2", "4.4.1")


async def _reset(client: aiosmtplib.SMTP) -> None:
    with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
        await client.rset()


async def _quit(client: aiosmtplib.SMTP) -> None:
    with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
        await client.quit()
    client.close()
