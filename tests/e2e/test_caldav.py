"""CalDAV and CardDAV against a running server: the ``caldav`` library as a real client, and
raw requests (aiohttp) for CardDAV, preconditions and hostile input."""

from __future__ import annotations

import base64
import datetime
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import aiohttp
import caldav
import pytest
from api_helpers import ApiServer, start_api_server
from smtp_helpers import messages

ALICE = ("alice@example.test", "alice-pw")
BOB = ("bob@example.test", "bob-pw")
DAV = "DAV:"
C = "urn:ietf:params:xml:ns:caldav"
CARD = "urn:ietf:params:xml:ns:carddav"

WEEKLY = """BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//test//EN
BEGIN:VEVENT
UID:weekly-1
DTSTART:20260105T100000Z
DTEND:20260105T110000Z
RRULE:FREQ=WEEKLY;COUNT=5
EXDATE:20260112T100000Z
SUMMARY:Weekly
END:VEVENT
BEGIN:VEVENT
UID:weekly-1
RECURRENCE-ID:20260119T100000Z
DTSTART:20260119T150000Z
DTEND:20260119T160000Z
SUMMARY:Moved
END:VEVENT
END:VCALENDAR
"""


def _event(uid: str, start: str, end: str, summary: str = "Meeting", extra: str = "") -> str:
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\nBEGIN:VEVENT\r\n"
        f"UID:{uid}\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:{start}\r\nDTEND:{end}\r\n"
        f"SUMMARY:{summary}\r\n{extra}END:VEVENT\r\nEND:VCALENDAR\r\n"
    )


@pytest.fixture(scope="module")
def dav_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    users = {ALICE[0]: (ALICE[1], False), BOB[0]: (BOB[1], False)}
    with start_api_server(tmp_path_factory.mktemp("dav"), users) as server:
        yield server


def _client(server: ApiServer, path: str = "/", who: tuple[str, str] = ALICE) -> Any:
    return caldav.DAVClient(url=server.base + path, username=who[0], password=who[1])


def test_discovery_from_the_bare_url_and_well_known(dav_server: ApiServer) -> None:
    for path in ("/", "/.well-known/caldav", "/dav/"):
        principal = _client(dav_server, path).principal()
        assert str(principal.url).endswith("/dav/principals/alice@example.test/")
        names = [c.get_display_name() for c in principal.calendars()]
        assert "Calendar" in names


def test_events_and_todos_round_trip(dav_server: ApiServer) -> None:
    principal = _client(dav_server).principal()
    cal = principal.make_calendar(name="Trips", cal_id="trips")
    event = cal.save_event(_event("trip-1", "20260301T090000Z", "20260301T100000Z", "Train"))
    assert cal.event_by_uid("trip-1").icalendar_component["SUMMARY"] == "Train"
    event.icalendar_component["SUMMARY"] = "Plane"
    event.save()
    assert cal.event_by_uid("trip-1").icalendar_component["SUMMARY"] == "Plane"
    todo = cal.save_todo(
        "BEGIN:VCALENDAR\nVERSION:2.0\nPRODID:-//t//EN\nBEGIN:VTODO\nUID:todo-1\n"
        "SUMMARY:Pack\nDUE:20260228T180000Z\nEND:VTODO\nEND:VCALENDAR\n"
    )
    assert [t.icalendar_component["UID"] for t in cal.todos()] == ["todo-1"]
    todo.delete()
    event.delete()
    assert cal.events() == [] and cal.todos() == []
    cal.delete()
    assert "trips" not in [str(c.url).rstrip("/").rsplit("/", 1)[-1] for c in principal.calendars()]


def test_time_range_search_expands_recurrences_with_exceptions(dav_server: ApiServer) -> None:
    principal = _client(dav_server).principal()
    cal = principal.make_calendar(name="Recurring", cal_id="recurring")
    cal.save_event(WEEKLY)
    cal.save_event(_event("single", "20260301T120000Z", "20260301T130000Z"))
    found = cal.search(
        start=datetime.datetime(2026, 1, 10, tzinfo=datetime.UTC),
        end=datetime.datetime(2026, 1, 20, tzinfo=datetime.UTC),
        event=True,
        expand=True,
    )
    instances = [(str(e.icalendar_component["SUMMARY"]), e.icalendar_component["DTSTART"].dt)
                 for e in found]  # fmt: skip
    assert instances == [("Moved", datetime.datetime(2026, 1, 19, 15, tzinfo=datetime.UTC))]
    # The week of the EXDATE has no instance; the week after the override has the rule's.
    empty = cal.search(
        start=datetime.datetime(2026, 1, 11, tzinfo=datetime.UTC),
        end=datetime.datetime(2026, 1, 13, tzinfo=datetime.UTC),
        event=True,
    )
    assert empty == []
    later = cal.search(
        start=datetime.datetime(2026, 1, 26, tzinfo=datetime.UTC),
        end=datetime.datetime(2026, 1, 27, tzinfo=datetime.UTC),
        event=True,
    )
    assert [e.icalendar_component["UID"] for e in later] == ["weekly-1"]
    march = cal.search(
        start=datetime.datetime(2026, 3, 1, tzinfo=datetime.UTC),
        end=datetime.datetime(2026, 4, 1, tzinfo=datetime.UTC),
        event=True,
    )
    assert [e.icalendar_component["UID"] for e in march] == ["single"]


def test_sync_tokens_report_changes_and_deletions(dav_server: ApiServer) -> None:
    principal = _client(dav_server).principal()
    cal = principal.make_calendar(name="Sync", cal_id="sync")
    first = cal.save_event(_event("s1", "20260401T090000Z", "20260401T100000Z"))
    cal.save_event(_event("s2", "20260402T090000Z", "20260402T100000Z"))
    objects = cal.objects_by_sync_token(load_objects=True)
    assert len(list(objects)) == 2
    cal.save_event(_event("s3", "20260403T090000Z", "20260403T100000Z"))
    first.delete()
    updated, deleted = objects.sync()
    assert [o.icalendar_component["UID"] for o in updated] == ["s3"]
    assert [str(o.url).rsplit("/", 1)[-1] for o in deleted] == ["s1.ics"]


def test_free_busy_query(dav_server: ApiServer) -> None:
    principal = _client(dav_server).principal()
    cal = principal.make_calendar(name="Busy", cal_id="busy")
    cal.save_event(_event("b1", "20260501T090000Z", "20260501T100000Z"))
    cal.save_event(
        _event("b2", "20260501T120000Z", "20260501T130000Z", extra="TRANSP:TRANSPARENT\r\n")
    )
    answer = cal.freebusy_request(
        datetime.datetime(2026, 5, 1, tzinfo=datetime.UTC),
        datetime.datetime(2026, 5, 2, tzinfo=datetime.UTC),
    )
    text = answer.data if hasattr(answer, "data") else str(answer)
    assert "FREEBUSY;FBTYPE=BUSY:20260501T090000Z/20260501T100000Z" in text
    assert "20260501T120000Z" not in text


# -- raw requests ----------------------------------------------------------------------------


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _auth(who: tuple[str, str] = ALICE) -> dict[str, str]:
    token = base64.b64encode(f"{who[0]}:{who[1]}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def _req(
    http: aiohttp.ClientSession,
    server: ApiServer,
    method: str,
    path: str,
    body: str | bytes = b"",
    *,
    who: tuple[str, str] = ALICE,
    **headers: str,
) -> tuple[int, Mapping[str, str], bytes]:  # fmt: skip
    sent = {**_auth(who), **{k.replace("_", "-"): v for k, v in headers.items()}}
    data = body.encode() if isinstance(body, str) else body
    async with http.request(method, server.base + path, data=data, headers=sent,
                            allow_redirects=False) as response:  # fmt: skip
        return response.status, response.headers.copy(), await response.read()


CAL = "/dav/calendars/alice@example.test/default/"
BOOK = "/dav/addressbooks/alice@example.test/default/"


async def test_stale_etag_and_if_none_match_are_412(
    http: aiohttp.ClientSession, dav_server: ApiServer
) -> None:
    path = CAL + "etag.ics"
    body = _event("etag-1", "20260601T090000Z", "20260601T100000Z")
    status, headers, _ = await _req(http, dav_server, "PUT", path, body, If_None_Match="*")
    assert status == 201
    etag = headers["ETag"]
    status, _, _ = await _req(http, dav_server, "PUT", path, body, If_None_Match="*")
    assert status == 412
    changed = body.replace("Meeting", "Changed")
    status, headers, _ = await _req(http, dav_server, "PUT", path, changed, If_Match=etag)
    assert status == 204 and headers["ETag"] != etag
    status, _, _ = await _req(http, dav_server, "PUT", path, body, If_Match=etag)
    assert status == 412
    status, _, _ = await _req(http, dav_server, "DELETE", path, If_Match=etag)
    assert status == 412
    status, _, got = await _req(http, dav_server, "GET", path)
    assert status == 200 and b"Changed" in got


async def test_calendar_preconditions(http: aiohttp.ClientSession, dav_server: ApiServer) -> None:
    status, _, body = await _req(http, dav_server, "PUT", CAL + "bad.ics", "not a calendar")
    assert status == 403 and b"valid-calendar-data" in body
    event = _event("dup-1", "20260701T090000Z", "20260701T100000Z")
    assert (await _req(http, dav_server, "PUT", CAL + "one.ics", event))[0] == 201
    status, _, body = await _req(http, dav_server, "PUT", CAL + "two.ics", event)
    assert status == 403 and b"no-uid-conflict" in body
    mk = (
        '<?xml version="1.0"?><C:mkcalendar xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">'
        "<D:set><D:prop><D:displayname>Events only</D:displayname>"
        "<C:supported-calendar-component-set>"
        '<C:comp name="VEVENT"/>'
        "</C:supported-calendar-component-set>"
        "</D:prop></D:set></C:mkcalendar>"
    )
    assert (
        await _req(http, dav_server, "MKCALENDAR", "/dav/calendars/alice@example.test/ev/", mk)
    )[0] == 201
    assert (
        await _req(http, dav_server, "MKCALENDAR", "/dav/calendars/alice@example.test/ev/", mk)
    )[0] == 405
    todo = (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:x\r\n"
        "BEGIN:VTODO\r\nUID:t\r\nEND:VTODO\r\nEND:VCALENDAR\r\n"
    )
    status, _, body = await _req(
        http, dav_server, "PUT", "/dav/calendars/alice@example.test/ev/t.ics", todo
    )
    assert status == 403 and b"supported-calendar-component" in body
    status, _, body = await _req(http, dav_server, "PROPFIND", CAL, "", Depth="infinity")
    assert status == 403 and b"propfind-finite-depth" in body


async def test_proppatch_keeps_known_and_dead_properties(
    http: aiohttp.ClientSession, dav_server: ApiServer
) -> None:
    patch = (
        '<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:A="http://apple.com/ns/ical/" '
        'xmlns:X="urn:example:x"><D:set><D:prop><D:displayname>Home</D:displayname>'
        "<A:calendar-color>#FF0000</A:calendar-color><X:custom>kept</X:custom></D:prop></D:set>"
        "</D:propertyupdate>"
    )
    status, _, body = await _req(http, dav_server, "PROPPATCH", CAL, patch)
    assert status == 207 and b"200" in body
    find = (
        '<?xml version="1.0"?><D:propfind xmlns:D="DAV:" xmlns:A="http://apple.com/ns/ical/" '
        'xmlns:X="urn:example:x"><D:prop><D:displayname/><A:calendar-color/><X:custom/>'
        "<X:missing/></D:prop></D:propfind>"
    )
    status, _, body = await _req(http, dav_server, "PROPFIND", CAL, find, Depth="0")
    tree = ET.fromstring(body)
    assert tree.findtext(f".//{{{DAV}}}displayname") == "Home"
    assert tree.findtext(".//{http://apple.com/ns/ical/}calendar-color") == "#FF0000"
    assert tree.findtext(".//{urn:example:x}custom") == "kept"
    statuses = [s.text for s in tree.iter(f"{{{DAV}}}status")]
    assert any("404" in (s or "") for s in statuses)
    protected = (
        '<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:"><D:set><D:prop>'
        "<D:getetag>x</D:getetag><D:displayname>No</D:displayname></D:prop></D:set></D:propertyupdate>"
    )
    status, _, body = await _req(http, dav_server, "PROPPATCH", CAL, protected)
    assert b"403" in body and b"424" in body


async def test_sync_token_errors(http: aiohttp.ClientSession, dav_server: ApiServer) -> None:
    for token in ("garbage", "http://rmail.invalid/sync/nope/1"):
        body = (
            '<?xml version="1.0"?><D:sync-collection xmlns:D="DAV:">'
            f"<D:sync-token>{token}</D:sync-token><D:sync-level>1</D:sync-level>"
            "<D:prop><D:getetag/></D:prop></D:sync-collection>"
        )
        status, _, answer = await _req(http, dav_server, "REPORT", CAL, body)
        assert status == 403 and b"valid-sync-token" in answer


async def test_hostile_xml_and_other_users(
    http: aiohttp.ClientSession, dav_server: ApiServer
) -> None:
    bomb = (
        '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
        '<D:propfind xmlns:D="DAV:"><D:prop>'
        "<D:displayname>&b;</D:displayname></D:prop></D:propfind>"
    )
    assert (await _req(http, dav_server, "PROPFIND", CAL, bomb, Depth="0"))[0] == 400
    assert (await _req(http, dav_server, "PROPFIND", CAL, "<not xml", Depth="0"))[0] == 400
    for method, path in (
        ("PROPFIND", CAL),
        ("GET", CAL + "etag.ics"),
        ("PUT", CAL + "evil.ics"),
        ("DELETE", CAL),
        ("PROPFIND", "/dav/principals/alice@example.test/"),
        ("PROPFIND", BOOK),
    ):
        body = _event("evil", "20260801T090000Z", "20260801T100000Z") if method == "PUT" else ""
        status, _, _ = await _req(http, dav_server, method, path, body, who=BOB, Depth="0")
        assert status == 404, (method, path, status)
    assert (await _req(http, dav_server, "PROPFIND", CAL, "", who=(ALICE[0], "wrong")))[0] == 401
    for path in (
        "/dav/calendars/alice@example.test/..%2F..%2Fx/",
        "/dav/calendars/alice@example.test/a/b/c/d",
    ):
        assert (await _req(http, dav_server, "PROPFIND", path, "", Depth="0"))[0] == 404


async def test_options_advertise_dav_classes(
    http: aiohttp.ClientSession, dav_server: ApiServer
) -> None:
    status, headers, _ = await _req(http, dav_server, "OPTIONS", CAL)
    assert status == 200
    assert "calendar-access" in headers["DAV"] and "addressbook" in headers["DAV"]
    assert "REPORT" in headers["Allow"]


# -- CardDAV ---------------------------------------------------------------------------------

VCARD3 = (
    "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:c3\r\nFN:Carol Three\r\n"
    "EMAIL:carol@example.org\r\nEND:VCARD\r\n"
)
VCARD4 = (
    "BEGIN:VCARD\r\nVERSION:4.0\r\nUID:c4\r\nFN:Dave Four\r\n"
    "EMAIL:dave@example.org\r\nEND:VCARD\r\n"
)


async def test_carddav_vcards_3_and_4(http: aiohttp.ClientSession, dav_server: ApiServer) -> None:
    status, _, body = await _req(
        http,
        dav_server,
        "PROPFIND",
        "/dav/principals/alice@example.test/",
        '<D:propfind xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:carddav">'
        "<D:prop><C:addressbook-home-set/></D:prop></D:propfind>",
        Depth="0",
    )
    assert b"/dav/addressbooks/alice@example.test/" in body
    assert (await _req(http, dav_server, "PUT", BOOK + "c3.vcf", VCARD3))[0] == 201
    assert (await _req(http, dav_server, "PUT", BOOK + "c4.vcf", VCARD4))[0] == 201
    status, _, body = await _req(
        http, dav_server, "PUT", BOOK + "bad.vcf", "BEGIN:VCARD\r\nVERSION:2.1\r\nEND:VCARD\r\n"
    )
    assert status == 415 and b"supported-address-data" in body
    status, _, body = await _req(http, dav_server, "PUT", BOOK + "x.vcf", "hello")
    assert status == 403 and b"valid-address-data" in body
    query = (
        '<?xml version="1.0"?><C:addressbook-query xmlns:D="DAV:" '
        'xmlns:C="urn:ietf:params:xml:ns:carddav">'
        "<D:prop><D:getetag/><C:address-data/></D:prop><C:filter>"
        '<C:prop-filter name="EMAIL"><C:text-match match-type="contains">dave@</C:text-match>'
        "</C:prop-filter></C:filter></C:addressbook-query>"
    )
    status, _, body = await _req(http, dav_server, "REPORT", BOOK, query, Depth="1")
    assert status == 207 and b"Dave Four" in body and b"Carol" not in body
    multiget = (
        '<?xml version="1.0"?><C:addressbook-multiget xmlns:D="DAV:" '
        'xmlns:C="urn:ietf:params:xml:ns:carddav">'
        f"<D:prop><D:getetag/><C:address-data/></D:prop><D:href>{BOOK}c3.vcf</D:href>"
        f"<D:href>{BOOK}missing.vcf</D:href></C:addressbook-multiget>"
    )
    status, _, body = await _req(http, dav_server, "REPORT", BOOK, multiget)
    assert b"Carol Three" in body and b"404" in body
    status, _, body = await _req(http, dav_server, "GET", BOOK + "c4.vcf")
    assert status == 200 and body.decode() == VCARD4


async def test_limit_recurrence_set_keeps_the_master_and_the_overrides_in_range(
    http: aiohttp.ClientSession, dav_server: ApiServer
) -> None:
    """RFC 4791 §9.6.6: overrides outside the range are left out; the master always stays.

    Weekly from 5 January; the 19 January instance is moved to the afternoon, the 26 January
    one to 3 February (its own time is outside a January range, the time it replaces is in).
    """
    moved_out = WEEKLY.replace(
        "END:VCALENDAR",
        "BEGIN:VEVENT\nUID:weekly-1\nRECURRENCE-ID:20260126T100000Z\n"
        "DTSTART:20260203T100000Z\nDTEND:20260203T110000Z\nSUMMARY:Pushed\nEND:VEVENT\n"
        "END:VCALENDAR",
    ).replace("\n", "\r\n")
    path = CAL + "limited.ics"
    status, _, _ = await _req(http, dav_server, "PUT", path, moved_out)
    assert status in (201, 204)

    async def limited(start: str, end: str) -> list[str]:
        body = (
            f'<?xml version="1.0"?><C:calendar-multiget xmlns:D="DAV:" xmlns:C="{C}">'
            f'<D:prop><C:calendar-data><C:limit-recurrence-set start="{start}" end="{end}"/>'
            f"</C:calendar-data></D:prop><D:href>{path}</D:href></C:calendar-multiget>"
        )
        status, _, raw = await _req(http, dav_server, "REPORT", CAL, body, Depth="1")
        assert status == 207, raw
        data = ET.fromstring(raw).find(f".//{{{C}}}calendar-data")
        assert data is not None and data.text
        return [
            line.split(":", 1)[1]
            for line in data.text.replace("\r\n", "\n").split("\n")
            if line.startswith("SUMMARY:")
        ]

    assert await limited("20260101T000000Z", "20260110T000000Z") == ["Weekly"]
    assert await limited("20260119T000000Z", "20260120T000000Z") == ["Weekly", "Moved"]
    # Its original slot (26 January) is in range, so "Pushed" impacts it.
    assert await limited("20260126T000000Z", "20260127T000000Z") == ["Weekly", "Pushed"]
    # Its new time (3 February) is in range too.
    assert await limited("20260203T000000Z", "20260204T000000Z") == ["Weekly", "Pushed"]
    assert await limited("20260101T000000Z", "20260301T000000Z") == ["Weekly", "Moved", "Pushed"]
    # Without the element the object comes back as stored.
    body = (
        f'<?xml version="1.0"?><C:calendar-multiget xmlns:D="DAV:" xmlns:C="{C}">'
        f"<D:prop><C:calendar-data/></D:prop><D:href>{path}</D:href></C:calendar-multiget>"
    )
    status, _, raw = await _req(http, dav_server, "REPORT", CAL, body, Depth="1")
    assert b"SUMMARY:Pushed" in raw and b"SUMMARY:Moved" in raw


async def test_collection_properties_quota_reports_and_tokens(
    http: aiohttp.ClientSession, dav_server: ApiServer
) -> None:
    body = (
        '<?xml version="1.0"?><D:propfind xmlns:D="DAV:" xmlns:CS="http://calendarserver.org/ns/"'
        f' xmlns:C="{C}"><D:prop><D:quota-used-bytes/><D:quota-available-bytes/>'
        "<D:supported-report-set/><CS:getctag/><D:sync-token/>"
        "<C:supported-calendar-component-set/></D:prop></D:propfind>"
    )

    async def props() -> ET.Element:
        status, _, raw = await _req(http, dav_server, "PROPFIND", CAL, body, Depth="0")
        assert status == 207, raw
        return ET.fromstring(raw)

    before = await props()
    used = int(before.findtext(f".//{{{DAV}}}quota-used-bytes") or "-1")
    free = int(before.findtext(f".//{{{DAV}}}quota-available-bytes") or "-1")
    assert used >= 0 and free > 0
    reports = {child.tag for node in before.iter(f"{{{DAV}}}report") for child in node}
    assert {
        f"{{{C}}}calendar-query",
        f"{{{C}}}calendar-multiget",
        f"{{{C}}}free-busy-query",
        f"{{{DAV}}}sync-collection",
    } <= reports
    kinds = {n.get("name") for n in before.iter(f"{{{C}}}comp")}
    assert {"VEVENT", "VTODO", "VJOURNAL"} <= kinds

    event = _event("quota-1", "20260701T090000Z", "20260701T100000Z", summary="x" * 2000)
    status, _, _ = await _req(http, dav_server, "PUT", CAL + "quota-1.ics", event)
    assert status == 201
    after = await props()
    assert int(after.findtext(f".//{{{DAV}}}quota-used-bytes") or "-1") >= used + 2000
    for tag in ("{http://calendarserver.org/ns/}getctag", f"{{{DAV}}}sync-token"):
        assert before.findtext(f".//{tag}") != after.findtext(f".//{tag}"), tag


async def test_move_between_calendars_keeps_the_object_and_sends_nothing(
    http: aiohttp.ClientSession, dav_server: ApiServer
) -> None:
    """MOVE is how Apple Calendar and others move an event to another calendar: with
    scheduling on, PUT there then DELETE here would be a second scheduling object (403)."""
    home = "/dav/calendars/alice@example.test/"
    mk = (
        f'<?xml version="1.0"?><C:mkcalendar xmlns:D="DAV:" xmlns:C="{C}"><D:set><D:prop>'
        "<D:displayname>{name}</D:displayname><C:supported-calendar-component-set>"
        '<C:comp name="{comp}"/></C:supported-calendar-component-set></D:prop></D:set>'
        "</C:mkcalendar>"
    )
    for name, comp in (("work", "VEVENT"), ("chores", "VTODO")):
        body = mk.format(name=name, comp=comp)
        assert (await _req(http, dav_server, "MKCALENDAR", f"{home}{name}/", body))[0] == 201
    invited = _event(
        "moving-1",
        "20260801T090000Z",
        "20260801T100000Z",
        extra=f"ORGANIZER:mailto:{ALICE[0]}\r\nATTENDEE;PARTSTAT=NEEDS-ACTION:mailto:{BOB[0]}\r\n",
    )
    status, headers, _ = await _req(http, dav_server, "PUT", CAL + "moving.ics", invited)
    assert status == 201
    bob_mail = len(messages(dav_server.store, BOB[0]))
    _, before, data = await _req(http, dav_server, "GET", CAL + "moving.ics")

    # PUT into another calendar first, as a client without MOVE would: refused.
    status, _, body = await _req(http, dav_server, "PUT", f"{home}work/moving.ics", data)
    assert status == 403 and b"unique-scheduling-object-resource" in body

    here = dav_server.base + f"{home}work/moved.ics"
    status, headers, _ = await _req(http, dav_server, "MOVE", CAL + "moving.ics", Destination=here)
    assert status == 201
    assert headers["ETag"] == before["ETag"]
    assert headers["Schedule-Tag"] == before["Schedule-Tag"]
    assert (await _req(http, dav_server, "GET", CAL + "moving.ics"))[0] == 404
    status, after, moved = await _req(http, dav_server, "GET", f"{home}work/moved.ics")
    assert status == 200 and moved == data and after["ETag"] == before["ETag"]
    assert len(messages(dav_server.store, BOB[0])) == bob_mail  # no invitation, no cancel

    # A rename in the same calendar; Overwrite: F onto an existing name; wrong component;
    # another user's calendar; a collection that does not exist; a UID already there.
    other = _event("moving-2", "20260802T090000Z", "20260802T100000Z")
    assert (await _req(http, dav_server, "PUT", f"{home}work/other.ics", other))[0] == 201
    status, _, _ = await _req(
        http, dav_server, "MOVE", f"{home}work/moved.ics",
        Destination=f"{home}work/renamed.ics",
    )  # fmt: skip
    assert status == 201
    status, _, _ = await _req(
        http, dav_server, "MOVE", f"{home}work/renamed.ics",
        Destination=f"{home}work/other.ics", Overwrite="F",
    )  # fmt: skip
    assert status == 412
    status, _, body = await _req(
        http, dav_server, "MOVE", f"{home}work/renamed.ics", Destination=f"{home}chores/x.ics"
    )
    assert status == 403 and b"supported-calendar-component" in body
    status, _, _ = await _req(
        http, dav_server, "MOVE", f"{home}work/renamed.ics",
        Destination="/dav/calendars/bob@example.test/default/stolen.ics",
    )  # fmt: skip
    assert status == 403
    status, _, _ = await _req(
        http, dav_server, "MOVE", f"{home}work/renamed.ics", Destination=f"{home}nowhere/x.ics"
    )
    assert status == 409
    assert (await _req(http, dav_server, "PUT", CAL + "twin.ics", other))[0] == 201
    status, _, body = await _req(
        http, dav_server, "MOVE", CAL + "twin.ics", Destination=f"{home}work/twin.ics"
    )
    assert status == 403 and b"no-uid-conflict" in body
    # Overwrite (the default) replaces: 204, and the replaced name's object is gone.
    status, _, _ = await _req(
        http, dav_server, "MOVE", f"{home}work/renamed.ics", Destination=f"{home}work/other.ics"
    )
    assert status == 204
    _, _, replaced = await _req(http, dav_server, "GET", f"{home}work/other.ics")
    assert b"UID:moving-1" in replaced
    assert (await _req(http, dav_server, "GET", f"{home}work/renamed.ics"))[0] == 404


async def test_move_of_a_vcard(http: aiohttp.ClientSession, dav_server: ApiServer) -> None:
    card = "BEGIN:VCARD\r\nVERSION:4.0\r\nUID:mover\r\nFN:Mover\r\nEND:VCARD\r\n"
    assert (await _req(http, dav_server, "PUT", BOOK + "mover.vcf", card))[0] == 201
    status, _, _ = await _req(
        http, dav_server, "MOVE", BOOK + "mover.vcf", Destination=BOOK + "moved.vcf"
    )
    assert status == 201
    assert (await _req(http, dav_server, "GET", BOOK + "moved.vcf"))[2] == card.encode()
    assert (await _req(http, dav_server, "GET", BOOK + "mover.vcf"))[0] == 404
