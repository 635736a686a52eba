"""The in-process event bus: new mail, flag changes and expunges, as they happen.

Publishers (delivery, and the protocols after a store call) publish only after the change is
durable. Subscribers (IMAP IDLE, webhooks, the webmail's live updates) get an asyncio queue
per subscription. A slow subscriber never blocks a publisher: when its queue is full the
event is dropped for that subscriber, counted in ``dropped``, and the subscription is marked
``overflowed`` (an IMAP session then re-reads the folder state instead of trusting events).

``subscribe(address)`` gets one account's events; ``subscribe_all()`` gets every account's
(the webhook dispatcher), with the same bounded queue and the same drop-and-count rule.

All methods run on the event loop thread; from a worker thread use
``loop.call_soon_threadsafe(bus.publish, event)``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Final

__all__ = [
    "ALL_ACCOUNTS",
    "Event",
    "EventBus",
    "FlagsChanged",
    "MessageAdded",
    "MessagesExpunged",
    "Subscription",
]

logger = logging.getLogger(__name__)

# Enough for a burst of deliveries into one IDLEing mailbox; past it the subscriber resyncs.
QUEUE_SIZE: Final = 1000
# The subscription key of subscribe_all(); no account address can be "*" (it has no "@").
ALL_ACCOUNTS: Final = "*"


@dataclass(frozen=True, slots=True)
class MessageAdded:
    address: str
    folder: str
    uid: int


@dataclass(frozen=True, slots=True)
class FlagsChanged:
    address: str
    folder: str
    uid: int
    modseq: int


@dataclass(frozen=True, slots=True)
class MessagesExpunged:
    address: str
    folder: str
    uids: tuple[int, ...]


Event = MessageAdded | FlagsChanged | MessagesExpunged


class Subscription:
    """Events for one account (or every account: ``address == ALL_ACCOUNTS``).

    Iterate with ``async for`` or call :meth:`get`. ``dropped`` counts the events lost
    because the queue was full; ``overflowed`` says that it happened at least once (a
    subscriber may reset it after resyncing).
    """

    def __init__(self, bus: EventBus, address: str, queue_size: int = QUEUE_SIZE) -> None:
        self._bus = bus
        self.address = address
        self.queue: asyncio.Queue[Event] = asyncio.Queue(queue_size)
        self.overflowed = False
        self.dropped = 0

    async def get(self) -> Event:
        return await self.queue.get()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        while True:
            yield await self.queue.get()

    def close(self) -> None:
        self._bus._remove(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventBus:
    """Fan-out of store events to the subscriptions of the account they concern, and to
    the subscriptions of every account."""

    def __init__(self) -> None:
        self._subs: dict[str, set[Subscription]] = {}

    def subscribe(self, address: str) -> Subscription:
        sub = Subscription(self, address.lower())
        self._subs.setdefault(sub.address, set()).add(sub)
        return sub

    def subscribe_all(self, queue_size: int = QUEUE_SIZE) -> Subscription:
        """A subscription to the events of every account (``queue_size`` bounds its queue)."""
        sub = Subscription(self, ALL_ACCOUNTS, queue_size)
        self._subs.setdefault(ALL_ACCOUNTS, set()).add(sub)
        return sub

    def _remove(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.address)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.address]

    def publish(self, event: Event) -> None:
        """Queue ``event`` for its account's subscribers and the all-account ones; never
        blocks and never raises for a full queue."""
        for key in (event.address.lower(), ALL_ACCOUNTS):
            for sub in self._subs.get(key, ()):
                try:
                    sub.queue.put_nowait(event)
                except asyncio.QueueFull:
                    sub.dropped += 1
                    if not sub.overflowed:
                        logger.warning(
                            "event queue full user=%s dropped=%d; subscriber must resync",
                            sub.address,
                            sub.dropped,
                        )
                    sub.overflowed = True
