"""The webhook dispatcher: every account's events, POSTed and signed to its user's URLs.

It subscribes to the bus for all accounts (:meth:`EventBus.subscribe_all`), looks up the
user's hooks in the store (:mod:`rmail.store.webhooks`, cached and revalidated by ``stat``)
and sends each hook that wants the event one JSON POST (see ``docs/api.md``, "Webhooks").

Rules:

- Delivery, IMAP and the API are never slowed: they publish without waiting, and the bus
  queue of the dispatcher is bounded (``QUEUE_SIZE``); when it is full, events are dropped
  and counted (``Subscription.dropped``, logged as a warning).
- Memory is bounded: at most ``MAX_PENDING`` deliveries (one event for one hook, retries
  included) are alive at once; past that the dispatcher stops taking events from its queue,
  which then fills and drops. At most ``MAX_CONCURRENT`` POSTs are in flight.
- A 2xx answer ends a delivery. Any other status, a timeout (``exchange_api.webhook_timeout``)
  or a connection error is retried after ``exchange_api.webhook_retry_initial_ms``, doubling,
  up to ``exchange_api.webhook_attempts`` tries. Redirects are not followed. Retries live
  in memory only: a restart (or shutdown) drops them.
- Unless ``exchange_api.webhook_allow_private`` is set, a hook reaches only public addresses:
  names are checked after resolution, at connect time (so DNS rebinding does not help), and
  IP literals before connecting.
- Hook URLs can hold credentials, so logs name the hook id and host, never the URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from rmail import __version__
from rmail.config import Config
from rmail.errors import InvalidInput, NotFound
from rmail.events import Event, EventBus, FlagsChanged, MessageAdded, Subscription
from rmail.store import Store
from rmail.store.accounts import REVALIDATE_AFTER
from rmail.store.webhooks import EventName, Webhook
from rmail.tasks import stop_tasks

__all__ = [
    "SIGNATURE_HEADER",
    "WebhookDispatcher",
    "check_target",
    "event_name",
    "is_public_address",
    "retry_delay",
    "sign",
]

logger = logging.getLogger(__name__)

# Events waiting for the dispatcher (about 200 bytes each): a burst of deliveries while the
# hooks are slow fits; past it the bus drops and counts.
QUEUE_SIZE: Final = 10_000
# Deliveries alive at once, waiting retries included (each holds one JSON body).
MAX_PENDING: Final = 1000
# POSTs in flight at once, over all hooks.
MAX_CONCURRENT: Final = 16
# Events prepared (hooks read, payloads built) per thread trip, at most.
PREPARE_BATCH: Final = 100
# Seconds a user's hook list, once read, is trusted without reading it again, to skip the
# events nobody wants (as local delivery trusts account records: a hook added by another
# process in the last 0.1 s is as if added just after the event).
HOOKS_MAX_AGE: Final = REVALIDATE_AFTER
# Seconds POSTs in flight get at shutdown; deliveries waiting to retry are dropped at once.
STOP_GRACE: Final = 2.0
SIGNATURE_HEADER: Final = "X-Rmail-Signature"
_USER_AGENT: Final = f"rmail-webhooks/{__version__}"


def event_name(event: Event) -> EventName:
    """The webhook name of a bus event."""
    if isinstance(event, MessageAdded):
        return "messageNew"
    if isinstance(event, FlagsChanged):
        return "flagsChanged"
    return "messageDeleted"


def sign(secret: str, body: bytes) -> str:
    """The ``X-Rmail-Signature`` value: ``sha256=`` + hex HMAC-SHA256 of ``body``, keyed
    with the secret's characters as UTF-8 (the 64 hex characters, not the bytes they spell)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def retry_delay(failed_attempts: int, initial: float) -> float:
    """Seconds to wait after the ``failed_attempts``-th failure (1, 2, ...): doubling."""
    return initial * float(2 ** max(0, min(failed_attempts - 1, 30)))


def is_public_address(address: str) -> bool:
    """Whether an IP address is globally routable (not loopback, private, link-local...)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def check_target(url: str, allow_private: bool) -> None:
    """Refuse a URL whose host is visibly not public: ``localhost`` or a non-public IP
    literal (names are checked again at each connection, after resolution).

    Raises:
        InvalidInput: the host is not public and ``allow_private`` is off.
    """
    if allow_private:
        return
    host = (urllib.parse.urlsplit(url).hostname or "").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        raise InvalidInput("url must not point to this server (localhost)")
    try:
        public = is_public_address(host)
    except ValueError:
        return  # a name: resolved and checked when connecting
    if not public:
        raise InvalidInput("url must not point to a loopback, private or link-local address")


class _PublicOnlyResolver(AbstractResolver):
    """Resolves with aiohttp's threaded resolver, then keeps only public addresses (unless
    private ones are allowed). aiohttp connects only to what a resolver returns."""

    def __init__(self, allow_private: Callable[[], bool]) -> None:
        self._inner = aiohttp.ThreadedResolver()
        self._allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if self._allow_private():
            return results
        public = [r for r in results if is_public_address(r["host"])]
        if not public:
            raise OSError(f"{host} resolves to no public address")
        return public

    async def close(self) -> None:
        await self._inner.close()


@dataclass(frozen=True, slots=True)
class _Delivery:
    hook: Webhook
    account: str
    event: EventName
    id: str
    body: bytes


class WebhookDispatcher:
    """Owns the webhook subscription, HTTP session and deliveries; started and stopped by
    the server."""

    def __init__(self, config: Config, store: Store, events: EventBus) -> None:
        self.config = config
        self.store = store
        self.events = events
        self._sub: Subscription | None = None
        self._session: aiohttp.ClientSession | None = None
        self._resolver: _PublicOnlyResolver | None = None
        self._main: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._pending = asyncio.Semaphore(MAX_PENDING)
        self._slots = asyncio.Semaphore(MAX_CONCURRENT)
        self._stopping = asyncio.Event()
        self._dropped_reported = 0

    def apply(self, config: Config) -> None:
        """SIGHUP: new attempts, delays, timeout and address policy apply to the next POST."""
        self.config = config

    def start(self) -> None:
        self._sub = self.events.subscribe_all(QUEUE_SIZE)
        self._resolver = _PublicOnlyResolver(lambda: self.config.exchange_api.webhook_allow_private)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(resolver=self._resolver, limit=MAX_CONCURRENT),
            cookie_jar=aiohttp.DummyCookieJar(),
            headers={"User-Agent": _USER_AGENT},
        )
        self._main = asyncio.get_running_loop().create_task(self._run(), name="webhooks")

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """Stop taking events; POSTs in flight get ``grace`` seconds; waiting retries end."""
        self._stopping.set()
        if self._sub is not None:
            self._sub.close()
        main, self._main = self._main, None
        await stop_tasks(main, self._tasks, grace)
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._resolver is not None:
            await self._resolver.close()
            self._resolver = None

    # -- taking events -----------------------------------------------------------------------

    async def _run(self) -> None:
        assert self._sub is not None
        sub = self._sub
        while True:
            # Every event waiting now is prepared in one thread trip: under a burst of mail
            # that is one hop per batch, not one per message.
            events = [await sub.get()]
            while len(events) < PREPARE_BATCH and not sub.queue.empty():
                events.append(sub.queue.get_nowait())
            # Users known (from a read less than HOOKS_MAX_AGE ago) to have no hook for
            # the event need no thread trip at all: the usual case, mail for users
            # without webhooks.
            events = [e for e in events if not self._surely_unwanted(e)]
            deliveries = await asyncio.to_thread(self._prepare_many, events) if events else []
            for delivery in deliveries:
                await self._pending.acquire()
                task = asyncio.get_running_loop().create_task(self._deliver(delivery))
                self._tasks.add(task)
                task.add_done_callback(self._finished)
            if sub.dropped != self._dropped_reported and sub.queue.empty():
                logger.warning(
                    "webhooks: events dropped because the queue was full total=%d", sub.dropped
                )
                self._dropped_reported = sub.dropped
                sub.overflowed = False

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._pending.release()

    def _surely_unwanted(self, event: Event) -> bool:
        """Whether no hook of the user wants ``event``, by what the store remembers."""
        hooks = self.store.webhooks.peek(event.address, HOOKS_MAX_AGE)
        if hooks is None:
            return False
        name = event_name(event)
        return not any(h.wants(name) for h in hooks)

    def _prepare_many(self, events: list[Event]) -> list[_Delivery]:
        """:meth:`_prepare` of each event, in order; an event that fails is logged and skipped."""
        out: list[_Delivery] = []
        for event in events:
            try:
                out.extend(self._prepare(event))
            except Exception:  # one bad event must not stop the dispatcher
                logger.exception("webhooks: preparing an event failed user=%s", event.address)
        return out

    def _prepare(self, event: Event) -> list[_Delivery]:
        """The deliveries an event makes (blocking: reads the hooks and, for flags, the index)."""
        name = event_name(event)
        try:
            hooks = [h for h in self.store.webhooks.list(event.address) if h.wants(name)]
        except NotFound:
            return []  # the user was deleted since
        except InvalidInput as exc:
            logger.warning("webhooks: hooks unreadable user=%s: %s", event.address, exc)
            return []
        if not hooks:
            return []
        payload: dict[str, Any] = {"event": name, "account": event.address, "folder": event.folder}
        if isinstance(event, FlagsChanged | MessageAdded):
            payload["uid"] = event.uid
        else:
            payload["uids"] = list(event.uids)
        if isinstance(event, FlagsChanged):
            try:
                folder = self.store.mailbox(event.address).folder(event.folder)
                payload["flags"] = list(folder.index.get(event.uid).flags)
            except NotFound:
                # Expunged (or the folder deleted) since: the deletion has its own event.
                logger.debug("webhooks: flags of a message gone user=%s", event.address)
                return []
        payload["timestamp"] = datetime.now(UTC).isoformat(timespec="milliseconds")
        out = []
        for hook in hooks:
            delivery_id = str(uuid.uuid4())
            body = json.dumps({**payload, "id": delivery_id}, separators=(",", ":")).encode()
            out.append(_Delivery(hook, event.address, name, delivery_id, body))
        return out

    # -- sending -----------------------------------------------------------------------------

    async def _deliver(self, delivery: _Delivery) -> None:
        hook = delivery.hook
        host = urllib.parse.urlsplit(hook.url).hostname
        fields = (hook.id, delivery.account, host, delivery.event, delivery.id)
        try:
            check_target(hook.url, self.config.exchange_api.webhook_allow_private)
        except InvalidInput as exc:
            logger.warning(
                "webhook refused hook=%s user=%s host=%s event=%s delivery=%s: %s", *fields, exc
            )
            return
        attempt = 0
        while True:
            attempt += 1
            failure = await self._attempt(delivery, attempt)
            if failure is None:
                logger.info(
                    "webhook delivered hook=%s user=%s host=%s event=%s delivery=%s attempt=%d",
                    *fields,
                    attempt,
                )
                return
            cfg = self.config.exchange_api
            if attempt >= cfg.webhook_attempts or self._stopping.is_set():
                logger.warning(
                    "webhook failed, giving up hook=%s user=%s host=%s event=%s delivery=%s "
                    "attempts=%d error=%s",
                    *fields,
                    attempt,
                    failure,
                )
                return
            delay = retry_delay(attempt, cfg.webhook_retry_initial_ms / 1000)
            logger.warning(
                "webhook failed, retrying hook=%s user=%s host=%s event=%s delivery=%s "
                "attempt=%d error=%s retry_in=%.3fs",
                *fields,
                attempt,
                failure,
                delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
                logger.warning("webhook retry dropped at shutdown delivery=%s", delivery.id)
                return

    async def _attempt(self, delivery: _Delivery, attempt: int) -> str | None:
        """One POST; None when the receiver answered 2xx, else what went wrong."""
        session = self._session
        assert session is not None
        headers = {
            "Content-Type": "application/json",
            "X-Rmail-Event": delivery.event,
            "X-Rmail-Delivery": delivery.id,
            "X-Rmail-Attempt": str(attempt),
            SIGNATURE_HEADER: sign(delivery.hook.secret, delivery.body),
        }
        timeout = aiohttp.ClientTimeout(total=self.config.exchange_api.webhook_timeout)
        async with self._slots:
            try:
                async with session.post(
                    delivery.hook.url,
                    data=delivery.body,
                    headers=headers,
                    timeout=timeout,
                    allow_redirects=False,
                ) as response:
                    status = response.status
            except TimeoutError:
                return "timeout"
            except (aiohttp.ClientError, OSError) as exc:
                return f"{type(exc).__name__}: {exc}"
        return None if 200 <= status < 300 else f"HTTP {status}"
