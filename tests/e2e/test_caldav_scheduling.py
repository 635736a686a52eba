"""CalDAV scheduling (RFC 6638) against a running server: the caldav library as the client
of two local users (invitation, answer, cancel, free-busy through the Outbox), and raw HTTP
for the properties, the DAV header, Schedule-Tag and the preconditions."""

from __future__ import annotations

import base64
import datetime
import email
import email.policy
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from typing import Any

import caldav
import icalendar
import pytest
from api_helpers import ApiServer, start_api_server
from smtp_helpers import messages, wait_until

from rmail.store.queue import Queue

ALICE = ("alice@example.test", "alice-pw")
BOB = ("bob@example.test", "bob-pw")
ALIAS = "a.liddell@example.test"  # an exact alias of alice's
DAV = "DAV:"
C = "urn:ietf:params:xml:ns:caldav"
TIMEOUT = 20.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    users = {ALICE[0]: (ALICE[1], False), BOB[0]: (BOB[1], False)}
    # Mail for remote.test goes to a closed port: it stays in the relay queue.
    with start_api_server(
        tmp_path_factory.mktemp("caldav-sched"),
        users,
        relay={"routes": {"remote.test": "127.0.0.1:9"}},
    ) as running:
        running.store.accounts.add_alias("example.test", ALIAS, ALICE[0])
        yield running


def _client(server: ApiServer, who: tuple[str, str]) -> Any:
    return caldav.DAVClient(url=server.base + "/", username=who[0], password=who[1])


def _default(server: ApiServer, who: tuple[str, str]) -> Any:
    for calendar in _client(server, who).principal().calendars():
        if str(calendar.url).rstrip("/").endswith("/default"):
            return calendar
    raise AssertionError("no default calendar")


def _event(uid: str, *, summary: str = "Review", start: str = "20300105T100000Z") -> str:
    end = start[:9] + f"{int(start[9:11]) + 1:02d}" + start[11:]
    return "\r\n".join(
        [
            "BEGIN:VCALENDAR",
            "VERSION:2.0",
            "PRODID:-//test//EN",
            "BEGIN:VEVENT",
            f"UID:{uid}",
            "DTSTAMP:20260101T000000Z",
            f"DTSTART:{start}",
            f"DTEND:{end}",
            f"SUMMARY:{summary}",
            "END:VEVENT",
            "END:VCALENDAR",
            "",
        ]
    )


def _meeting(uid: str, *attendees: str, start: str = "20300105T100000Z") -> str:
    """An event organized by alice, attendee lines given whole (``PARAMS:mailto:x``)."""
    lines = _event(uid, start=start).split("\r\n")
    at = lines.index("END:VEVENT")
    lines[at:at] = [
        f"ORGANIZER:mailto:{ALICE[0]}",
        f"ATTENDEE;PARTSTAT=ACCEPTED:mailto:{ALICE[0]}",
        *[f"ATTENDEE;{a}" for a in attendees],
    ]
    return "\r\n".join(lines)


def _http(
    server: ApiServer,
    method: str,
    path: str,
    body: str = "",
    *,
    who: tuple[str, str] = ALICE,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, Mapping[str, str], bytes]:
    token = base64.b64encode(f"{who[0]}:{who[1]}".encode()).decode()
    sent = {"Authorization": f"Basic {token}", **(headers or {})}
    request = urllib.request.Request(
        server.base + path, data=body.encode() or None, headers=sent, method=method
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _propfind(
    server: ApiServer, path: str, props: str, depth: str = "0", who: tuple[str, str] = ALICE
) -> ET.Element:
    body = f'<D:propfind xmlns:D="DAV:" xmlns:C="{C}"><D:prop>{props}</D:prop></D:propfind>'
    status, _, answer = _http(server, "PROPFIND", path, body, who=who, headers={"Depth": depth})
    assert status == 207, answer
    return ET.fromstring(answer)


def _attendee(component: Any, address: str) -> Any:
    values = component.get("ATTENDEE")
    for value in values if isinstance(values, list) else [values]:
        if str(value).lower() == f"mailto:{address}":
            return value
    raise AssertionError(f"{address} is no attendee")


def _stored(server: ApiServer, address: str, uid: str, calendar: str = "default") -> Any:
    collection = server.store.dav(address, "calendars").collection(calendar)
    meta = collection.by_uid(uid)
    if meta is None:
        return None
    data, _ = collection.read(meta.name)
    return next(iter(icalendar.Calendar.from_ical(data).walk("VEVENT")))


def _inbox(server: ApiServer, address: str, uid: str, method: str) -> list[bytes]:
    inbox = server.store.schedule_inbox(address)
    found = [inbox.read(m.name)[0] for m in inbox.objects()]
    return [d for d in found if uid.encode() in d and f"METHOD:{method}".encode() in d]


def _mails(server: ApiServer, address: str, uid: str, method: str) -> list[bytes]:
    """The iMIP mails about ``uid`` with ``method`` in the user's INBOX."""
    found = []
    for raw in messages(server.store, address):
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        for part in parsed.walk():
            if (
                part.get_content_type() == "text/calendar"
                and str(part.get_param("method", "")).upper() == method
                and uid.encode() in raw
            ):
                found.append(raw)
    return found


# -- discovery -------------------------------------------------------------------------------


def test_options_advertise_calendar_auto_schedule(server: ApiServer) -> None:
    status, headers, _ = _http(server, "OPTIONS", "/dav/calendars/alice@example.test/")
    assert status == 200
    classes = {c.strip() for c in headers["DAV"].split(",")}
    assert {"calendar-access", "calendar-auto-schedule", "calendar-schedule"} <= classes
    assert "POST" in headers["Allow"]


def test_principal_names_inbox_outbox_and_every_address(server: ApiServer) -> None:
    root = _propfind(
        server,
        "/dav/principals/alice@example.test/",
        "<C:schedule-inbox-URL/><C:schedule-outbox-URL/><C:calendar-user-address-set/>"
        "<C:calendar-user-type/>",
    )
    inbox = root.findtext(f".//{{{C}}}schedule-inbox-URL/{{{DAV}}}href")
    outbox = root.findtext(f".//{{{C}}}schedule-outbox-URL/{{{DAV}}}href")
    assert inbox == "/dav/calendars/alice@example.test/_inbox/"
    assert outbox == "/dav/calendars/alice@example.test/_outbox/"
    hrefs = [h.text for h in root.findall(f".//{{{C}}}calendar-user-address-set/{{{DAV}}}href")]
    assert hrefs[0] == f"mailto:{ALICE[0]}"
    assert f"mailto:{ALIAS}" in hrefs
    assert "/dav/principals/alice@example.test/" in hrefs
    assert root.findtext(f".//{{{C}}}calendar-user-type") == "INDIVIDUAL"


def test_home_lists_inbox_and_outbox_with_their_types(server: ApiServer) -> None:
    root = _propfind(
        server,
        "/dav/calendars/alice@example.test/",
        "<D:resourcetype/><C:schedule-default-calendar-URL/><C:schedule-calendar-transp/>",
        depth="1",
    )
    by_href = {r.findtext(f"{{{DAV}}}href"): r for r in root.findall(f"{{{DAV}}}response")}
    inbox = by_href["/dav/calendars/alice@example.test/_inbox/"]
    assert inbox.find(f".//{{{DAV}}}resourcetype/{{{C}}}schedule-inbox") is not None
    assert inbox.find(f".//{{{DAV}}}resourcetype/{{{C}}}calendar") is None
    default = inbox.findtext(f".//{{{C}}}schedule-default-calendar-URL/{{{DAV}}}href")
    assert default == "/dav/calendars/alice@example.test/default/"
    outbox = by_href["/dav/calendars/alice@example.test/_outbox/"]
    assert outbox.find(f".//{{{DAV}}}resourcetype/{{{C}}}schedule-outbox") is not None
    calendar = by_href["/dav/calendars/alice@example.test/default/"]
    assert calendar.find(f".//{{{C}}}schedule-calendar-transp/{{{C}}}opaque") is not None
    # The library sees the calendars only, and finds the mailboxes.
    principal = _client(server, ALICE).principal()
    assert [str(c.url).rstrip("/").rsplit("/", 1)[1] for c in principal.calendars()] == ["default"]
    assert str(principal.schedule_inbox().url).endswith("/_inbox/")
    assert str(principal.schedule_outbox().url).endswith("/_outbox/")


def test_nothing_is_put_into_the_inbox(server: ApiServer) -> None:
    status, _, _ = _http(
        server, "PUT", "/dav/calendars/alice@example.test/_inbox/x.ics", _event("x-1")
    )
    assert status == 403


# -- implicit scheduling between two users of this server ------------------------------------


def test_invite_accept_and_cancel_between_two_users(server: ApiServer) -> None:
    uid = "sched-invite-1"
    alice = _client(server, ALICE).principal()
    bob = _client(server, BOB).principal()
    alice_cal = _default(server, ALICE)
    alice_cal.save_with_invites(_event(uid, summary="Design review"), [BOB[0]])

    # Bob's calendar has the event, waiting for his answer; his Inbox has the REQUEST.
    copy = _stored(server, BOB[0], uid)
    assert copy is not None
    assert _attendee(copy, BOB[0]).params["PARTSTAT"] == "NEEDS-ACTION"
    items = bob.schedule_inbox().get_items()
    invites = [i for i in items if i.is_invite_request() and i.id == uid]
    assert len(invites) == 1
    # Alice's copy says the invitation was delivered (RFC 6638 §3.2.9).
    mine = _stored(server, ALICE[0], uid)
    assert _attendee(mine, BOB[0]).params["SCHEDULE-STATUS"] == "1.2"
    tag_before = alice_cal.event_by_uid(uid)
    status, headers, _ = _http(server, "GET", str(tag_before.url.path))
    assert status == 200
    alice_tag = headers["Schedule-Tag"]

    # Bob accepts from his Inbox: Alice's copy shows it, and her Inbox has the REPLY.
    invites[0].accept_invite()
    assert _attendee(_stored(server, BOB[0], uid), BOB[0]).params["PARTSTAT"] == "ACCEPTED"
    wait_until(
        lambda: _attendee(_stored(server, ALICE[0], uid), BOB[0]).params["PARTSTAT"] == "ACCEPTED",
        TIMEOUT,
        "bob's answer in alice's copy",
    )
    replies = [i for i in alice.schedule_inbox().get_items() if i.is_invite_reply()]
    assert [r.id for r in replies] == [uid]
    # A reply merged into the organizer's copy keeps its Schedule-Tag (RFC 6638 §3.2.10).
    _, headers, _ = _http(server, "GET", str(tag_before.url.path))
    assert headers["Schedule-Tag"] == alice_tag

    # Bob clears his Inbox.
    for item in bob.schedule_inbox().get_items():
        item.delete()
    assert list(bob.schedule_inbox().get_items()) == []

    # Alice deletes the event: Bob's copy is cancelled and his Inbox has the CANCEL.
    alice_cal.event_by_uid(uid).delete()
    assert str(_stored(server, BOB[0], uid)["STATUS"]) == "CANCELLED"
    assert len(_inbox(server, BOB[0], uid, "CANCEL")) == 1
    # The mail-based path still runs (mail-only clients), and changes nothing twice.
    wait_until(lambda: bool(_mails(server, BOB[0], uid, "CANCEL")), TIMEOUT, "the CANCEL mail")
    assert len(_inbox(server, BOB[0], uid, "CANCEL")) == 1


def test_attendee_deleting_the_event_declines(server: ApiServer) -> None:
    uid = "sched-decline-1"
    _default(server, ALICE).save_event(_meeting(uid, f"PARTSTAT=NEEDS-ACTION:mailto:{BOB[0]}"))
    _default(server, BOB).event_by_uid(uid).delete()
    wait_until(
        lambda: _attendee(_stored(server, ALICE[0], uid), BOB[0]).params["PARTSTAT"] == "DECLINED",
        TIMEOUT,
        "bob's decline in alice's copy",
    )
    assert len(_inbox(server, ALICE[0], uid, "REPLY")) == 1


def test_schedule_agent_client_leaves_the_attendee_to_the_client(server: ApiServer) -> None:
    uid = "sched-client-1"
    _default(server, ALICE).save_event(
        _meeting(uid, f"SCHEDULE-AGENT=CLIENT;PARTSTAT=NEEDS-ACTION:mailto:{BOB[0]}")
    )
    assert _stored(server, BOB[0], uid) is None
    assert _inbox(server, BOB[0], uid, "REQUEST") == []
    assert _mails(server, BOB[0], uid, "REQUEST") == []
    assert "SCHEDULE-STATUS" not in _attendee(_stored(server, ALICE[0], uid), BOB[0]).params


def test_remote_attendee_goes_to_the_relay_queue_and_unknown_one_is_invalid(
    server: ApiServer,
) -> None:
    uid = "sched-remote-1"
    _default(server, ALICE).save_event(
        _meeting(
            uid,
            "PARTSTAT=NEEDS-ACTION:mailto:carol@remote.test",
            "PARTSTAT=NEEDS-ACTION:mailto:nobody@example.test",
        )
    )
    queue = Queue(server.server.root)

    def queued() -> list[bytes]:
        return [
            queue.message(e.id)
            for e in queue.entries()
            if [r.address for r in e.recipients] == ["carol@remote.test"]
            and uid.encode() in queue.message(e.id)
        ]

    wait_until(lambda: bool(queued()), TIMEOUT, "the invitation in the relay queue")
    assert b"method=REQUEST" in queued()[0] or b'method="REQUEST"' in queued()[0]
    mine = _stored(server, ALICE[0], uid)
    assert _attendee(mine, "carol@remote.test").params["SCHEDULE-STATUS"] == "1.1"
    assert _attendee(mine, "nobody@example.test").params["SCHEDULE-STATUS"] == "3.7"
    # Nothing was sent to the address that is nobody's.
    for entry in queue.entries():
        assert "nobody@example.test" not in [r.address for r in entry.recipients]


def test_the_organizer_alias_schedules_too(server: ApiServer) -> None:
    uid = "sched-alias-1"
    data = _meeting(uid, f"PARTSTAT=NEEDS-ACTION:mailto:{BOB[0]}").replace(
        f"ORGANIZER:mailto:{ALICE[0]}", f"ORGANIZER:mailto:{ALIAS}"
    )
    _default(server, ALICE).save_event(data)
    copy = _stored(server, BOB[0], uid)
    assert copy is not None and str(copy["ORGANIZER"]).lower() == f"mailto:{ALIAS}"


# -- Schedule-Tag and preconditions ----------------------------------------------------------


def test_schedule_tag_changes_with_the_organizer_and_guards_a_stale_write(
    server: ApiServer,
) -> None:
    path = "/dav/calendars/alice@example.test/default/tagged.ics"
    body = _meeting("sched-tag-1", f"PARTSTAT=NEEDS-ACTION:mailto:{BOB[0]}")
    status, headers, _ = _http(server, "PUT", path, body)
    assert status == 201
    tag = headers["Schedule-Tag"]
    assert "ETag" not in headers  # SCHEDULE-STATUS was added: the client must fetch it again
    status, headers, data = _http(server, "GET", path)
    assert headers["Schedule-Tag"] == tag and b"SCHEDULE-STATUS=1.2" in data

    moved = body.replace("SUMMARY:Review", "SUMMARY:Review, moved")
    status, _, _ = _http(server, "PUT", path, moved, headers={"If-Schedule-Tag-Match": '"stale"'})
    assert status == 412
    status, headers, _ = _http(server, "PUT", path, moved, headers={"If-Schedule-Tag-Match": tag})
    assert status == 204
    assert headers["Schedule-Tag"] != tag
    status, _, _ = _http(server, "DELETE", path, headers={"If-Schedule-Tag-Match": tag})
    assert status == 412
    # A plain event is no scheduling object resource: no Schedule-Tag.
    plain = "/dav/calendars/alice@example.test/default/plain.ics"
    status, headers, _ = _http(server, "PUT", plain, _event("sched-plain-1"))
    assert status == 201 and "Schedule-Tag" not in headers and "ETag" in headers


def test_schedule_tag_is_a_property_too(server: ApiServer) -> None:
    path = "/dav/calendars/alice@example.test/default/tagprop.ics"
    _, headers, _ = _http(
        server, "PUT", path, _meeting("sched-tag-2", f"RSVP=TRUE:mailto:{BOB[0]}")
    )
    root = _propfind(server, path, "<C:schedule-tag/>")
    assert root.findtext(f".//{{{C}}}schedule-tag") == headers["Schedule-Tag"]


def test_one_scheduling_object_per_uid_and_one_organizer(server: ApiServer) -> None:
    uid = "sched-unique-1"
    body = _meeting(uid, f"PARTSTAT=NEEDS-ACTION:mailto:{BOB[0]}")
    assert (
        _http(server, "PUT", f"/dav/calendars/alice@example.test/default/{uid}.ics", body)[0] == 201
    )
    status, _, _ = _http(server, "MKCALENDAR", "/dav/calendars/alice@example.test/work/")
    assert status == 201
    status, _, answer = _http(
        server, "PUT", f"/dav/calendars/alice@example.test/work/{uid}.ics", body
    )
    assert status == 403 and b"unique-scheduling-object-resource" in answer

    override = "\r\n".join(
        [
            "BEGIN:VEVENT",
            "UID:sched-two-organizers",
            "DTSTAMP:20260101T000000Z",
            "RECURRENCE-ID:20300112T100000Z",
            "DTSTART:20300112T110000Z",
            "DTEND:20300112T120000Z",
            "ORGANIZER:mailto:mallory@example.test",
            f"ATTENDEE:mailto:{BOB[0]}",
            "END:VEVENT",
            "END:VCALENDAR",
            "",
        ]
    )
    two = (
        _meeting("sched-two-organizers", f"PARTSTAT=NEEDS-ACTION:mailto:{BOB[0]}")
        .replace("SUMMARY:Review", "SUMMARY:Review\r\nRRULE:FREQ=WEEKLY;COUNT=3")
        .replace("END:VCALENDAR\r\n", override)
    )
    status, _, answer = _http(
        server, "PUT", "/dav/calendars/alice@example.test/default/two.ics", two
    )
    assert status == 403 and b"same-organizer-in-all-components" in answer


# -- free-busy through the Outbox ------------------------------------------------------------


def test_freebusy_request_through_the_outbox(server: ApiServer) -> None:
    bob_cal = _default(server, BOB)
    bob_cal.save_event(_event("sched-busy-1", start="20310301T090000Z"))
    transparent = _event("sched-free-1", start="20310301T130000Z").replace(
        "SUMMARY:", "TRANSP:TRANSPARENT\r\nSUMMARY:"
    )
    bob_cal.save_event(transparent)
    alice = _client(server, ALICE).principal()
    answer = alice.freebusy_request(
        datetime.datetime(2031, 3, 1, tzinfo=datetime.UTC),
        datetime.datetime(2031, 3, 2, tzinfo=datetime.UTC),
        [f"mailto:{BOB[0]}", "mailto:nobody@example.test", "mailto:dave@remote.test"],
    )
    busy = answer[f"mailto:{BOB[0]}"].icalendar_instance
    assert str(busy["METHOD"]) == "REPLY"
    values = next(iter(busy.walk("VFREEBUSY"))).get("FREEBUSY")
    periods = [v.dt for v in (values if isinstance(values, list) else [values])]
    assert [(start.hour, end.hour) for start, end in periods] == [(9, 10)]
    assert answer["errors"]["mailto:nobody@example.test"].startswith("3.7")
    assert answer["errors"]["mailto:dave@remote.test"].startswith("5.")


def test_outbox_refuses_what_is_no_freebusy_request(server: ApiServer) -> None:
    path = "/dav/calendars/alice@example.test/_outbox/"
    status, _, answer = _http(
        server,
        "POST",
        path,
        _meeting("sched-post-1", f"mailto:{BOB[0]}").replace(
            "VERSION:2.0", "VERSION:2.0\r\nMETHOD:REQUEST"
        ),
        headers={"Content-Type": "text/calendar"},
    )
    assert status == 403 and b"valid-scheduling-message" in answer
    request = "\r\n".join(
        [
            "BEGIN:VCALENDAR",
            "VERSION:2.0",
            "PRODID:-//test//EN",
            "METHOD:REQUEST",
            "BEGIN:VFREEBUSY",
            "UID:fb-1",
            "DTSTAMP:20260101T000000Z",
            "DTSTART:20310301T000000Z",
            "DTEND:20310302T000000Z",
            f"ORGANIZER:mailto:{BOB[0]}",
            f"ATTENDEE:mailto:{BOB[0]}",
            "END:VFREEBUSY",
            "END:VCALENDAR",
            "",
        ]
    )
    status, _, answer = _http(
        server, "POST", path, request, headers={"Content-Type": "text/calendar"}
    )
    assert status == 403 and b"organizer-allowed" in answer


def _set_default_calendar(server: ApiServer, who: tuple[str, str], href: str) -> bytes:
    body = (
        f'<D:propertyupdate xmlns:D="DAV:" xmlns:C="{C}"><D:set><D:prop>'
        f"<C:schedule-default-calendar-URL><D:href>{href}</D:href>"
        "</C:schedule-default-calendar-URL></D:prop></D:set></D:propertyupdate>"
    )
    status, _, answer = _http(
        server, "PROPPATCH", f"/dav/calendars/{who[0]}/_inbox/", body, who=who
    )
    assert status == 207, answer
    return answer


def test_invitations_go_to_the_default_calendar_the_user_chose(server: ApiServer) -> None:
    team = "/dav/calendars/bob@example.test/team/"
    assert _http(server, "MKCALENDAR", team, who=BOB)[0] == 201
    answer = _set_default_calendar(server, BOB, team)
    assert b"200" in answer
    root = _propfind(
        server,
        "/dav/calendars/bob@example.test/_inbox/",
        "<C:schedule-default-calendar-URL/>",
        who=BOB,
    )
    assert root.findtext(f".//{{{C}}}schedule-default-calendar-URL/{{{DAV}}}href") == team
    uid = "sched-chosen-1"
    _default(server, ALICE).save_event(_meeting(uid, f"PARTSTAT=NEEDS-ACTION:mailto:{BOB[0]}"))
    assert _stored(server, BOB[0], uid, "team") is not None
    assert _stored(server, BOB[0], uid) is None
    # Only one of the user's own calendars can be chosen.
    answer = _set_default_calendar(server, BOB, "/dav/calendars/alice@example.test/default/")
    assert b"403" in answer
    _set_default_calendar(server, BOB, "/dav/calendars/bob@example.test/default/")


def test_moving_the_event_asks_every_attendee_again(server: ApiServer) -> None:
    uid = "sched-move-1"
    alice_cal = _default(server, ALICE)
    alice_cal.save_event(_meeting(uid, f"PARTSTAT=NEEDS-ACTION:mailto:{BOB[0]}"))
    mine = _default(server, BOB).event_by_uid(uid)
    mine.change_attendee_status(f"mailto:{BOB[0]}", partstat="ACCEPTED")
    mine.save(increase_seqno=False)
    wait_until(
        lambda: _attendee(_stored(server, ALICE[0], uid), BOB[0]).params["PARTSTAT"] == "ACCEPTED",
        TIMEOUT,
        "bob's answer in alice's copy",
    )
    event = alice_cal.event_by_uid(uid)
    component = event.icalendar_component
    component["DTSTART"].dt += datetime.timedelta(hours=2)
    component["DTEND"].dt += datetime.timedelta(hours=2)
    event.save()
    # RFC 6638 §3.2.8: both copies wait for bob's answer again.
    assert _attendee(_stored(server, ALICE[0], uid), BOB[0]).params["PARTSTAT"] == "NEEDS-ACTION"
    bob_copy = _stored(server, BOB[0], uid)
    assert bob_copy["DTSTART"].dt.hour == 12
    assert _attendee(bob_copy, BOB[0]).params["PARTSTAT"] == "NEEDS-ACTION"


def test_schedule_reply_f_deletes_without_declining(server: ApiServer) -> None:
    uid = "sched-quiet-1"
    _default(server, ALICE).save_event(_meeting(uid, f"PARTSTAT=NEEDS-ACTION:mailto:{BOB[0]}"))
    event = _default(server, BOB).event_by_uid(uid)
    status, _, _ = _http(
        server, "DELETE", str(event.url.path), who=BOB, headers={"Schedule-Reply": "F"}
    )
    assert status == 204
    assert _stored(server, BOB[0], uid) is None
    assert _attendee(_stored(server, ALICE[0], uid), BOB[0]).params["PARTSTAT"] == "NEEDS-ACTION"
    assert _inbox(server, ALICE[0], uid, "REPLY") == []


def test_a_transparent_calendar_does_not_count_for_free_busy(server: ApiServer) -> None:
    path = "/dav/calendars/bob@example.test/holidays/"
    assert _http(server, "MKCALENDAR", path, who=BOB)[0] == 201
    body = (
        f'<D:propertyupdate xmlns:D="DAV:" xmlns:C="{C}"><D:set><D:prop>'
        "<C:schedule-calendar-transp><C:transparent/></C:schedule-calendar-transp>"
        "</D:prop></D:set></D:propertyupdate>"
    )
    status, _, answer = _http(server, "PROPPATCH", path, body, who=BOB)
    assert status == 207 and b"200" in answer
    root = _propfind(server, path, "<C:schedule-calendar-transp/>", who=BOB)
    assert root.find(f".//{{{C}}}schedule-calendar-transp/{{{C}}}transparent") is not None
    status, _, _ = _http(
        server, "PUT", path + "h.ics", _event("sched-holiday-1", start="20320301T090000Z"), who=BOB
    )
    assert status == 201
    answer = (
        _client(server, ALICE)
        .principal()
        .freebusy_request(
            datetime.datetime(2032, 3, 1, tzinfo=datetime.UTC),
            datetime.datetime(2032, 3, 2, tzinfo=datetime.UTC),
            [f"mailto:{BOB[0]}"],
        )
    )
    reply = next(iter(answer[f"mailto:{BOB[0]}"].icalendar_instance.walk("VFREEBUSY")))
    assert reply.get("FREEBUSY") is None
