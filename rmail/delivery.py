"""Local delivery: the one path by which a message reaches a local user's folder.

Used by SMTP (after DATA), ``rmail deliver``, the JSON API and webmail (send to a local
address). It resolves aliases and plus-addresses, checks the quota, writes and indexes the
message (fsynced before it returns), then publishes :class:`~rmail.events.MessageAdded`.
File work runs on a pool of ``delivery.workers`` threads, never on the event loop.

Each recipient gets its own outcome: one user over quota does not fail the others.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from rmail.errors import RmailError
from rmail.events import EventBus, MessageAdded
from rmail.store import Store
from rmail.store.maildir import INBOX

__all__ = ["Delivered", "Delivery", "DeliveryReport"]

logger = logging.getLogger(__name__)


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
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="delivery")

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
        loop = asyncio.get_running_loop()
        report = await loop.run_in_executor(
            self._pool, self.deliver_sync, message, list(recipients), mail_from
        )
        if self.events is not None:
            for copies in report.delivered.values():
                for copy in copies:
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
                targets = self.store.accounts.resolve(rcpt)
            except RmailError as exc:
                report.failed[rcpt] = exc
                logger.info("delivery refused rcpt=%s reason=%s", rcpt, exc)
                continue
            copies: list[Delivered] = []
            try:
                for target in targets:
                    if not target.local:
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
