"""Local delivery: the one path by which a message reaches a local user's folder.

Used by SMTP (after DATA), ``rmail deliver``, the JSON API and webmail (send to a local
address). It resolves aliases and plus-addresses, checks the quota, writes and indexes the
message (fsynced before it returns), then publishes :class:`~rmail.events.MessageAdded`.
File work runs on a pool of ``delivery.workers`` threads, never on the event loop.

Each recipient gets its own outcome: one user over quota does not fail the others.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from rmail.errors import PermissionDenied, RmailError
from rmail.events import EventBus, MessageAdded
from rmail.store import Store
from rmail.store.accounts import Recipient
from rmail.store.maildir import INBOX
from rmail.store.queue import Queue, QueueEntry

__all__ = ["Delivered", "Delivery", "DeliveryReport"]

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Delivered:
    """One copy stored: whose, where, under which UID."""

    address: str
    folder: str
    uid: int


@dataclass(slots=True)
class DeliveryReport:
    """What happened to each recipient as given by the caller."""

    delivered: dict[str, list[Delivered]] = field(default_factory=dict)
    failed: dict[str, RmailError] = field(default_factory=dict)
    # Non-local targets reached through an alias: for the relay queue.
    forward: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


class Delivery:
    """Delivers into local mailboxes."""

    def __init__(self, store: Store, events: EventBus | None = None, workers: int = 4) -> None:
        self.store = store
        self.events = events
        self.queue = Queue(store.root, fsync=store.fsync)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="delivery")

    def is_local_domain(self, address: str) -> bool:
        """Whether the address's domain is hosted here (its mail never leaves)."""
        domain = address.rpartition("@")[2].lower().rstrip(".")
        return bool(domain) and self.store.accounts.has_domain(domain)

    def check_recipient(self, address: str, size: int = 0) -> list[Recipient]:
        """Whether a local address can take a message of ``size`` bytes now (SMTP RCPT).

        Returns:
            Where it would go (see ``Accounts.resolve``).

        Raises:
            NotFound: nobody here takes that address.
            PermissionDenied: the mailbox is disabled.
            QuotaExceeded: a local target has no room for ``size`` more bytes.
        """
        targets = self.store.accounts.resolve(address)
        for target in targets:
            if not target.local:
                continue
            if not self.store.accounts.get_user(target.address).enabled:
                raise PermissionDenied(f"mailbox {address} is disabled")
            self.store.mailbox(target.address).check_quota(size)
        return targets

    async def _run(self, func: Callable[..., T], *args: Any) -> T:
        """Run blocking store work on the delivery workers, keeping the log context."""
        call = functools.partial(contextvars.copy_context().run, func, *args)
        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    async def acheck_recipient(self, address: str, size: int = 0) -> list[Recipient]:
        """:meth:`check_recipient` on the delivery workers."""
        return await self._run(self.check_recipient, address, size)

    async def send(
        self, message: bytes, mail_from: str, recipients: Sequence[str]
    ) -> tuple[DeliveryReport, QueueEntry | None]:
        """Deliver to local recipients and queue the rest (and remote alias targets).

        Local mail gets a Return-Path on delivery; queued mail is kept as given (the remote
        end adds its own). Both are durable when this returns.

        Raises:
            TemporaryFailure: the queue could not be written.
        """
        local = [r for r in recipients if self.is_local_domain(r)]
        remote = [r for r in recipients if not self.is_local_domain(r)]
        report = (
            await self.deliver(message, local, mail_from=mail_from) if local else (DeliveryReport())
        )
        outbound = [*remote, *report.forward]
        entry = None
        if outbound:
            entry = await self._run(self.queue.enqueue, message, mail_from, outbound)
            logger.info("queued id=%s from=%s rcpts=%d", entry.id, mail_from, len(outbound))
        return report, entry

    def close(self) -> None:
        """Wait for deliveries in progress, then stop the workers."""
        self._pool.shutdown(wait=True)

    async def deliver(
        self,
        message: bytes,
        recipients: Sequence[str],
        *,
        mail_from: str | None = None,
    ) -> DeliveryReport:
        """Deliver ``message`` to each recipient; see :meth:`deliver_sync`."""
        report = await self._run(self.deliver_sync, message, list(recipients), mail_from)
        if self.events is not None:
            stored = {copy for copies in report.delivered.values() for copy in copies}
            for copy in sorted(stored, key=lambda c: (c.address, c.folder, c.uid)):
                self.events.publish(MessageAdded(copy.address, copy.folder, copy.uid))
        return report

    def deliver_sync(
        self, message: bytes, recipients: Sequence[str], mail_from: str | None = None
    ) -> DeliveryReport:
        """Blocking delivery (for scripts and ``rmail deliver``); publishes no events.

        Args:
            message: the RFC 5322 message as received.
            recipients: envelope recipients (local addresses or aliases).
            mail_from: the envelope sender; when given, a ``Return-Path`` header is
                prepended (RFC 5321 §4.4: added at final delivery). ``""`` is the null sender.
        """
        if mail_from is not None:
            message = b"Return-Path: <" + mail_from.encode("utf-8", "replace") + b">\r\n" + message
        report = DeliveryReport()
        done: dict[tuple[str, str], Delivered] = {}
        for rcpt in recipients:
            try:
                targets = self.check_recipient(rcpt, len(message))
            except RmailError as exc:
                report.failed[rcpt] = exc
                logger.info("delivery refused rcpt=%s reason=%s", rcpt, exc)
                continue
            copies: list[Delivered] = []
            try:
                for target in targets:
                    if not target.local:
                        if target.address not in report.forward:
                            report.forward.append(target.address)
                        continue
                    mailbox = self.store.mailbox(target.address)
                    folder_name = _folder_for(mailbox.folder_names(), target.detail)
                    key = (target.address, folder_name)
                    if key not in done:
                        meta = mailbox.folder(folder_name).append(message)
                        done[key] = Delivered(target.address, folder_name, meta.uid)
                        logger.info(
                            "delivered to=%s folder=%s uid=%d size=%d",
                            target.address,
                            folder_name,
                            meta.uid,
                            meta.size,
                        )
                    copies.append(done[key])
            except RmailError as exc:
                report.failed[rcpt] = exc
                logger.info("delivery failed rcpt=%s reason=%s", rcpt, exc)
                continue
            report.delivered[rcpt] = copies
        return report


def _folder_for(folders: Sequence[str], detail: str | None) -> str:
    """``alice+news@`` goes to folder ``news`` when it exists (any case), else INBOX."""
    if not detail:
        return INBOX
    for name in folders:
        if name.lower() == detail.lower():
            return name
    return INBOX
