"""Local delivery on a real temporary store: events, de-duplication, per-recipient outcomes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from rmail.config import AuthConfig, Config, StoreConfig
from rmail.delivery import Delivered, Delivery, DeliveryReport, _Request
from rmail.errors import InvalidInput, NotFound, QuotaExceeded, TemporaryFailure
from rmail.events import Event, EventBus, MessageAdded
from rmail.store import Store

CHEAP = AuthConfig(argon2_time_cost=1, argon2_memory_kib=64)
MESSAGE = b"From: bob@remote.test\r\nSubject: hello\r\n\r\nhi\r\n"
ALICE = "alice@example.test"
BOB = "bob@example.test"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    config = Config(
        mail_root=str(tmp_path / "data"),
        domains=["example.test"],
        store=StoreConfig(fsync=False),
        auth=CHEAP,
    )
    store = Store(config)
    store.create_user(ALICE, "pw-a")
    store.create_user(BOB, "pw-b")
    return store


@pytest.fixture
def events() -> EventBus:
    return EventBus()


@pytest.fixture
async def delivery(store: Store, events: EventBus) -> AsyncIterator[Delivery]:
    delivery = Delivery(store, events, workers=2)
    yield delivery
    await asyncio.to_thread(delivery.close)
    store.close()


def _count(store: Store, address: str, folder: str = "INBOX") -> int:
    return len(store.mailbox(address).folder(folder).refresh())


def _drain(queue: asyncio.Queue[Event]) -> list[Event]:
    out = []
    while not queue.empty():
        out.append(queue.get_nowait())
    return out


async def test_message_added_is_published_once_the_file_is_on_disk(
    store: Store, events: EventBus, delivery: Delivery
) -> None:
    seen: list[tuple[Event, bool]] = []

    async def subscriber() -> None:
        with events.subscribe(ALICE) as sub:
            ready.set()
            event = await sub.get()
            # Checked the moment the event arrives, before the publisher goes on.
            assert isinstance(event, MessageAdded)
            folder = store.mailbox(event.address).folder(event.folder)
            on_disk = folder.message_path(folder.refresh().get(event.uid)).is_file()
            seen.append((event, on_disk))

    ready = asyncio.Event()
    task = asyncio.create_task(subscriber())
    await ready.wait()
    report = await delivery.deliver(MESSAGE, ["Alice@Example.test"], mail_from="bob@remote.test")
    await asyncio.wait_for(task, 5)

    assert report.ok
    assert report.delivered == {"Alice@Example.test": [Delivered(ALICE, "INBOX", 1)]}
    assert seen == [(MessageAdded(ALICE, "INBOX", 1), True)]
    stored = store.mailbox(ALICE).folder("INBOX").read(1)
    assert stored == b"Return-Path: <bob@remote.test>\r\n" + MESSAGE


async def test_events_go_only_to_the_recipients_subscribers(
    events: EventBus, delivery: Delivery
) -> None:
    with events.subscribe(ALICE) as alice, events.subscribe(BOB) as bob:
        await delivery.deliver(MESSAGE, [BOB])
        assert _drain(alice.queue) == []
        assert _drain(bob.queue) == [MessageAdded(BOB, "INBOX", 1)]


async def test_deliver_sync_publishes_nothing(events: EventBus, delivery: Delivery) -> None:
    with events.subscribe(ALICE) as sub:
        report = await asyncio.to_thread(delivery.deliver_sync, MESSAGE, [ALICE])
        assert report.ok
        assert _drain(sub.queue) == []


async def test_two_recipients_for_one_user_get_one_copy_and_one_event(
    store: Store, events: EventBus, delivery: Delivery
) -> None:
    store.accounts.add_alias("example.test", "team@example.test", ALICE)
    with events.subscribe(ALICE) as sub:
        report = await delivery.deliver(
            MESSAGE,
            [ALICE, "ALICE@example.test", "team@example.test", "alice+nofolder@example.test"],
        )
        assert report.ok
        copy = Delivered(ALICE, "INBOX", 1)
        assert report.delivered == {
            ALICE: [copy],
            "ALICE@example.test": [copy],
            "team@example.test": [copy],
            "alice+nofolder@example.test": [copy],
        }
        assert _count(store, ALICE) == 1
        # One stored message is one event: IDLE and webhooks would otherwise see it twice.
        assert _drain(sub.queue) == [MessageAdded(ALICE, "INBOX", 1)]


async def test_one_alias_to_two_users_gives_each_a_copy(store: Store, delivery: Delivery) -> None:
    store.accounts.add_alias("example.test", "all@example.test", f"{ALICE},{BOB}")
    report = await delivery.deliver(MESSAGE, ["all@example.test"])
    assert report.delivered == {
        "all@example.test": [Delivered(ALICE, "INBOX", 1), Delivered(BOB, "INBOX", 1)]
    }
    assert (_count(store, ALICE), _count(store, BOB)) == (1, 1)


async def test_plus_address_goes_to_an_existing_folder(store: Store, delivery: Delivery) -> None:
    store.mailbox(ALICE).create_folder("Lists")
    report = await delivery.deliver(MESSAGE, ["alice+lists@example.test"])
    assert report.delivered == {"alice+lists@example.test": [Delivered(ALICE, "Lists", 1)]}
    assert (_count(store, ALICE), _count(store, ALICE, "Lists")) == (0, 1)


async def test_one_recipient_over_quota_does_not_fail_the_other(
    store: Store, events: EventBus, delivery: Delivery
) -> None:
    store.accounts.set_user(BOB, quota_mb=1)
    big = b"Subject: big\r\n\r\n" + b"x" * (1536 * 1024) + b"\r\n"
    with events.subscribe(BOB) as bob_events:
        report = await delivery.deliver(big, [BOB, ALICE])
        assert not report.ok
        assert set(report.failed) == {BOB}
        assert isinstance(report.failed[BOB], QuotaExceeded)
        assert report.delivered == {ALICE: [Delivered(ALICE, "INBOX", 1)]}
        assert _drain(bob_events.queue) == []
    assert (_count(store, ALICE), _count(store, BOB)) == (1, 0)
    bob_dir = store.accounts.user_dir(BOB) / "mail"
    assert [p for sub in ("new", "cur", "tmp") for p in (bob_dir / sub).iterdir()] == []


async def test_unknown_and_invalid_recipients_fail_alone(store: Store, delivery: Delivery) -> None:
    report = await delivery.deliver(
        MESSAGE, ["nobody@example.test", "x@not-hosted.test", "not an address", ALICE]
    )
    assert isinstance(report.failed["nobody@example.test"], NotFound)
    assert isinstance(report.failed["x@not-hosted.test"], NotFound)
    assert isinstance(report.failed["not an address"], InvalidInput)
    assert list(report.delivered) == [ALICE]
    assert _count(store, ALICE) == 1


async def test_disabled_user_gets_no_mail(store: Store, delivery: Delivery) -> None:
    store.accounts.set_user(BOB, enabled=False)
    report = await delivery.deliver(MESSAGE, [BOB])
    assert set(report.failed) == {BOB}
    assert _count(store, BOB) == 0


async def test_alias_with_a_remote_target_is_reported_for_forwarding(
    store: Store, delivery: Delivery
) -> None:
    store.accounts.add_alias("example.test", "ext@example.test", f"carol@remote.test,{ALICE}")
    store.accounts.add_alias("example.test", "away@example.test", "carol@remote.test")
    report = await delivery.deliver(MESSAGE, ["ext@example.test"])
    assert report.ok
    assert report.forward == ["carol@remote.test"]
    assert report.delivered == {"ext@example.test": [Delivered(ALICE, "INBOX", 1)]}

    # Only remote: nothing stored, nothing failed.
    report = await delivery.deliver(MESSAGE, ["away@example.test"])
    assert report.ok
    assert report.forward == ["carol@remote.test"]
    assert report.delivered == {"away@example.test": []}
    assert _count(store, ALICE) == 1


async def test_a_remote_target_reached_twice_is_forwarded_once(
    store: Store, delivery: Delivery
) -> None:
    store.accounts.add_alias("example.test", "a@example.test", "carol@remote.test")
    store.accounts.add_alias("example.test", "b@example.test", "Carol@Remote.test")
    report = await delivery.deliver(MESSAGE, ["a@example.test", "b@example.test"])
    assert report.forward == ["carol@remote.test"]


async def test_concurrent_deliveries_get_distinct_uids(store: Store, delivery: Delivery) -> None:
    reports = await asyncio.gather(
        *(delivery.deliver(b"Subject: %d\r\n\r\nx\r\n" % i, [ALICE]) for i in range(20))
    )
    uids = sorted(r.delivered[ALICE][0].uid for r in reports)
    assert uids == list(range(1, 21))
    assert _count(store, ALICE) == 20


async def test_a_burst_of_deliveries_is_stored_exactly_once_in_few_batches(
    store: Store, delivery: Delivery
) -> None:
    """200 deliveries at once (some refused as a whole, some to two mailboxes) go to the
    workers in batches; every accepted message is in each of its mailboxes exactly once,
    and nothing of a refused one is stored."""
    batches: list[int] = []
    real = delivery.deliver_many_sync

    def counting(jobs: Any, contexts: Any = None) -> Any:
        batches.append(len(jobs))
        return real(jobs, contexts)

    delivery.deliver_many_sync = counting  # type: ignore[method-assign]  # count the trips

    def rcpts(i: int) -> list[str]:
        if i % 10 == 3:
            return [ALICE, "nobody@example.test"]  # refused, all or nothing
        return [ALICE, BOB] if i % 4 == 0 else [ALICE]

    reports = await asyncio.gather(
        *(
            delivery.deliver(b"Subject: n%d\r\n\r\nx\r\n" % i, rcpts(i), all_or_nothing=True)
            for i in range(200)
        )
    )
    assert sum(batches) == 200 and len(batches) < 100
    for i, report in enumerate(reports):
        assert report.ok == (i % 10 != 3)
    for address, wanted in (
        (ALICE, {i for i in range(200) if i % 10 != 3}),
        (BOB, {i for i in range(200) if i % 4 == 0 and i % 10 != 3}),
    ):
        folder = store.mailbox(address).folder("INBOX")
        subjects = [
            folder.read_message(meta).split(b"\r\n")[0] for meta in folder.refresh().messages()
        ]
        assert sorted(subjects) == sorted(b"Subject: n%d" % i for i in wanted)
        files = [p for sub in ("new", "cur", "tmp") for p in (folder.dir / sub).iterdir()]
        assert len(files) == len(wanted)


async def test_a_batch_counts_its_earlier_messages_against_the_quota(
    store: Store, delivery: Delivery
) -> None:
    store.accounts.set_user(BOB, quota_mb=1)
    big = b"Subject: big\r\n\r\n" + b"x" * (600 * 1024) + b"\r\n"
    first, second = await asyncio.to_thread(
        delivery.deliver_many_sync,
        [_Request(big, [BOB], None, False), _Request(big, [BOB], None, False)],
    )
    assert isinstance(first, DeliveryReport) and first.ok
    assert isinstance(second, DeliveryReport)
    assert isinstance(second.failed[BOB], QuotaExceeded)
    assert _count(store, BOB) == 1


async def test_a_failed_commit_fails_the_whole_batch_and_leaves_no_file(
    store: Store, delivery: Delivery, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = store.mailbox(ALICE).folder("INBOX").index

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise TemporaryFailure("journal write failed")

    monkeypatch.setattr(index, "add_many", broken)
    outcomes = await asyncio.to_thread(
        delivery.deliver_many_sync,
        [_Request(b"Subject: %d\r\n\r\nx\r\n" % i, [ALICE, BOB], None, False) for i in range(3)],
    )
    monkeypatch.undo()
    for outcome in outcomes:
        assert isinstance(outcome, DeliveryReport)
        assert isinstance(outcome.failed[ALICE], TemporaryFailure)
        assert [c.address for c in outcome.delivered[BOB]] == [BOB]  # another folder: stored
    inbox = store.mailbox(ALICE).folder("INBOX").dir
    assert [p for sub in ("new", "cur", "tmp") for p in (inbox / sub).iterdir()] == []
    assert (_count(store, ALICE), _count(store, BOB)) == (0, 3)
    report = await delivery.deliver(MESSAGE, [ALICE])
    assert report.delivered == {ALICE: [Delivered(ALICE, "INBOX", 1)]}


async def test_a_delivery_after_close_is_refused_not_left_waiting(
    store: Store, delivery: Delivery
) -> None:
    await delivery.deliver(MESSAGE, [ALICE])  # the workers run
    await asyncio.to_thread(delivery.close)
    with pytest.raises(RuntimeError):
        await asyncio.wait_for(delivery.deliver(MESSAGE, [ALICE]), 5)
    assert _count(store, ALICE) == 1
