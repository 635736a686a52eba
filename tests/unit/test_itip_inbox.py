"""Incoming iTIP on a real store: where an invitation lands (default calendar and
scheduling Inbox, RFC 6638 §4), what a repeated message does, and the Inbox's bound."""

from __future__ import annotations

from email.message import EmailMessage
from pathlib import Path

import icalendar
import pytest

from rmail import scheduling as scheduling_mod
from rmail.scheduling import Scheduling
from rmail.store import Store

BOB = "bob@example.test"
DAVE = "dave@remote.test"


def _mail(uid: str, *, sequence: int = 0, method: str = "REQUEST") -> bytes:
    body = "\r\n".join(
        [
            "BEGIN:VCALENDAR",
            "VERSION:2.0",
            "PRODID:-//remote//EN",
            f"METHOD:{method}",
            "BEGIN:VEVENT",
            f"UID:{uid}",
            "DTSTAMP:20260101T000000Z",
            "DTSTART:20300201T090000Z",
            "DTEND:20300201T100000Z",
            "SUMMARY:Remote review",
            f"SEQUENCE:{sequence}",
            f"ORGANIZER:mailto:{DAVE}",
            f"ATTENDEE;PARTSTAT=NEEDS-ACTION;SCHEDULE-STATUS=1.1:mailto:{BOB}",
            "END:VEVENT",
            "END:VCALENDAR",
            "",
        ]
    )
    message = EmailMessage()
    message["From"] = DAVE
    message["To"] = BOB
    message["Subject"] = "Invitation"
    message.set_content("invitation\n")
    message.add_alternative(body, subtype="calendar", params={"method": method})
    return message.as_bytes()


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store.open(tmp_path, fsync=False)
    store.create_user(BOB, "bob-password-1")
    return store


def _inbox_messages(store: Store) -> list[bytes]:
    inbox = store.schedule_inbox(BOB)
    return [inbox.read(m.name)[0] for m in sorted(inbox.objects(), key=lambda m: m.name)]


def test_an_invitation_lands_in_the_default_calendar_and_the_inbox(store: Store) -> None:
    Scheduling(store, None, "mail.example.test").receive(_mail("in-1"), DAVE, [BOB])
    calendars = store.dav(BOB, "calendars")
    assert calendars.names() == ["default"]  # made on the way; no schedule-inbox calendar
    meta = calendars.collection("default").by_uid("in-1")
    assert meta is not None and meta.schedule_tag is not None
    stored = icalendar.Calendar.from_ical(calendars.collection("default").read(meta.name)[0])
    assert "METHOD" not in stored
    (message,) = _inbox_messages(store)
    assert b"METHOD:REQUEST" in message and b"UID:in-1" in message


def test_the_same_message_twice_adds_nothing(store: Store) -> None:
    scheduling = Scheduling(store, None, "mail.example.test")
    scheduling.receive(_mail("in-2"), DAVE, [BOB])
    scheduling.receive(_mail("in-2"), DAVE, [BOB])
    assert len(_inbox_messages(store)) == 1
    scheduling.receive(_mail("in-2", method="CANCEL"), DAVE, [BOB])
    scheduling.receive(_mail("in-2", method="CANCEL"), DAVE, [BOB])
    assert [b"METHOD:CANCEL" in m for m in _inbox_messages(store)] == [False, True]


def test_the_inbox_keeps_the_newest_messages(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scheduling_mod, "INBOX_MAX", 2)
    scheduling = Scheduling(store, None, "mail.example.test")
    for number in range(4):
        scheduling.receive(_mail("in-3", sequence=number), DAVE, [BOB])
    kept = _inbox_messages(store)
    assert [b"SEQUENCE:2" in kept[0], b"SEQUENCE:3" in kept[1]] == [True, True]
