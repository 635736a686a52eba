"""Calendar scheduling by email (iMIP) and reminders against a running server: the caldav
library saves events, mail arrives through SMTP, and the store is read to see the outcome."""

from __future__ import annotations

import datetime
import email
import email.policy
import smtplib
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import caldav
import icalendar
import pytest
from api_helpers import ApiServer, start_api_server
from conftest import RunningServer
from smtp_helpers import messages, wait_until

from rmail.store import Store
from rmail.store.dav import Collection
from rmail.store.queue import Queue

ALICE = ("alice@example.test", "alice-pw")
BOB = ("bob@example.test", "bob-pw")
TIMEOUT = 20.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    users = {ALICE[0]: (ALICE[1], False), BOB[0]: (BOB[1], False)}
    # Mail for remote.test goes to a closed port: it stays in the queue, retried later.
    with start_api_server(
        tmp_path_factory.mktemp("imip"),
        users,
        relay={"routes": {"remote.test": "127.0.0.1:9"}},
    ) as running:
        yield running


def _calendar(server: ApiServer, who: tuple[str, str], name: str) -> Any:
    client = caldav.DAVClient(url=server.base + "/", username=who[0], password=who[1])
    principal = client.principal()
    for calendar in principal.calendars():
        if str(calendar.url).rstrip("/").endswith("/" + name):
            return calendar
    raise AssertionError(f"no calendar {name}")


def _meeting(uid: str, attendees: list[tuple[str, str]], *, sequence: int = 0) -> str:
    lines = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        "PRODID:-//test//EN",
        "BEGIN:VEVENT",
        f"UID:{uid}",
        "DTSTAMP:20260101T000000Z",
        "DTSTART:20300105T100000Z",
        "DTEND:20300105T110000Z",
        "SUMMARY:Planning",
        f"SEQUENCE:{sequence}",
        f"ORGANIZER:mailto:{ALICE[0]}",
        f"ATTENDEE;PARTSTAT=ACCEPTED:mailto:{ALICE[0]}",
    ]
    lines += [f"ATTENDEE;PARTSTAT={status};RSVP=TRUE:mailto:{a}" for a, status in attendees]
    lines += ["END:VEVENT", "END:VCALENDAR", ""]
    return "\r\n".join(lines)


def _copy(store: Store, address: str, uid: str, calendar: str = "default") -> Any | None:
    try:
        collection: Collection = store.dav(address, "calendars").collection(calendar)
    except Exception:
        return None
    meta = collection.by_uid(uid)
    if meta is None:
        return None
    data, _ = collection.read(meta.name)
    return icalendar.Calendar.from_ical(data)


def _event(calendar: Any) -> Any:
    return next(c for c in calendar.walk("VEVENT"))


def _partstat(calendar: Any, address: str) -> str:
    attendees = _event(calendar).get("ATTENDEE")
    for attendee in attendees if isinstance(attendees, list) else [attendees]:
        if str(attendee).lower() == f"mailto:{address}":
            return str(attendee.params.get("PARTSTAT", ""))
    raise AssertionError(f"{address} is no attendee")


def _invitations(store: Store, address: str, uid: str, method: str) -> list[Any]:
    out = []
    for raw in messages(store, address):
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        for part in parsed.walk():
            if (
                part.get_content_type() == "text/calendar"
                and uid.encode() in raw
                and str(part.get_param("method", "")).upper() == method
            ):
                out.append(parsed)
    return out


def test_invitation_reply_and_cancel_between_local_users(server: ApiServer) -> None:
    store = server.store
    uid = "planning-1"
    alice_cal = _calendar(server, ALICE, "default")
    event = alice_cal.save_event(_meeting(uid, [(BOB[0], "NEEDS-ACTION")]))

    # Bob gets the invitation in INBOX (text/plain + text/calendar) and, since RFC 6638
    # scheduling, in his default calendar (no more "schedule-inbox" calendar) with the
    # iTIP message in his scheduling Inbox.
    wait_until(lambda: _copy(store, BOB[0], uid) is not None, TIMEOUT, "bob's copy")
    (invitation,) = _invitations(store, BOB[0], uid, "REQUEST")
    assert invitation["From"] == ALICE[0]
    assert "Planning" in invitation["Subject"]
    types = [p.get_content_type() for p in invitation.walk()]
    assert "text/plain" in types and "text/calendar" in types
    assert "schedule-inbox" not in store.dav(BOB[0], "calendars").names()
    copy = _copy(store, BOB[0], uid)
    assert copy is not None and "METHOD" not in copy

    # Saving the same event again sends nothing new (a local invitation is in INBOX before
    # the PUT is answered). The library bumps SEQUENCE on save unless told not to.
    event.save(increase_seqno=False)
    assert len(_invitations(store, BOB[0], uid, "REQUEST")) == 1

    # Bob accepts by saving his copy: Alice's copy shows it.
    bob_calendar = _calendar(server, BOB, "default")
    mine = bob_calendar.event_by_uid(uid)
    component = mine.icalendar_component
    for attendee in component["ATTENDEE"]:
        if str(attendee).lower() == f"mailto:{BOB[0]}":
            attendee.params["PARTSTAT"] = "ACCEPTED"
    mine.save()
    wait_until(
        lambda: _partstat(_copy(store, ALICE[0], uid, "default"), BOB[0]) == "ACCEPTED",
        TIMEOUT,
        "bob accepted in alice's copy",
    )
    assert _invitations(store, ALICE[0], uid, "REPLY")

    # Alice deletes the event: Bob's copy is cancelled (kept, with STATUS:CANCELLED).
    alice_cal.event_by_uid(uid).delete()
    wait_until(
        lambda: str(_event(_copy(store, BOB[0], uid)).get("STATUS", "")) == "CANCELLED",
        TIMEOUT,
        "bob's copy cancelled",
    )
    assert _invitations(store, BOB[0], uid, "CANCEL")


def test_unchanged_save_sends_no_second_invitation(server: ApiServer) -> None:
    store = server.store
    uid = "standup-1"
    alice_cal = _calendar(server, ALICE, "default")
    alice_cal.save_event(_meeting(uid, [(BOB[0], "NEEDS-ACTION")]))
    wait_until(lambda: _copy(store, BOB[0], uid) is not None, TIMEOUT, "bob's copy")
    mark = server.server.stderr_mark()
    alice_cal.save_event(_meeting(uid, [(BOB[0], "NEEDS-ACTION")]))
    changed = _meeting(uid, [(BOB[0], "NEEDS-ACTION")], sequence=1).replace(
        "SUMMARY:Planning", "SUMMARY:Standup moved"
    )
    alice_cal.save_event(changed)
    # Users of this server get the change at once (RFC 6638), the mail's import after.
    server.server.wait_stderr(
        lambda line: "itip delivered method=REQUEST uid=standup-1" in line and "updated" in line,
        TIMEOUT,
        after=mark,
    )
    # Two saves after the first, one of them unchanged: one more invitation, not two.
    assert len(_invitations(store, BOB[0], uid, "REQUEST")) == 2
    assert str(_event(_copy(store, BOB[0], uid))["SUMMARY"]) == "Standup moved"


def test_remote_attendee_invitation_is_queued(server: ApiServer) -> None:
    uid = "remote-1"
    alice_cal = _calendar(server, ALICE, "default")
    alice_cal.save_event(_meeting(uid, [("carol@remote.test", "NEEDS-ACTION")]))
    queue = Queue(server.server.root)

    def queued() -> bool:
        for entry in queue.entries():
            if "carol@remote.test" in [r.address for r in entry.recipients]:
                return uid.encode() in queue.message(entry.id)
        return False

    wait_until(queued, TIMEOUT, "the invitation in the relay queue")


def _itip_mail(method: str, sender: str, to: str, body: str) -> bytes:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = f"iTIP {method}"
    message.set_content("calendar message\n")
    message.add_alternative(body, subtype="calendar", params={"method": method})
    return message.as_bytes(policy=email.policy.SMTP)


def _send_mx(server: ApiServer, sender: str, rcpt: str, message: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", server.server.ports["smtp"], timeout=TIMEOUT) as client:
        client.sendmail(sender, [rcpt], message)


def test_request_from_a_remote_organizer_by_smtp_lands_in_the_default_calendar(
    server: ApiServer,
) -> None:
    uid = "remote-invite-1"
    body = "\r\n".join(
        [
            "BEGIN:VCALENDAR",
            "VERSION:2.0",
            "PRODID:-//remote//EN",
            "METHOD:REQUEST",
            "BEGIN:VEVENT",
            f"UID:{uid}",
            "DTSTAMP:20260101T000000Z",
            "DTSTART:20300201T090000Z",
            "DTEND:20300201T100000Z",
            "SUMMARY:Remote review",
            "ORGANIZER:mailto:dave@remote.test",
            f"ATTENDEE;PARTSTAT=NEEDS-ACTION:mailto:{BOB[0]}",
            "END:VEVENT",
            "END:VCALENDAR",
            "",
        ]
    )
    _send_mx(
        server, "dave@remote.test", BOB[0], _itip_mail("REQUEST", "dave@remote.test", BOB[0], body)
    )
    wait_until(lambda: _copy(server.store, BOB[0], uid) is not None, TIMEOUT, "the import")
    assert str(_event(_copy(server.store, BOB[0], uid))["SUMMARY"]) == "Remote review"
    assert _invitations(server.store, BOB[0], uid, "REQUEST")  # and the mail in INBOX
    # and the iTIP message in the scheduling Inbox, where RFC 6638 clients look for it
    inbox = server.store.schedule_inbox(BOB[0])
    kept = [inbox.read(m.name)[0] for m in inbox.objects()]
    assert any(uid.encode() in data and b"METHOD:REQUEST" in data for data in kept)


def test_forged_reply_changes_nothing(server: ApiServer) -> None:
    store = server.store
    uid = "forged-1"
    alice_cal = _calendar(server, ALICE, "default")
    alice_cal.save_event(_meeting(uid, [(BOB[0], "NEEDS-ACTION")]))
    wait_until(lambda: _copy(store, BOB[0], uid) is not None, TIMEOUT, "bob's copy")
    reply = "\r\n".join(
        [
            "BEGIN:VCALENDAR",
            "VERSION:2.0",
            "PRODID:-//mallory//EN",
            "METHOD:REPLY",
            "BEGIN:VEVENT",
            f"UID:{uid}",
            "DTSTAMP:20260102T000000Z",
            f"ORGANIZER:mailto:{ALICE[0]}",
            f"ATTENDEE;PARTSTAT=DECLINED:mailto:{BOB[0]}",
            "END:VEVENT",
            "END:VCALENDAR",
            "",
        ]
    )
    mark = server.server.stderr_mark()
    forged = _itip_mail("REPLY", "mallory@remote.test", ALICE[0], reply)
    _send_mx(server, "mallory@remote.test", ALICE[0], forged)
    line = server.server.wait_stderr(
        lambda text: "imip received method=REPLY uid=forged-1" in text, TIMEOUT, after=mark
    )
    assert "ignored" in line
    assert _partstat(_copy(store, ALICE[0], uid, "default"), BOB[0]) == "NEEDS-ACTION"


# -- reminders -------------------------------------------------------------------------------


def _reminders(store: Store, address: str, uid: str) -> list[bytes]:
    needle = f"X-Rmail-Reminder: {uid}".encode()
    return [m for m in messages(store, address) if needle in m]


def _ticks(server: RunningServer, count: int) -> None:
    """Wait until the reminder task has finished ``count`` more scans."""
    for _ in range(count):
        mark = server.stderr_mark()
        server.wait_stderr("reminder scan done", TIMEOUT, after=mark)


def test_an_alarm_sends_one_reminder_even_across_a_restart(tmp_path: Path) -> None:
    users = {ALICE[0]: (ALICE[1], False)}
    soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=30)
    later = soon + datetime.timedelta(hours=1)
    stamp = "%Y%m%dT%H%M%SZ"
    uid = "reminder-1"
    body = "\r\n".join(
        [
            "BEGIN:VCALENDAR",
            "VERSION:2.0",
            "PRODID:-//test//EN",
            "BEGIN:VEVENT",
            f"UID:{uid}",
            "DTSTAMP:20260101T000000Z",
            f"DTSTART:{soon.strftime(stamp)}",
            f"DTEND:{later.strftime(stamp)}",
            "SUMMARY:Call the plumber",
            "BEGIN:VALARM",
            "ACTION:DISPLAY",
            "DESCRIPTION:Call",
            "TRIGGER:-PT1M",
            "END:VALARM",
            "END:VEVENT",
            "END:VCALENDAR",
            "",
        ]
    )
    with start_api_server(tmp_path, users, calendar={"reminder_interval": 1}) as running:
        _calendar(running, ALICE, "default").save_event(body)
        wait_until(lambda: _reminders(running.store, ALICE[0], uid), TIMEOUT, "the reminder")
        _ticks(running.server, 2)
        (reminder,) = _reminders(running.store, ALICE[0], uid)
        assert b"Reminder: Call the plumber" in reminder
        config = running.server.config_path
    again = RunningServer(config).start()
    try:
        _ticks(again, 2)
    finally:
        assert again.stop() == 0
    store = Store.open(tmp_path / "data")
    try:
        assert len(_reminders(store, ALICE[0], uid)) == 1
    finally:
        store.close()
