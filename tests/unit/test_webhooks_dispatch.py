"""Pure parts of webhook sending: the signature, the backoff, the address policy, and the
bus's all-account subscription that feeds the dispatcher."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from typing import Any

import pytest

from rmail.config import Config
from rmail.errors import InvalidInput
from rmail.events import Event, EventBus, FlagsChanged, MessageAdded, MessagesExpunged
from rmail.store.webhooks import Webhook
from rmail.webhooks import (
    WebhookDispatcher,
    check_target,
    event_name,
    is_public_address,
    retry_delay,
    sign,
)


def test_the_signature_is_hmac_sha256_of_the_body_keyed_with_the_secret_text() -> None:
    secret = "ab" * 32
    body = b'{"event":"messageNew"}'
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert sign(secret, body) == f"sha256={expected}"


def test_retries_double_from_the_initial_delay() -> None:
    assert [retry_delay(n, 1.0) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert retry_delay(2, 0.05) == pytest.approx(0.1)


def test_event_names() -> None:
    assert event_name(MessageAdded("a@b.test", "INBOX", 1)) == "messageNew"
    assert event_name(FlagsChanged("a@b.test", "INBOX", 1, 2)) == "flagsChanged"
    assert event_name(MessagesExpunged("a@b.test", "INBOX", (1,))) == "messageDeleted"


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.216.34", True),
        ("2606:2800:220:1::1", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("192.168.0.1", False),
        ("169.254.169.254", False),
        ("::1", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("::ffff:127.0.0.1", False),
        ("0.0.0.0", False),
    ],
)
def test_public_addresses(address: str, public: bool) -> None:
    assert is_public_address(address) is public


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8080/", "http://localhost/", "http://[::1]/", "http://10.0.0.1/"],
)
def test_visibly_private_targets_are_refused_unless_allowed(url: str) -> None:
    with pytest.raises(InvalidInput):
        check_target(url, allow_private=False)
    check_target(url, allow_private=True)


def test_names_are_left_to_connect_time() -> None:
    check_target("https://hooks.example.org/x", allow_private=False)
    check_target("https://93.184.216.34/x", allow_private=False)


async def test_subscribe_all_gets_every_accounts_events() -> None:
    bus = EventBus()
    with bus.subscribe_all() as every, bus.subscribe("alice@example.test") as alice:
        bus.publish(MessageAdded("alice@example.test", "INBOX", 1))
        bus.publish(MessageAdded("bob@example.test", "INBOX", 1))
        assert [every.queue.get_nowait().address for _ in range(2)] == [
            "alice@example.test",
            "bob@example.test",
        ]
        assert alice.queue.qsize() == 1


async def test_a_full_subscription_drops_and_counts_without_blocking_the_publisher() -> None:
    bus = EventBus()
    with bus.subscribe_all(queue_size=2) as every, bus.subscribe("a@b.test") as one:
        for uid in range(1, 6):
            bus.publish(MessageAdded("a@b.test", "INBOX", uid))
        assert every.queue.qsize() == 2 and every.dropped == 3 and every.overflowed
        assert one.queue.qsize() == 5 and one.dropped == 0


async def test_a_closed_all_subscription_gets_nothing() -> None:
    bus = EventBus()
    every = bus.subscribe_all()
    every.close()
    bus.publish(MessageAdded("a@b.test", "INBOX", 1))
    assert every.queue.empty()


async def test_names_resolving_only_to_private_addresses_are_not_connected_to() -> None:
    from rmail.webhooks import _PublicOnlyResolver

    refusing = _PublicOnlyResolver(lambda: False)
    allowing = _PublicOnlyResolver(lambda: True)
    try:
        with pytest.raises(OSError, match="no public address"):
            await refusing.resolve("localhost", 80)
        assert [r["host"] for r in await allowing.resolve("localhost", 80)] == ["127.0.0.1"]
    finally:
        await refusing.close()
        await allowing.close()


class _Hooks:
    """The store's webhooks: one hook for every account but ``broken@b.test``; from memory,
    ``quiet@b.test`` is known to have none."""

    def list(self, address: str) -> list[Webhook]:
        if address == "broken@b.test":
            raise RuntimeError("a bug while reading the hooks")
        return [Webhook("h1", "https://hooks.example/x", ("messageNew",), "00" * 32, "")]

    def peek(self, address: str, max_age: float) -> tuple[Webhook, ...] | None:
        return () if address == "quiet@b.test" else None


class _Store:
    webhooks = _Hooks()


def _dispatcher(bus: EventBus) -> WebhookDispatcher:
    store: Any = _Store()
    return WebhookDispatcher(Config(), store, bus)


def _count_trips(
    dispatcher: WebhookDispatcher, bus: EventBus
) -> tuple[list[list[Event]], asyncio.Event]:
    """Make the dispatcher record each batch it would prepare in a thread, instead."""
    batches: list[list[Event]] = []
    seen = asyncio.Event()

    def prepare_many(events: list[Event]) -> list[Any]:
        batches.append(events)
        seen.set()
        return []

    dispatcher._prepare_many = prepare_many  # type: ignore[method-assign]  # count the trips
    dispatcher._sub = bus.subscribe_all()
    return batches, seen


async def _run_until(dispatcher: WebhookDispatcher, seen: asyncio.Event) -> None:
    task = asyncio.create_task(dispatcher._run())
    try:
        await asyncio.wait_for(seen.wait(), 5)
    finally:
        task.cancel()


async def test_events_waiting_together_are_prepared_in_one_thread_trip() -> None:
    bus = EventBus()
    dispatcher = _dispatcher(bus)
    batches, seen = _count_trips(dispatcher, bus)
    for uid in range(1, 6):
        bus.publish(MessageAdded("a@b.test", "INBOX", uid))
    await _run_until(dispatcher, seen)
    assert [[e.uid for e in batch if isinstance(e, MessageAdded)] for batch in batches] == [
        [1, 2, 3, 4, 5]
    ]


def test_an_event_that_fails_to_prepare_does_not_cost_the_others_theirs() -> None:
    dispatcher = _dispatcher(EventBus())
    out = dispatcher._prepare_many(
        [
            MessageAdded("a@b.test", "INBOX", 1),
            MessageAdded("broken@b.test", "INBOX", 1),
            MessageAdded("c@b.test", "INBOX", 2),
        ]
    )
    assert [(d.account, d.event) for d in out] == [
        ("a@b.test", "messageNew"),
        ("c@b.test", "messageNew"),
    ]


async def test_events_of_users_known_to_have_no_hooks_make_no_thread_trip() -> None:
    bus = EventBus()
    dispatcher = _dispatcher(bus)
    batches, seen = _count_trips(dispatcher, bus)
    for uid in range(1, 4):
        bus.publish(MessageAdded("quiet@b.test", "INBOX", uid))
    bus.publish(MessageAdded("a@b.test", "INBOX", 9))
    await _run_until(dispatcher, seen)
    assert [[e.address for e in batch] for batch in batches] == [["a@b.test"]]
