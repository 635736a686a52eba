"""What the organizer's and attendee's changes send (iTIP planning), on a real store."""

from __future__ import annotations

from pathlib import Path

import pytest

from rmail.scheduling import Scheduling
from rmail.store import Store

ALICE = "alice@example.test"
BOB = "bob@example.test"
CAROL = "carol@remote.test"


def _event(*attendees: tuple[str, str], summary: str = "Planning", sequence: int = 0) -> bytes:
    lines = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        "PRODID:-//test//EN",
        "BEGIN:VEVENT",
        "UID:plan-1",
        "DTSTAMP:20260101T000000Z",
        "DTSTART:20300105T100000Z",
        "DTEND:20300105T110000Z",
        f"SUMMARY:{summary}",
        f"SEQUENCE:{sequence}",
        f"ORGANIZER:mailto:{ALICE}",
        *[f"ATTENDEE;PARTSTAT={status}:mailto:{who}" for who, status in attendees],
        "END:VEVENT",
        "END:VCALENDAR",
        "",
    ]
    return "\r\n".join(lines).encode()


@pytest.fixture
def scheduling(tmp_path: Path) -> Scheduling:
    return Scheduling(Store.open(tmp_path, fsync=False), None, "mail.example.test")


def test_new_event_invites_every_attendee_but_the_organizer(scheduling: Scheduling) -> None:
    (itip,) = scheduling.plan_put(ALICE, None, _event((ALICE, "ACCEPTED"), (BOB, "NEEDS-ACTION")))
    assert (itip.method, itip.recipients) == ("REQUEST", (BOB,))
    assert b'method="REQUEST"' in itip.message and b"text/plain" in itip.message


def test_unchanged_or_cosmetic_save_sends_nothing(scheduling: Scheduling) -> None:
    event = _event((BOB, "NEEDS-ACTION"))
    assert scheduling.plan_put(ALICE, event, event) == []
    answered = _event((BOB, "ACCEPTED"))  # the organizer's client recording Bob's answer
    assert scheduling.plan_put(ALICE, event, answered) == []


def test_a_changed_summary_invites_again(scheduling: Scheduling) -> None:
    old = _event((BOB, "NEEDS-ACTION"))
    (itip,) = scheduling.plan_put(ALICE, old, _event((BOB, "NEEDS-ACTION"), summary="Moved"))
    assert itip.method == "REQUEST"


def test_removing_an_attendee_cancels_for_them(scheduling: Scheduling) -> None:
    old = _event((BOB, "NEEDS-ACTION"), (CAROL, "NEEDS-ACTION"))
    new = _event((BOB, "NEEDS-ACTION"))
    methods = {(i.method, i.recipients) for i in scheduling.plan_put(ALICE, old, new)}
    assert ("CANCEL", (CAROL,)) in methods


def test_deleting_cancels_for_all(scheduling: Scheduling) -> None:
    (itip,) = scheduling.plan_delete(ALICE, _event((BOB, "NEEDS-ACTION"), (CAROL, "ACCEPTED")))
    assert (itip.method, itip.recipients) == ("CANCEL", (BOB, CAROL))
    assert b"STATUS:CANCELLED" in itip.message and b"SEQUENCE:1" in itip.message


def test_attendee_answer_replies_to_the_organizer(scheduling: Scheduling) -> None:
    old = _event((BOB, "NEEDS-ACTION"), (CAROL, "NEEDS-ACTION"))
    (itip,) = scheduling.plan_put(BOB, old, _event((BOB, "ACCEPTED"), (CAROL, "NEEDS-ACTION")))
    assert (itip.method, itip.recipients) == ("REPLY", (ALICE,))
    assert (
        b"PARTSTAT=ACCEPTED" in itip.message
        and CAROL.encode() not in itip.message.split(b"BEGIN:VCALENDAR")[1]
    )
    assert scheduling.plan_put(BOB, old, old) == []


def test_events_without_organizer_or_attendees_send_nothing(scheduling: Scheduling) -> None:
    plain = _event().replace(f"ORGANIZER:mailto:{ALICE}\r\n".encode(), b"")
    assert scheduling.plan_put(ALICE, None, plain) == []
    assert scheduling.plan_put(ALICE, None, _event()) == []
