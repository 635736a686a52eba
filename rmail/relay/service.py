"""The relay service: takes due entries from the queue and sends them on.

The queue on disk (:class:`~rmail.store.queue.Queue`) is the only state that matters. In
memory the service keeps, per entry, the record file's mtime and its ``next_try``, learnt
by listing the queue directory when its mtime changes (at most every ``POLL_SECONDS``, or
at once when :meth:`Relay.wake` is called after a submission). So ``rmail queue retry``
from another process is seen within a second, and a restart resumes from the files.

Each attempt, per entry: sign with DKIM, send to every pending recipient's domain
(:class:`~rmail.relay.transport.Transport`), and record each recipient's outcome. A 5xx
(or a failure past ``relay.give_up_after``) fails the recipient: a DSN goes to the sender
(its INBOX when local, the queue otherwise; never for a null sender). A 4xx or a
connection problem leaves it pending, and the entry is tried again after
``relay.retry_initial`` seconds, doubling up to ``relay.retry_max``. The record is
rewritten after every domain, so a crash re-sends at most what was in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections import defaultdict
from dataclasses import replace
from typing import Final

from rmail.config import Config
from rmail.delivery import Delivery
from rmail.errors import NotFound, RmailError
from rmail.metrics import RELAY_ATTEMPTS, set_queue_size_source
from rmail.relay.bounce import FailedRecipient, build_bounce, wants_bounce
from rmail.relay.dkim import DkimSigner
from rmail.relay.dns import Resolver
from rmail.relay.transport import Outcome, Transport
from rmail.store.queue import QueueEntry, QueueRecipient, RecipientStatus
from rmail.tasks import stop_tasks

__all__ = ["Relay", "retry_delay"]

logger = logging.getLogger(__name__)

# Seconds between two looks at the queue directory's mtime.
POLL_SECONDS: Final = 1.0
_METRIC_RESULT: Final = {"sent": "sent", "temporary": "deferred", "permanent": "failed"}
_RECIPIENT_STATUS: Final[dict[str, RecipientStatus]] = {
    "sent": "sent",
    "temporary": "pending",
    "permanent": "failed",
}


def retry_delay(attempts: int, initial: int, most: int) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt (1, 2, ...)."""
    return float(min(most, initial * 2 ** max(0, min(attempts - 1, 40))))


class Relay:
    """Owns the relay workers; started and stopped by the server."""

    def __init__(self, config: Config, delivery: Delivery, resolver: Resolver) -> None:
        self.config = config
        self.delivery = delivery
        self.queue = delivery.queue
        self.transport = Transport(config.relay, config.hostname, resolver)
        self.signer = DkimSigner(
            config.root, config.relay.dkim_selector, delivery.store.accounts.has_domain
        )
        self._known: dict[str, tuple[int, float]] = {}  # id -> (record mtime_ns, next_try)
        self._dir_mtime: int | None = None
        self._busy: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(config.relay.workers)
        self._main: asyncio.Task[None] | None = None
        self._stopping = False

    def apply(self, config: Config) -> None:
        """SIGHUP: new relay settings for the next attempts (``relay.workers`` needs a
        restart; connections kept open are reused until they expire)."""
        self.config = config
        self.transport.config = config.relay
        self.signer.selector = config.relay.dkim_selector

    @property
    def known(self) -> dict[str, tuple[int, float]]:
        """Queued entries as last seen: id -> (record mtime, next try)."""
        return self._known

    def start(self) -> None:
        set_queue_size_source(lambda: float(len(self._known)))
        self._main = asyncio.get_running_loop().create_task(self._run(), name="relay")

    def wake(self, entry: QueueEntry | None = None) -> None:
        """Look at the queue now (a submission queued ``entry``)."""
        if entry is not None:
            self._known[entry.id] = (-1, entry.next_try)
        self._wake.set()

    async def stop(self, grace: float) -> None:
        """Stop taking entries; give sends in progress ``grace`` seconds, then cut them."""
        self._stopping = True
        main, self._main = self._main, None
        await stop_tasks(main, self._tasks, grace)
        await self.transport.close()

    # -- scheduling --------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self._scan()
                await self._dispatch()
            except Exception:  # a bad entry must not stop the relay
                logger.exception("relay: scheduling failed; trying again")
            await self.transport.expire_idle()
            wait = POLL_SECONDS
            # Only what could be dispatched now shortens the wait: an entry being sent is
            # not, nor is anything while every worker is busy (the one that ends sets _wake).
            # Counting them made this loop spin with a zero wait for as long as a due entry
            # waited for a worker.
            if not self._slots.locked():
                due = min(
                    (t for entry_id, (_, t) in self._known.items() if entry_id not in self._busy),
                    default=None,
                )
                if due is not None:
                    wait = max(0.0, min(wait, due - time.time()))
            self._wake.clear()
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow the cancellation
            # that stop() sends when the event is set at the same moment.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    async def _scan(self) -> None:
        """Refresh ``_known`` from the directory when it changed."""
        try:
            mtime = os.stat(self.queue.dir).st_mtime_ns
        except FileNotFoundError:
            return
        if mtime == self._dir_mtime:
            return
        self._dir_mtime = mtime
        self._known = await asyncio.to_thread(self._list, dict(self._known))

    def _list(self, known: dict[str, tuple[int, float]]) -> dict[str, tuple[int, float]]:
        found: dict[str, tuple[int, float]] = {}
        with os.scandir(self.queue.dir) as entries:
            for item in entries:
                if not item.name.endswith(".json") or item.name.startswith("."):
                    continue
                entry_id = item.name[:-5]
                try:
                    mtime = item.stat().st_mtime_ns
                except FileNotFoundError:
                    continue
                before = known.get(entry_id)
                if before is not None and before[0] == mtime:
                    found[entry_id] = before
                    continue
                try:
                    with open(item.path, "rb") as f:
                        found[entry_id] = (mtime, float(json.loads(f.read())["next_try"]))
                except (OSError, ValueError, KeyError, TypeError):
                    logger.warning("relay: unreadable queue record %s", item.name)
        return found

    async def _dispatch(self) -> None:
        now = time.time()
        due = sorted(
            (next_try, entry_id)
            for entry_id, (_, next_try) in self._known.items()
            if next_try <= now and entry_id not in self._busy
        )
        for _, entry_id in due:
            if self._slots.locked() or self._stopping:
                return
            await self._slots.acquire()
            self._busy.add(entry_id)
            task = asyncio.get_running_loop().create_task(self._attempt(entry_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    # -- one attempt -------------------------------------------------------------------------

    async def _attempt(self, entry_id: str) -> None:
        try:
            await self._send(entry_id)
        except NotFound:  # deleted (rmail queue delete) while it was being sent
            self._known.pop(entry_id, None)
            logger.info("relay id=%s deleted while in progress", entry_id)
        except Exception:
            logger.exception("relay: attempt on %s failed", entry_id)
            # Leave the record as it is; look at it again after the first retry delay.
            self._known[entry_id] = (-1, time.time() + self.config.relay.retry_initial)
        finally:
            self._busy.discard(entry_id)
            self._slots.release()
            self._wake.set()

    async def _send(self, entry_id: str) -> None:
        entry = await asyncio.to_thread(self.queue.get, entry_id)
        now = time.time()
        if entry.next_try > now:  # changed on disk since it was listed
            self._known[entry_id] = (-1, entry.next_try)
            return
        message = await asyncio.to_thread(self.queue.message, entry_id)
        if self.config.relay.dkim_sign:
            message = await asyncio.to_thread(self.signer.sign, message, entry.mail_from)
        pending = [r for r in entry.recipients if r.status == "pending"]
        groups: dict[str, list[str]] = defaultdict(list)
        for rcpt in pending:
            domain = "*" if self.config.relay.smarthost else rcpt.address.rpartition("@")[2]
            groups[domain.lower()].append(rcpt.address)
        failed: list[FailedRecipient] = []
        for domain, addresses in groups.items():
            outcomes = await self.transport.send(domain, entry.mail_from, addresses, message)
            entry = await asyncio.to_thread(self._record, entry, outcomes)
            failed += [
                FailedRecipient(address, o.dsn_status, o.reply, o.host)
                for address, o in outcomes.items()
                if o.status == "permanent"
            ]
        await self._finish(entry, failed)

    def _record(self, entry: QueueEntry, outcomes: dict[str, Outcome]) -> QueueEntry:
        recipients = []
        for rcpt in entry.recipients:
            outcome = outcomes.get(rcpt.address)
            if outcome is None:
                recipients.append(rcpt)
                continue
            status = _RECIPIENT_STATUS[outcome.status]
            RELAY_ATTEMPTS.labels(_METRIC_RESULT[outcome.status]).inc()
            recipients.append(
                QueueRecipient(
                    rcpt.address,
                    status,
                    rcpt.attempts + 1,
                    None if outcome.status == "sent" else outcome.reply,
                )
            )
            logger.info(
                "relay id=%s to=%s status=%s reply=%s",
                entry.id,
                rcpt.address,
                status,
                outcome.reply,
            )
        return self.queue.update(entry, recipients=tuple(recipients))

    async def _finish(self, entry: QueueEntry, failed: list[FailedRecipient]) -> None:
        cfg = self.config.relay
        now = time.time()
        pending = [r for r in entry.recipients if r.status == "pending"]
        if pending and now - entry.created >= cfg.give_up_after:
            expired = [
                FailedRecipient(
                    r.address, "4.4.7", f"gave up after {cfg.give_up_after} s: {r.last_error}"
                )
                for r in pending
            ]
            failed += expired
            gone = {f.address for f in expired}
            entry = await asyncio.to_thread(
                self.queue.update,
                entry,
                recipients=tuple(
                    replace(r, status="failed") if r.address in gone else r
                    for r in entry.recipients
                ),
            )
            pending = []
        if failed:
            await self._bounce(entry, failed)
        if not pending:
            await asyncio.to_thread(self.queue.delete, entry.id)
            self._known.pop(entry.id, None)
            logger.info("relay id=%s done", entry.id)
            return
        attempts = entry.attempts + 1
        next_try = now + retry_delay(attempts, cfg.retry_initial, cfg.retry_max)
        entry = await asyncio.to_thread(
            self.queue.update, entry, attempts=attempts, next_try=next_try
        )
        self._known[entry.id] = (-1, entry.next_try)
        logger.info(
            "relay id=%s deferred rcpts=%d attempt=%d next_in=%ds",
            entry.id,
            len(pending),
            attempts,
            int(next_try - now),
        )

    async def _bounce(self, entry: QueueEntry, failed: list[FailedRecipient]) -> None:
        if not wants_bounce(entry.mail_from):
            logger.info("relay id=%s failed rcpts=%d; no bounce", entry.id, len(failed))
            return
        original = await asyncio.to_thread(self.queue.message, entry.id)
        dsn = build_bounce(
            hostname=self.config.hostname,
            mail_from=entry.mail_from,
            original=original,
            failed=failed,
            arrival=entry.created,
        )
        try:
            report, queued = await self.delivery.send(dsn, "", [entry.mail_from])
        except RmailError as exc:
            logger.error("relay id=%s bounce to %s not stored: %s", entry.id, entry.mail_from, exc)
            return
        if report.failed:
            logger.warning(
                "relay id=%s bounce to %s refused: %s",
                entry.id,
                entry.mail_from,
                report.failed[entry.mail_from],
            )
        if queued is not None:
            self.wake(queued)
        logger.info("relay id=%s bounced to=%s rcpts=%d", entry.id, entry.mail_from, len(failed))
