"""The in-process event bus: new mail, flag changes and expunges, as they happen.

Publishers (delivery, and the protocols after a store call) publish only after the change is
durable. Subscribers (IMAP IDLE, webhooks, the webmail's live updates) get an asyncio queue
per subscription. A slow subscriber never blocks a publisher: when its queue is full it is
marked ``overflowed`` and should re-read the folder state instead of trusting the events.

All methods run on the event loop thread; from a worker thread use
``loop.call_soon_threadsafe(bus.publish, event)``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Final

__all__ = ["Event", "EventBus", "FlagsChanged", "MessageAdded", "MessagesExpunged", "Subscription"]

logger = logging.getLogger(__name__)

# Enough for a burst of deliveries into one IDLEing mailbox; past it the subscriber resyncs.
QUEUE_SIZE: Final = 1000


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
    """Events for one account; iterate with ``async for`` or call :meth:`get`."""

    def __init__(self, bus: EventBus, address: str) -> None:
        self._bus = bus
        self.address = address
        self.queue: asyncio.Queue[Event] = asyncio.Queue(QUEUE_SIZE)
        self.overflowed = False

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
    """Fan-out of store events to the subscriptions of the account they concern."""

    def __init__(self) -> None:
        self._subs: dict[str, set[Subscription]] = {}

    def subscribe(self, address: str) -> Subscription:
        sub = Subscription(self, address.lower())
        self._subs.setdefault(sub.address, set()).add(sub)
        return sub

    def _remove(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.address)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.address]

    def publish(self, event: Event) -> None:
        for sub in self._subs.get(event.address.lower(), ()):
            try:
                sub.queue.put_nowait(event)
            except asyncio.QueueFull:
                if not sub.overflowed:
                    logger.warning("event queue full user=%s; subscriber must resync", sub.address)
                sub.overflowed = True
