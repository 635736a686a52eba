"""iMIP between two local users whose mail programs send the iTIP messages themselves.

Thunderbird with a local calendar, Apple Mail and Outlook answer an invitation by mailing
METHOD:REPLY through the user's submission server; a user without CalDAV scheduling sends
REQUEST and CANCEL the same way. Here every iTIP message travels over a real SMTP socket:
smtplib, STARTTLS and AUTH on the submission port, then rmail's local delivery, then the
calendar scheduling that reads delivered mail. The calendars are read back with the
``caldav`` library, as the users' calendar apps would.
"""

from __future__ import annotations

import email.policy
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import caldav
import pytest
from api_helpers import ApiServer, start_api_server
from smtp_helpers import connect, tls_context, wait_until

ALICE = ("alice@example.test", "alice-pw")
BOB = ("bob@example.test", "bob-pw")
TIMEOUT = 20.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    users = {ALICE[0]: (ALICE[1], False), BOB[0]: (BOB[1], False)}
    with start_api_server(tmp_path_factory.mktemp("imip-smtp"), users) as running:
        yield running


def _itip(method: str, uid: str, *, sequence: int, partstat: str, status: str = "") -> str:
    lines = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        "PRODID:-//Mozilla.org/NONSGML Mozilla Calendar V1.1//EN",
        f"METHOD:{method}",
        "BEGIN:VEVENT",
        f"UID:{uid}",
        f"DTSTAMP:2026010{1 + sequence}T000000Z",
        "DTSTART:20300310T140000Z",
        "DTEND:20300310T150000Z",
        "SUMMARY:Budget review",
        f"SEQUENCE:{sequence}",
        f"ORGANIZER;CN=Alice:mailto:{ALICE[0]}",
        f"ATTENDEE;PARTSTAT={partstat};RSVP=TRUE:mailto:{BOB[0]}",
    ]
    if status:
        lines.append(f"STATUS:{status}")
    lines += ["END:VEVENT", "END:VCALENDAR", ""]
    return "\r\n".join(lines)


def _submit(server: ApiServer, who: tuple[str, str], to: str, method: str, body: str) -> None:
    """Mail an iTIP message the way a mail program does: text/plain + text/calendar."""
    message = EmailMessage()
    message["From"] = who[0]
    message["To"] = to
    message["Subject"] = f"Invitation {method.lower()}: Budget review"
    message.set_content("Budget review, 10 March 2030 14:00 UTC\n")
    message.add_alternative(body, subtype="calendar", params={"method": method})
    raw = message.as_bytes(policy=email.policy.SMTP)
    context = tls_context(server.server.root)
    port = server.server.ports["submission"]
    with connect(port, starttls=context, login=who) as client:
        refused = client.sendmail(who[0], [to], raw)
    assert refused == {}


def _find(server: ApiServer, who: tuple[str, str], uid: str) -> Any | None:
    """The event ``uid`` in any of the user's calendars, as their calendar app sees it."""
    client = caldav.DAVClient(url=server.base + "/", username=who[0], password=who[1])
    for calendar in client.principal().calendars():
        for event in calendar.events():
            component = event.icalendar_component
            if str(component.get("UID")) == uid:
                return component
    return None


def _partstat(component: Any, address: str) -> str:
    attendees = component.get("ATTENDEE")
    for attendee in attendees if isinstance(attendees, list) else [attendees]:
        if str(attendee).lower() == f"mailto:{address}":
            return str(attendee.params.get("PARTSTAT", ""))
    raise AssertionError(f"{address} is no attendee")


def test_request_reply_and_cancel_all_by_submission(server: ApiServer) -> None:
    uid = "mailed-1@alice.example.test"

    # Alice's mail program invites Bob: the event appears in one of Bob's calendars.
    _submit(
        server, ALICE, BOB[0], "REQUEST", _itip("REQUEST", uid, sequence=0, partstat="NEEDS-ACTION")
    )
    wait_until(
        lambda: _find(server, BOB, uid) is not None, TIMEOUT, "the invitation in bob's calendar"
    )
    copy = _find(server, BOB, uid)
    assert copy is not None and str(copy["SUMMARY"]) == "Budget review"
    assert _partstat(copy, BOB[0]) == "NEEDS-ACTION"

    # Alice keeps her own copy in her calendar app (CalDAV), as Thunderbird does.
    alice = caldav.DAVClient(url=server.base + "/", username=ALICE[0], password=ALICE[1])
    own = _itip("REQUEST", uid, sequence=0, partstat="NEEDS-ACTION").replace(
        "METHOD:REQUEST\r\n", ""
    )
    calendar = next(
        c for c in alice.principal().calendars() if str(c.url).rstrip("/").endswith("/default")
    )
    calendar.save_event(own, no_overwrite=False)

    # Bob's mail program accepts: the REPLY reaches Alice by submission and her copy shows it.
    _submit(server, BOB, ALICE[0], "REPLY", _itip("REPLY", uid, sequence=0, partstat="ACCEPTED"))
    wait_until(
        lambda: _partstat(_find(server, ALICE, uid), BOB[0]) == "ACCEPTED",
        TIMEOUT,
        "bob's acceptance in alice's calendar",
    )

    # Alice's mail program cancels: Bob's copy is marked cancelled.
    _submit(
        server,
        ALICE,
        BOB[0],
        "CANCEL",
        _itip("CANCEL", uid, sequence=1, partstat="ACCEPTED", status="CANCELLED"),
    )

    def cancelled() -> bool:
        component = _find(server, BOB, uid)
        return component is None or str(component.get("STATUS", "")) == "CANCELLED"

    wait_until(cancelled, TIMEOUT, "bob's copy cancelled")


def test_a_reply_from_someone_else_changes_nothing(server: ApiServer) -> None:
    """Bob cannot answer for Carol: the REPLY's sender must be the attendee it updates."""
    uid = "mailed-2@alice.example.test"
    alice = caldav.DAVClient(url=server.base + "/", username=ALICE[0], password=ALICE[1])
    calendar = next(
        c for c in alice.principal().calendars() if str(c.url).rstrip("/").endswith("/default")
    )
    own = _itip("REQUEST", uid, sequence=0, partstat="NEEDS-ACTION").replace(
        "METHOD:REQUEST\r\n", ""
    )
    own = own.replace(f"mailto:{BOB[0]}", "mailto:carol@example.test")
    calendar.save_event(own, no_overwrite=False)
    mark = server.server.stderr_mark()
    forged = _itip("REPLY", uid, sequence=0, partstat="DECLINED").replace(
        f"mailto:{BOB[0]}", "mailto:carol@example.test"
    )
    _submit(server, BOB, ALICE[0], "REPLY", forged)
    line = server.server.wait_stderr(
        lambda text: f"imip received method=REPLY uid={uid}" in text, TIMEOUT, after=mark
    )
    assert "ignored" in line
    assert _partstat(_find(server, ALICE, uid), "carol@example.test") == "NEEDS-ACTION"
