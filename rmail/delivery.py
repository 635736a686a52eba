"""Local delivery: the one path by which a message reaches a local user's folder.

Used by SMTP (after DATA), ``rmail deliver``, the JSON API and webmail (send to a local
address). It resolves aliases and plus-addresses, checks the quota, writes and indexes the
message (fsynced before it returns), then publishes :class:`~rmail.events.MessageAdded`.
File work runs on a pool of ``delivery.workers`` threads, never on the event loop.
Deliveries asked for at the same time go to the workers together, as one batch (at most
``MAX_BATCHES`` at once): one thread trip, and per folder one directory fsync and one index
journal write, for the whole batch; each caller still waits for its own message to be durable.

Each recipient gets its own outcome: one user over quota does not fail the others. SMTP has
one reply for DATA, so it asks for ``all_or_nothing``: every recipient is checked first and
nothing is stored (or queued) unless all of them pass.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import contextvars
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from rmail.errors import PermissionDenied, RmailError
from rmail.events import EventBus, MessageAdded
from rmail.metrics import DELIVERIES
from rmail.store import Store
from rmail.store.accounts import REVALIDATE_AFTER, Recipient
from rmail.store.maildir import INBOX
from rmail.store.queue import Queue, QueueEntry

__all__ = ["Delivered", "Delivery", "DeliveryReport"]

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Seconds a recipient that passed acheck_recipient is trusted without checking again (the
# check at delivery stays authoritative). A named constant rather than a config key, as
# config.py is not ours to change in this work.
RCPT_CHECK_TTL: Final = 1.0
# Delivery batches on the workers at once: while one is being written and synced, the
# deliveries asked for meanwhile gather into the next (see Delivery.deliver).
MAX_BATCHES: Final = 2
_RCPT_CACHE_MAX: Final = 4096


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


@dataclass(frozen=True, slots=True)
class _Request:
    """One delivery asked for: a message and its envelope (see :meth:`Delivery.deliver_sync`)."""

    message: bytes
    recipients: list[str]
    mail_from: str | None
    all_or_nothing: bool


@dataclass(slots=True)
class _Plan:
    """A request inside :meth:`Delivery.deliver_many_sync`: where its message goes, and
    what came of it."""

    job: _Request
    message: bytes = b""  # with Return-Path
    base: DeliveryReport = field(default_factory=DeliveryReport)
    # Per recipient that passed: the (address, folder) copies it gets.
    rcpt_keys: list[tuple[str, list[tuple[str, str]]]] = field(default_factory=list)
    stored: dict[tuple[str, str], tuple[Delivered, int]] = field(default_factory=dict)
    failed_targets: dict[tuple[str, str], RmailError] = field(default_factory=dict)
    error: BaseException | None = None  # a bug met on the way: raised to the caller

    def report(self) -> DeliveryReport:
        """The job's report, once its folders are committed (logs each copy stored)."""
        report = self.base
        for delivered, size in self.stored.values():
            logger.info(
                "delivered to=%s folder=%s uid=%d size=%d",
                delivered.address,
                delivered.folder,
                delivered.uid,
                size,
            )
        for rcpt, keys in self.rcpt_keys:
            failed = next((self.failed_targets[k] for k in keys if k in self.failed_targets), None)
            if failed is not None:
                report.failed[rcpt] = failed
                logger.info("delivery failed rcpt=%s reason=%s", rcpt, failed)
                continue
            report.delivered[rcpt] = [self.stored[k][0] for k in keys]
        return report


class Delivery:
    """Delivers into local mailboxes."""

    def __init__(self, store: Store, events: EventBus | None = None, workers: int = 4) -> None:
        self.store = store
        self.events = events
        self.queue = Queue(store.root, fsync=store.fsync)
        self._pool = _Workers(workers, "delivery")
        # Told about each entry queued here, so the relay sends it at once (set by the server).
        self.on_queued: Callable[[QueueEntry], None] | None = None
        # Told (on the event loop) about each message stored by deliver(), with the local
        # addresses that got it: calendar scheduling looks for iMIP there (set by the server).
        self.after_delivery: Callable[[bytes, str | None, list[str]], None] | None = None
        # acheck_recipient's positive answers: address -> (monotonic expiry, bytes free for
        # the address (None: no quota), targets). Read and replaced on the event loop only.
        self._rcpt_ok: dict[str, tuple[float, int | None, list[Recipient]]] = {}
        # deliver(): jobs waiting for the next batch, and batches on the workers now (both
        # on the event loop only).
        self._waiting: list[
            tuple[_Request, contextvars.Context, asyncio.Future[DeliveryReport]]
        ] = []
        self._batches_running = 0
        self._batch_loop: asyncio.AbstractEventLoop | None = None

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
        return self._check(address, size)[0]

    def _check(
        self, address: str, size: int, pending: dict[str, int] | None = None
    ) -> tuple[list[Recipient], int | None]:
        """:meth:`check_recipient`, plus the fewest bytes free among its local targets.

        ``pending``: bytes about to be added to mailboxes (by address) by earlier messages
        of the same batch, counted as used.
        """
        accounts = self.store.accounts
        # Account records and alias lists checked against the disk up to REVALIDATE_AFTER
        # (0.1 s) ago are good enough here: a change made that recently by another process
        # is as if it came just after this message.
        targets = accounts.resolve(address, max_age=REVALIDATE_AFTER)
        free: int | None = None
        for target in targets:
            if not target.local:
                continue
            account = accounts.get_user(target.address, max_age=REVALIDATE_AFTER)
            if not account.enabled:
                raise PermissionDenied(f"mailbox {address} is disabled")
            ahead = pending.get(target.address, 0) if pending else 0
            room = self.store.mailbox(target.address).check_quota(
                size + ahead, quota=account.quota_mb * 1024 * 1024
            )
            if room is not None:
                room -= ahead
            if room is not None:
                free = room if free is None else min(free, room)
        return targets, free

    async def _run(self, func: Callable[..., T], *args: Any) -> T:
        """Run blocking store work on the delivery workers, keeping the log context."""
        call = functools.partial(contextvars.copy_context().run, func, *args)
        return await self._pool.submit(asyncio.get_running_loop(), call)

    async def acheck_recipient(self, address: str, size: int = 0) -> list[Recipient]:
        """:meth:`check_recipient` on the delivery workers, for SMTP RCPT.

        An address that passed is trusted for ``RCPT_CHECK_TTL`` seconds for messages that
        fit the room it had then, without going to the workers again. This check is
        advisory (it gives the early per-recipient 550/552): delivery checks every recipient
        again with the real size before storing anything, so an answer made stale by a
        change in the meantime turns into a refusal at DATA, never into a lost message.
        """
        now = time.monotonic()
        cached = self._rcpt_ok.get(address)
        if cached is not None and cached[0] > now and (cached[1] is None or size <= cached[1]):
            return list(cached[2])
        targets, free = await self._run(self._check, address, size)
        if len(self._rcpt_ok) >= _RCPT_CACHE_MAX:
            self._rcpt_ok.clear()
        self._rcpt_ok[address] = (time.monotonic() + RCPT_CHECK_TTL, free, targets)
        return list(targets)  # a copy: the cached list stays as it was

    async def send(
        self,
        message: bytes,
        mail_from: str,
        recipients: Sequence[str],
        *,
        all_or_nothing: bool = False,
    ) -> tuple[DeliveryReport, QueueEntry | None]:
        """Deliver to local recipients and queue the rest (and remote alias targets).

        Local mail gets a Return-Path on delivery; queued mail is kept as given (the remote
        end adds its own). Both are durable when this returns. With ``all_or_nothing`` (see
        :meth:`deliver_sync`) nothing is queued either when a local recipient fails.

        Raises:
            TemporaryFailure: the queue could not be written.
        """
        local: list[str] = []
        remote: list[str] = []
        for rcpt in recipients:
            (local if self.is_local_domain(rcpt) else remote).append(rcpt)
        report = (
            await self.deliver(message, local, mail_from=mail_from, all_or_nothing=all_or_nothing)
            if local
            else DeliveryReport()
        )
        if all_or_nothing and report.failed:
            return report, None
        outbound = [*remote, *report.forward]
        entry = None
        if outbound:
            entry = await self._run(self.queue.enqueue, message, mail_from, outbound)
            logger.info("queued id=%s from=%s rcpts=%d", entry.id, mail_from, len(outbound))
            if self.on_queued is not None:
                self.on_queued(entry)
        return report, entry

    def close(self) -> None:
        """Wait for deliveries in progress (and queued), then stop the workers."""
        self._pool.close()

    async def deliver(
        self,
        message: bytes,
        recipients: Sequence[str],
        *,
        mail_from: str | None = None,
        all_or_nothing: bool = False,
    ) -> DeliveryReport:
        """Deliver ``message`` to each recipient; see :meth:`deliver_sync`.

        Deliveries asked for while others are being written wait and then go together, as
        one batch, in one trip to the delivery workers (:meth:`deliver_many_sync`: one
        directory fsync and one index journal write per folder for the whole batch). Each
        caller still returns only once its own message is durable.
        """
        loop = asyncio.get_running_loop()
        if loop is not self._batch_loop:
            # Batches of a loop that is gone (tests run one per test) never settle here.
            self._batch_loop, self._waiting, self._batches_running = loop, [], 0
        future: asyncio.Future[DeliveryReport] = loop.create_future()
        job = _Request(message, list(recipients), mail_from, all_or_nothing)
        self._waiting.append((job, contextvars.copy_context(), future))
        if self._batches_running < MAX_BATCHES:
            self._start_batch(loop)
        report = await future
        DELIVERIES.labels("delivered").inc(len(report.delivered))
        if report.failed:
            DELIVERIES.labels("failed").inc(len(report.failed))
        if self.events is not None:
            stored = {copy for copies in report.delivered.values() for copy in copies}
            for copy in sorted(stored, key=lambda c: (c.address, c.folder, c.uid)):
                self.events.publish(MessageAdded(copy.address, copy.folder, copy.uid))
        if self.after_delivery is not None and report.delivered:
            addresses = sorted({c.address for copies in report.delivered.values() for c in copies})
            self.after_delivery(message, mail_from, addresses)
        return report

    def _start_batch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Send every delivery waiting now to the workers as one batch (on the loop)."""
        batch, self._waiting = self._waiting, []
        jobs = [(job, context) for job, context, _ in batch]
        try:
            done = self._pool.submit(loop, functools.partial(self._deliver_batch, jobs))
        except RuntimeError as exc:  # the workers are closed (shutdown)
            for _job, _context, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        self._batches_running += 1
        done.add_done_callback(functools.partial(self._batch_done, loop, batch))

    def _batch_done(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: list[tuple[_Request, contextvars.Context, asyncio.Future[DeliveryReport]]],
        done: asyncio.Future[list[DeliveryReport | BaseException]],
    ) -> None:
        if loop is self._batch_loop:
            self._batches_running -= 1
            if self._waiting and self._batches_running < MAX_BATCHES:
                self._start_batch(loop)
        if done.cancelled():
            outcomes: list[DeliveryReport | BaseException] = [
                asyncio.CancelledError() for _ in batch
            ]
        elif done.exception() is not None:
            error = done.exception()
            assert error is not None
            outcomes = [error for _ in batch]
        else:
            outcomes = done.result()
        for (_job, _context, future), outcome in zip(batch, outcomes, strict=True):
            if future.cancelled():
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    def _deliver_batch(
        self, jobs: list[tuple[_Request, contextvars.Context]]
    ) -> list[DeliveryReport | BaseException]:
        """:meth:`deliver_many_sync` on a worker; each job's logging in its caller's context."""
        return self.deliver_many_sync([job for job, _ in jobs], [context for _, context in jobs])

    def deliver_sync(
        self,
        message: bytes,
        recipients: Sequence[str],
        mail_from: str | None = None,
        *,
        all_or_nothing: bool = False,
    ) -> DeliveryReport:
        """Blocking delivery (for scripts and ``rmail deliver``); publishes no events.

        Every recipient is checked (:meth:`check_recipient`) before anything is stored.

        Args:
            message: the RFC 5322 message as received.
            recipients: envelope recipients (local addresses or aliases).
            mail_from: the envelope sender; when given, a ``Return-Path`` header is
                prepended (RFC 5321 §4.4: added at final delivery). ``""`` is the null sender.
            all_or_nothing: when any recipient fails its check, store nothing for anyone
                (the report then has failures and no deliveries or forwards). Without it each
                recipient gets its own outcome. Either way a write that fails after the
                checks (disk full, quota used up meanwhile) fails only its recipient.
        """
        outcome = self.deliver_many_sync(
            [_Request(message, list(recipients), mail_from, all_or_nothing)]
        )[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def deliver_many_sync(
        self,
        jobs: Sequence[_Request],
        contexts: Sequence[contextvars.Context] | None = None,
    ) -> list[DeliveryReport | BaseException]:
        """Deliver several independent messages (each as :meth:`deliver_sync` would), with
        one commit per folder for all of them (:meth:`Folder.append_each`).

        The quota of a mailbox is checked for each message with the bytes of the batch's
        earlier messages to it counted as used. A message's outcome is its report, or the
        exception it met (a bug, not a refusal: refusals are in the report).

        Args:
            jobs: the deliveries.
            contexts: per job, the ``contextvars`` context to log in (the caller's).
        """
        plans = [_Plan(job) for job in jobs]
        pending: dict[str, int] = {}  # mailbox -> bytes this batch will add to it
        # (address, folder) -> the plans whose message it gets, in order.
        by_folder: dict[tuple[str, str], list[_Plan]] = {}
        for index, plan in enumerate(plans):
            context = contexts[index] if contexts is not None else None
            try:
                if context is not None:
                    context.run(self._plan, plan, pending, by_folder)
                else:
                    self._plan(plan, pending, by_folder)
            except BaseException as exc:  # one job's bug is that job's outcome
                plan.error = exc
        for (address, folder_name), planned in by_folder.items():
            members = [m for m in planned if m.error is None]
            if not members:
                continue
            try:
                folder = self.store.mailbox(address).folder(folder_name, refresh=False)
                outcomes = folder.append_each([m.message for m in members])
            except RmailError as exc:
                outcomes = [exc for _ in members]
            except BaseException as exc:
                for member in members:
                    member.error = exc
                continue
            for member, outcome in zip(members, outcomes, strict=True):
                if isinstance(outcome, RmailError):
                    member.failed_targets[(address, folder_name)] = outcome
                else:
                    member.stored[(address, folder_name)] = (
                        Delivered(address, folder_name, outcome.uid),
                        outcome.size,
                    )
        results: list[DeliveryReport | BaseException] = []
        for index, plan in enumerate(plans):
            if plan.error is not None:
                results.append(plan.error)
                continue
            context = contexts[index] if contexts is not None else None
            report = context.run(plan.report) if context is not None else plan.report()
            results.append(report)
        return results

    def _plan(
        self,
        plan: _Plan,
        pending: dict[str, int],
        by_folder: dict[tuple[str, str], list[_Plan]],
    ) -> None:
        """Check one job's recipients and say which folders get its message."""
        job = plan.job
        message = job.message
        if job.mail_from is not None:
            message = (
                b"Return-Path: <" + job.mail_from.encode("utf-8", "replace") + b">\r\n" + message
            )
        plan.message = message
        size = len(message)
        report = plan.base
        checked: list[tuple[str, list[Recipient]]] = []
        for rcpt in job.recipients:
            try:
                checked.append((rcpt, self._check(rcpt, size, pending)[0]))
            except RmailError as exc:
                report.failed[rcpt] = exc
                logger.info("delivery refused rcpt=%s reason=%s", rcpt, exc)
        if job.all_or_nothing and report.failed:
            return
        counted: set[str] = set()  # mailboxes whose copy is counted in pending already
        keys: list[tuple[str, str]] = []
        for rcpt, targets in checked:
            rcpt_keys: list[tuple[str, str]] = []
            try:
                for target in targets:
                    if not target.local:
                        if target.address not in report.forward:
                            report.forward.append(target.address)
                        continue
                    mailbox = self.store.mailbox(target.address)
                    folder_name = (
                        _folder_for(mailbox.folder_names(), target.detail)
                        if target.detail
                        else INBOX
                    )
                    key = (target.address, folder_name)
                    if key not in keys:
                        if target.address in counted:
                            # A second copy in this mailbox: the check above was for one.
                            mailbox.check_quota(size + pending.get(target.address, 0))
                        else:
                            counted.add(target.address)
                        pending[target.address] = pending.get(target.address, 0) + size
                        keys.append(key)
                        by_folder.setdefault(key, []).append(plan)
                    rcpt_keys.append(key)
            except RmailError as exc:
                report.failed[rcpt] = exc
                logger.info("delivery failed rcpt=%s reason=%s", rcpt, exc)
                continue
            plan.rcpt_keys.append((rcpt, rcpt_keys))


class _Workers:
    """A fixed set of threads for blocking store work, awaited from the event loop.

    What ``run_in_executor`` on a ThreadPoolExecutor does, minus the
    ``concurrent.futures.Future`` in between (its lock, condition and chained callbacks
    cost the event loop about as much as the rest of a small delivery): a job carries the
    loop's own future, and the worker settles it with one ``call_soon_threadsafe``. Threads
    start on first use; :meth:`close` runs what is queued, then stops them (at interpreter
    exit too, as the executor's threads are joined then: work in progress is finished).
    """

    def __init__(self, count: int, name: str) -> None:
        self._count = count
        self._name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._guard = threading.Lock()
        self._closed = False

    def submit(self, loop: asyncio.AbstractEventLoop, call: Callable[[], T]) -> asyncio.Future[T]:
        """Queue ``call``; the returned future (of ``loop``) gets its result or exception.

        Raises:
            RuntimeError: after :meth:`close`.
        """
        future: asyncio.Future[T] = loop.create_future()
        with self._guard:
            if self._closed:
                raise RuntimeError("delivery workers are closed")
            if not self._threads:
                for number in range(self._count):
                    thread = threading.Thread(
                        target=self._work, name=f"{self._name}_{number}", daemon=True
                    )
                    thread.start()
                    self._threads.append(thread)
                atexit.register(self.close)
            self._jobs.put((loop, future, call))
        return future

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            loop, future, call = job
            if future.cancelled():  # given up before it started, as a pending executor job
                continue
            try:
                result = call()
            except BaseException as exc:  # everything goes to the awaiting task
                _settle_soon(loop, future, None, exc)
            else:
                _settle_soon(loop, future, result, None)

    def close(self) -> None:
        """Run the jobs queued so far, then stop and join the threads (idempotent)."""
        with self._guard:
            self._closed = True
            threads, self._threads = self._threads, []
            for _ in threads:
                self._jobs.put(None)
        if threads:
            atexit.unregister(self.close)
        for thread in threads:
            thread.join()


_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[[], Any]]


def _settle_soon(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Any],
    result: Any,
    error: BaseException | None,
) -> None:
    """From a worker thread: give ``future`` its outcome on its loop."""
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
        loop.call_soon_threadsafe(_settle, future, result, error)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _folder_for(folders: Sequence[str], detail: str | None) -> str:
    """``alice+news@`` goes to folder ``news`` when it exists (any case), else INBOX."""
    if not detail:
        return INBOX
    for name in folders:
        if name.lower() == detail.lower():
            return name
    return INBOX
