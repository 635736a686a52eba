"""The SMTP listeners: an aiosmtpd ``SMTP`` variant and the three servers that use it.

``RmailSMTP`` changes aiosmtpd's protocol in these places only:

- replies get RFC 3463 enhanced status codes (``push`` maps aiosmtpd's fixed texts through
  ``replies.AIOSMTPD_REWRITES`` and gives any other a class default such as ``5.0.0``);
- a connection past ``smtp.max_errors`` error replies is closed with ``421``;
- each connection logs under its own connection id;
- long lines in DATA are accepted up to 64 KiB (RFC 5321's 1000 is a limit on senders that
  real mail breaks; refusing such a message would lose it);
- the message after DATA is read in large pieces, not line by line (``smtp/data.py``),
  with the same outcome as aiosmtpd's loop; most of the event loop's time per message
  went to that loop;
- a plain ``<local@domain>`` path in MAIL and RCPT is taken apart with one regular
  expression (``smtp/reading.py``); anything else goes to aiosmtpd's parser as before.

The connection limit (``smtp.max_connections``) is shared by the three ports: a client
past it gets ``421`` at once.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import ssl
import warnings
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from aiosmtpd.smtp import MISSING, SMTP, syntax

from rmail import log
from rmail.config import SmtpConfig
from rmail.metrics import SMTP_SESSIONS
from rmail.smtp import replies
from rmail.smtp.handler import SmtpHandler
from rmail.smtp.reading import plain_path, read_data

__all__ = ["RmailSMTP", "SmtpListeners"]

logger = logging.getLogger(__name__)

Mode = Literal["mx", "submission", "smtps"]
_ENHANCED = re.compile(r"^[245]\d\d[ -][245]\.\d{1,3}\.\d{1,3}( |$)")
# A line in DATA may be this long before the message is refused (see module docstring).
DATA_LINE_LIMIT: Final = 65536
_ids = itertools.count(1)
_AUTH_PARAM = re.compile(r"(?i)\s+AUTH=\S+")
# aiosmtpd itself sets the deprecated Session.login_data after every successful AUTH and
# warns about its own assignment; nothing of ours uses it.
warnings.filterwarnings("ignore", message="Session.login_data is deprecated")


class RmailSMTP(SMTP):
    """aiosmtpd's protocol with rmail's reply codes, error limit and connection ids."""

    line_length_limit = DATA_LINE_LIMIT

    def __init__(self, handler: SmtpHandler, *, listeners: SmtpListeners, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.listeners = listeners
        self.conn = f"smtp-{next(_ids)}"
        self._errors = 0
        self._in_ehlo = False
        self._idle_deadline = 0.0  # see _reset_timeout

    @property
    def handler_busy(self) -> bool:
        """True while a message is being delivered (shutdown waits for it)."""
        return bool(self.event_handler.busy)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None
        handler = self.event_handler
        if first and (
            handler.mode == "smtps"
            or handler.plaintext_auth_allowed(transport.get_extra_info("peername"))
        ):
            # On 465 the transport is TLS from the first byte, which aiosmtpd cannot see
            # (it only knows STARTTLS); set here, not in __init__, to skip its warning.
            self._auth_require_tls = False
        token = log.conn_id.set(self.conn)
        try:
            super().connection_made(transport)
        finally:
            log.conn_id.reset(token)
        if first:
            self.listeners.opened(self)
            logger.debug("connected peer=%s", transport.get_extra_info("peername"))

    def connection_lost(self, error: Exception | None) -> None:
        self.listeners.closed(self)
        super().connection_lost(error)

    def data_received(self, data: bytes) -> None:
        # smtp.timeout is for a silent client: any bytes (a DATA line too) restart it.
        self._reset_timeout()
        super().data_received(data)

    def _reset_timeout(self, duration: float | None = None) -> None:
        # aiosmtpd cancels and makes a new timer for every command, and we restart it for
        # every chunk received: move a deadline instead, and let the one timer, when it
        # fires before the deadline, set itself again for it.
        deadline = self.loop.time() + (duration or self._timeout_duration)
        self._idle_deadline = deadline
        handle = self._timeout_handle
        if handle is None or handle.cancelled() or handle.when() > deadline:
            if handle is not None:
                handle.cancel()
            self._timeout_handle = self.loop.call_at(deadline, self._idle_timer)

    def _idle_timer(self) -> None:
        if self.loop.time() < self._idle_deadline:
            self._timeout_handle = self.loop.call_at(self._idle_deadline, self._idle_timer)
        else:
            self._timeout_cb()  # type: ignore[no-untyped-call]  # aiosmtpd's: log and close

    async def smtp_HELO(self, hostname: str) -> None:
        self._in_ehlo = True
        try:
            await super().smtp_HELO(hostname)
        finally:
            self._in_ehlo = False

    async def smtp_AUTH(self, arg: str) -> None:
        if self.event_handler.mode == "mx":
            if not await self.check_helo_needed("EHLO"):
                await self.push(replies.R503_AUTH_NOT_HERE)
            return
        await super().smtp_AUTH(arg)

    async def smtp_MAIL(self, arg: str | None) -> None:
        # RFC 4954 §5: AUTH=<> may be parsed and discarded where AUTH is offered.
        if arg and self.event_handler.submission:
            arg = _AUTH_PARAM.sub("", arg)
        await super().smtp_MAIL(arg)

    async def smtp_EHLO(self, hostname: str) -> None:
        # RFC 2034: the EHLO reply carries no enhanced codes.
        self._in_ehlo = True
        try:
            await super().smtp_EHLO(hostname)
        finally:
            self._in_ehlo = False

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        plain = plain_path(arg)
        if plain is None:
            return super()._getaddr(arg)
        local_part_limit: int = self.local_part_limit
        if local_part_limit and len(plain[0].rpartition("@")[0]) > local_part_limit:
            return None, None  # as aiosmtpd's _getaddr
        return plain

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        # aiosmtpd's smtp_DATA up to the 354, then _read_data instead of its line loop.
        if self._decode_data:
            await super().smtp_DATA(arg)
            return
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        try:
            content = await read_data(self._reader, self.data_size_limit, self.line_length_limit)
        except asyncio.CancelledError:
            # The connection went away in the middle of the message (aiosmtpd's
            # eof_received and connection_lost cancel this task).
            logger.info("connection lost during DATA")
            self._writer.close()
            raise
        except asyncio.IncompleteReadError:
            logger.info("connection closed during DATA")
            self._writer.close()
            return
        if isinstance(content, str):  # the message is refused; all of it has been read
            await self.push(content)
            self._end_transaction()
            return
        self.envelope.content = self.envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self._end_transaction()
        await self.push("250 OK" if status is MISSING else status)

    def _end_transaction(self) -> None:
        # aiosmtpd's _set_post_data_state (not annotated there): a fresh envelope.
        self._set_post_data_state()  # type: ignore[no-untyped-call]

    async def push(self, status: str | bytes) -> None:
        text = status.decode("utf-8", "replace") if isinstance(status, bytes) else status
        if not self._in_ehlo:
            text = _enhance(text)
        await super().push(text)
        if text.startswith("421"):
            # RFC 5321 §3.8: 421 means the server is closing the transmission channel.
            if self.transport is not None:
                self.transport.close()
        elif text[:1] in {"4", "5"}:
            self._errors += 1
            if self._errors >= self.listeners.config.max_errors:
                logger.warning("too many errors, closing conn=%s", self.conn)
                await super().push(replies.R421_TOO_MANY_ERRORS.format(host=self.hostname))
                if self.transport is not None:
                    self.transport.close()

    async def close_with(self, reply: str) -> None:
        """Send a final reply and close (421 cases).

        A connection the client is closing at that moment gets no reply: writing to a TLS
        transport half way through its close raises inside asyncio (AttributeError on
        3.11), which must not turn a clean shutdown into a crash.
        """
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        try:
            await super().push(reply)
        except (OSError, RuntimeError, AttributeError) as exc:
            logger.debug("final reply not sent: %r", exc)
        if self.transport is not None:
            self.transport.close()


def _enhance(text: str) -> str:
    """Give a reply an enhanced status code (RFC 2034 §3) if it has none."""
    mapped = replies.AIOSMTPD_REWRITES.get(text)
    if mapped is not None:
        return mapped
    code = text[:3]
    if (
        len(text) < 4
        or not code.isdigit()
        or code[0] not in "245"
        or code in {"220", "334", "354"}
        or _ENHANCED.match(text)
    ):
        return text
    return f"{code}{text[3]}{code[0]}.0.0 {text[4:]}".rstrip()


class _Refuse(asyncio.Protocol):
    """Answers 421 and hangs up: the connection limit is reached."""

    def __init__(self, hostname: str) -> None:
        self.hostname = hostname

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        reply = replies.R421_TOO_MANY_CONNECTIONS.format(host=self.hostname)
        transport.write(reply.encode() + b"\r\n")
        transport.close()


@dataclass
class SmtpListeners:
    """The MX, submission (STARTTLS) and submissions (implicit TLS) servers."""

    config: SmtpConfig
    hostname: str
    handler_factory: Any
    ssl_context: ssl.SSLContext
    servers: dict[str, asyncio.Server] = field(default_factory=dict)
    active: set[RmailSMTP] = field(default_factory=set)

    def opened(self, proto: RmailSMTP) -> None:
        self.active.add(proto)

    def closed(self, proto: RmailSMTP) -> None:
        self.active.discard(proto)

    def _factory(self, mode: Mode) -> Any:
        def make() -> asyncio.Protocol:
            cfg = self.config
            if len(self.active) >= cfg.max_connections:
                logger.warning("connection limit reached limit=%d", cfg.max_connections)
                return _Refuse(self.hostname)
            handler: SmtpHandler = self.handler_factory(mode)
            SMTP_SESSIONS.labels(mode).inc()
            return RmailSMTP(
                handler,
                listeners=self,
                hostname=self.hostname,
                ident="ESMTP rmail",
                data_size_limit=cfg.max_message_size,
                enable_SMTPUTF8=True,
                # STARTTLS on the MX and submission ports; 465 is TLS from the first byte.
                tls_context=None if mode == "smtps" else self.ssl_context,
                require_starttls=False,
                timeout=cfg.timeout,
                auth_required=mode != "mx",
                auth_require_tls=True,
            )

        return make

    async def start(self) -> dict[str, int]:
        """Bind the three ports; returns name -> bound port."""
        loop = asyncio.get_running_loop()
        cfg = self.config
        plan: tuple[tuple[str, Mode, int, ssl.SSLContext | None], ...] = (
            ("smtp", "mx", cfg.port, None),
            ("submission", "submission", cfg.submission_port, None),
            ("smtps", "smtps", cfg.smtps_port, self.ssl_context),
        )
        ports = {}
        for name, mode, port, context in plan:
            server = await loop.create_server(
                self._factory(mode), cfg.host, port, ssl=context, reuse_address=True
            )
            self.servers[name] = server
            ports[name] = int(server.sockets[0].getsockname()[1])
        return ports

    async def stop(self, grace: float) -> None:
        """Stop accepting; give sessions ``grace`` seconds to finish, then close them."""
        for server in self.servers.values():
            server.close()
        deadline = asyncio.get_running_loop().time() + grace
        while self.active and asyncio.get_running_loop().time() < deadline:
            busy = [p for p in self.active if p.handler_busy]
            if not busy:
                break
            await asyncio.sleep(0.05)
        for proto in list(self.active):
            if proto.transport is not None:
                await proto.close_with(replies.R421_SHUTTING_DOWN.format(host=self.hostname))
        for server in self.servers.values():
            await server.wait_closed()
