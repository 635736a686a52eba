"""The aiosmtpd hooks: rmail's SMTP policy, one handler object per connection.

MX (port 25): mail for hosted domains only; an unknown recipient is refused at RCPT
(``550 5.1.1``), never accepted and bounced; a remote recipient is ``554 5.7.1`` (no open
relay, ever); AUTH is not offered.

Submission (587 with STARTTLS, 465 with TLS): AUTH first; the envelope sender and the From
header must belong to the user; local recipients are delivered at once, remote ones queued
for the relay (unless ``relay.enabled`` is false: ``550 5.7.1``); Message-ID and Date are
added when missing.

MX mail is checked with SPF, DKIM and DMARC (``rmail.relay.inbound``, when
``inbound.check_authentication``) and gets an ``Authentication-Results`` field above our
``Received:``; with ``inbound.dmarc_reject`` a message failing DMARC under ``p=reject`` is
refused (``550 5.7.1``). On every port, Authentication-Results fields naming our hostname as
their authserv-id are removed from incoming messages (RFC 8601 §5: they are forged).

Both: at most ``smtp.max_recipients`` recipients (``452 4.5.3``), quota checked at RCPT with
the SIZE the client declared and again at DATA with the real size, a ``Received:`` header
(RFC 5321 §4.4) and, on local delivery, ``Return-Path``. SMTP has one reply for DATA, so a
recipient found over quota only at DATA time fails the whole message (``552 5.2.2``) rather
than being accepted and bounced; clients that send SIZE are told per recipient at RCPT.
"""

from __future__ import annotations

import asyncio
import email.utils
import itertools
import logging
import os
import secrets
import time
from email.parser import BytesHeaderParser
from email.policy import SMTPUTF8
from typing import Any, Literal

from aiosmtpd.smtp import MISSING, AuthResult, Envelope, Session, TLSSetupException

from rmail.auth import Authenticator
from rmail.config import Config
from rmail.delivery import Delivery
from rmail.errors import (
    InvalidInput,
    NotFound,
    PermissionDenied,
    QuotaExceeded,
    RmailError,
)
from rmail.metrics import SMTP_MESSAGES
from rmail.mime import header_block_end
from rmail.relay.inbound import InboundAuth, strip_forged_results
from rmail.smtp import replies
from rmail.smtp.auth import sasl_login, sasl_plain
from rmail.store.accounts import Account

__all__ = ["SmtpHandler"]

logger = logging.getLogger(__name__)

Mode = Literal["mx", "submission", "smtps"]
_LOOPBACK = frozenset({"127.0.0.1", "::1"})


class _Ids:
    """Message ids for Received and the 250 reply: unique, cheap, not guessable across runs.

    A random prefix per process (drawn again in a forked child) and a counter: no system
    call per message, unlike ``secrets.token_hex``.
    """

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self.prefix = secrets.token_hex(4)
        self.counter = itertools.count(1)

    def __call__(self) -> str:
        return f"{self.prefix}{next(self.counter):06x}"


_next_id = _Ids()


_date_cache: tuple[int, str] = (0, "")


def _date_now() -> str:
    """RFC 5322 date of this second in local time; formatted once per second, not per mail."""
    global _date_cache  # noqa: PLW0603 - a one-entry cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, email.utils.formatdate(now, localtime=True))
    return _date_cache[1]


class SmtpHandler:
    """Hooks for one SMTP connection (aiosmtpd calls ``handle_<VERB>`` and ``auth_<MECH>``)."""

    def __init__(
        self,
        mode: Mode,
        config: Config,
        delivery: Delivery,
        authenticator: Authenticator,
        inbound: InboundAuth | None = None,
    ) -> None:
        """``inbound``: the SPF/DKIM/DMARC checker, given for the MX port only (None: no
        checks, no Authentication-Results)."""
        self.mode = mode
        self.config = config
        self.delivery = delivery
        self.authenticator = authenticator
        self.inbound = inbound
        self.messages = 0
        self.busy = False

    @property
    def submission(self) -> bool:
        return self.mode != "mx"

    def plaintext_auth_allowed(self, peer: Any) -> bool:
        """AUTH without TLS: only on submission, from loopback, when the config says so."""
        return (
            self.mode == "submission"
            and self.config.smtp.plaintext_auth_on_loopback
            and isinstance(peer, tuple)
            and peer[0] in _LOOPBACK
        )

    # -- greeting and AUTH ---------------------------------------------------------------

    async def handle_EHLO(
        self,
        server: Any,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        # aiosmtpd's list ends with "250 HELP"; keep that last.
        lines = [r for r in responses[:-1] if not (self.mode == "mx" and r.startswith("250-AUTH"))]
        return [*lines, "250-PIPELINING", "250-ENHANCEDSTATUSCODES", responses[-1]]

    async def handle_AUTH(
        self, server: Any, session: Session, envelope: Envelope, args: list[str]
    ) -> Any:
        if not self.submission:
            return replies.R503_AUTH_NOT_HERE
        return MISSING

    async def auth_PLAIN(self, server: Any, args: list[str]) -> AuthResult:
        return await sasl_plain(self.authenticator, server, args)

    async def auth_LOGIN(self, server: Any, args: list[str]) -> AuthResult:
        return await sasl_login(self.authenticator, server, args)

    # -- envelope ----------------------------------------------------------------------------

    async def handle_MAIL(
        self,
        server: Any,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if self.messages >= self.config.smtp.max_messages_per_connection:
            return replies.R421_TOO_MANY_MESSAGES.format(host=server.hostname)
        sender = "" if address == "<>" else address
        if self.submission:
            account = _account(session)
            if not sender or not await self._owns(account, sender):
                logger.info("sender refused user=%s from=%s", account.address, sender or "<>")
                return replies.R553_SENDER_NOT_OWNED
        envelope.mail_from = sender or "<>"
        envelope.mail_options.extend(mail_options)
        return replies.R250_SENDER_OK

    async def _owns(self, account: Account, sender: str) -> bool:
        accounts = self.delivery.store.accounts
        return await asyncio.to_thread(accounts.may_send_as, account.address, sender)

    async def handle_RCPT(
        self,
        server: Any,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if len(envelope.rcpt_tos) >= self.config.smtp.max_recipients:
            return replies.R452_TOO_MANY_RECIPIENTS
        if self.delivery.is_local_domain(address):
            try:
                await self.delivery.acheck_recipient(address, _declared_size(envelope))
            except QuotaExceeded:
                logger.info("rcpt over quota rcpt=%s", address)
                return replies.R552_OVER_QUOTA
            except PermissionDenied:
                return replies.R550_MAILBOX_DISABLED
            except (NotFound, InvalidInput):
                logger.info("rcpt unknown rcpt=%s", address)
                return replies.R550_NO_SUCH_USER
        elif not self.submission or not session.authenticated:
            logger.info("relay denied rcpt=%s peer=%s", address, _ip(session))
            return replies.R554_RELAY_DENIED
        elif not self.config.relay.enabled:
            return replies.R550_RELAY_DISABLED
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return replies.R250_RECIPIENT_OK

    # -- message -------------------------------------------------------------------------------

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        self.busy = True
        try:
            reply = await self._data(server, session, envelope)
        finally:
            self.busy = False
        SMTP_MESSAGES.labels(self.mode, "accepted" if reply[:1] == "2" else "refused").inc()
        return reply

    async def _data(self, server: Any, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        header_end = header_block_end(content)
        extra = b""
        if self.submission:
            # Only submission looks into the header (From ownership, Date, Message-ID).
            headers = BytesHeaderParser(policy=SMTPUTF8).parsebytes(content[:header_end])
            account = _account(session)
            # The raw text, parsed by the lenient legacy parser: the policy's structured
            # parser raises on input such as "From: a@", which must get a 553, not a 451.
            raw_from = [str(v) for k, v in headers.raw_items() if k.lower() == "from"]
            senders = [addr for _name, addr in email.utils.getaddresses(raw_from)]
            if raw_from and not any(senders):
                # A From that names no address ("a@", "Bob <>") could be anyone's.
                logger.info("From refused user=%s: no address in it", account.address)
                return replies.R553_FROM_NOT_OWNED
            for addr in senders:
                if addr and not await self._owns(account, addr):
                    logger.info("From refused user=%s from=%s", account.address, addr)
                    return replies.R553_FROM_NOT_OWNED
            if headers.get("Date") is None:
                extra += f"Date: {email.utils.formatdate(localtime=True)}\r\n".encode()
            if headers.get("Message-ID") is None:
                msgid = email.utils.make_msgid(domain=self.config.hostname)
                extra += f"Message-ID: {msgid}\r\n".encode()
        mail_from = "" if envelope.mail_from == "<>" else (envelope.mail_from or "")
        trace = b""
        if self.inbound is not None:
            verdict = await self.inbound.check(
                content, ip=_ip(session), helo=session.host_name or "", mail_from=mail_from
            )
            if verdict.refusal is not None:
                logger.info(
                    "message refused at DATA from=%s: %s", mail_from or "<>", verdict.refusal
                )
                return replies.R550_DMARC_REJECTED
            # RFC 8601 §5: above any trace field we add.
            trace = verdict.header.encode("utf-8", "surrogateescape")
        head = strip_forged_results(content[:header_end], self.config.hostname)
        if extra and head and not head.endswith(b"\n"):
            head += b"\r\n"  # a header block with no line end at all
        ident = _next_id()
        message = trace + self._received(session, envelope, ident) + head + extra
        message += content[header_end:]
        # One trip to the delivery workers: every local recipient is checked again with the
        # real size, and nothing is stored or queued unless all pass (one reply for DATA).
        report, entry = await self.delivery.send(
            message, mail_from, envelope.rcpt_tos, all_or_nothing=True
        )
        if report.failed:
            first = next(iter(report.failed.values()))
            if not report.delivered and entry is None:
                refused = _refusal(first)
                if refused is not None:
                    logger.info("message refused at DATA: %s", first)
                    return refused
            # Some copies may be stored already; 451 makes the client retry, which can
            # duplicate a copy but never loses one.
            logger.warning("delivery failed after DATA: %s", first)
            return replies.R451_LOCAL_ERROR
        self.messages += 1
        ident = entry.id if entry is not None else ident
        logger.info(
            "accepted from=%s rcpts=%d size=%d id=%s",
            mail_from or "<>",
            len(envelope.rcpt_tos),
            len(message),
            ident,
        )
        return replies.R250_QUEUED.format(id=ident)

    def _received(self, session: Session, envelope: Envelope, ident: str) -> bytes:
        """RFC 5321 §4.4 trace header; the with-protocol per RFC 3848 and RFC 6531."""
        tls = session.ssl is not None or self.mode == "smtps"
        proto = ("UTF8SMTP" if envelope.smtp_utf8 else "ESMTP") if session.extended_smtp else "SMTP"
        if session.extended_smtp:
            proto += ("S" if tls else "") + ("A" if session.authenticated else "")
        helo = (session.host_name or "unknown").replace("\r", "").replace("\n", "")[:255]
        rcpt = f"\r\n\tfor <{envelope.rcpt_tos[0]}>" if len(envelope.rcpt_tos) == 1 else ""
        when = _date_now()
        line = (
            f"Received: from {helo} ([{_ip(session)}])\r\n\tby {self.config.hostname} (rmail) "
            f"with {proto} id {ident}{rcpt};\r\n\t{when}\r\n"
        )
        return line.encode("utf-8", "surrogateescape")

    async def handle_exception(self, error: Exception) -> str:
        # The one broad handler of a connection: a bug, never the client's fault.
        if isinstance(error, TLSSetupException):
            # A client (often a scanner) that gives up the handshake; aiosmtpd hangs up.
            logger.info("STARTTLS handshake failed: %s", error.__cause__)
            return replies.R451_LOCAL_ERROR
        if isinstance(error, RmailError):
            logger.info("refused: %s", error)
        else:
            logger.error("smtp handler failed", exc_info=error)
        return replies.R451_LOCAL_ERROR


def _account(session: Session) -> Account:
    account: Any = session.auth_data  # aiosmtpd types it as None
    assert isinstance(account, Account), "submission hooks run only after AUTH"
    return account


def _ip(session: Session) -> str:
    peer = session.peer
    return str(peer[0]) if isinstance(peer, tuple) else str(peer)


def _refusal(error: RmailError) -> str | None:
    """The permanent reply for a recipient check that failed, or None (then 451)."""
    if isinstance(error, QuotaExceeded):
        return replies.R552_OVER_QUOTA
    if isinstance(error, PermissionDenied):
        return replies.R550_MAILBOX_DISABLED
    if isinstance(error, (NotFound, InvalidInput)):
        return replies.R550_NO_SUCH_USER
    return None


def _declared_size(envelope: Envelope) -> int:
    """The SIZE= the client announced in MAIL FROM (RFC 1870), else 0."""
    for option in envelope.mail_options:
        name, _, value = option.partition("=")
        if name.upper() == "SIZE" and value.isdigit():
            return int(value)
    return 0
