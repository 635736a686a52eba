"""WebDAV class 2 on CalDAV/CardDAV against a running server, with raw aiohttp requests:
LOCK, UNLOCK, the 423 of a change without the token, lock discovery and timeouts."""

from __future__ import annotations

import asyncio
import base64
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterator, Mapping

import aiohttp
import pytest
from api_helpers import ApiServer, start_api_server

ALICE = ("alice@example.test", "alice-pw")
BOB = ("bob@example.test", "bob-pw")
DAV = "DAV:"
CAL = "/dav/calendars/alice@example.test/default/"
BOOK = "/dav/addressbooks/alice@example.test/default/"
LOCKINFO = (
    '<?xml version="1.0" encoding="utf-8"?><D:lockinfo xmlns:D="DAV:">'
    "<D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype>"
    "<D:owner><D:href>mailto:alice@example.test</D:href></D:owner></D:lockinfo>"
)


def _event(uid: str, summary: str = "Meeting") -> str:
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\nBEGIN:VEVENT\r\n"
        f"UID:{uid}\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:20260301T090000Z\r\n"
        f"DTEND:20260301T100000Z\r\nSUMMARY:{summary}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )


@pytest.fixture(scope="module")
def dav_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    users = {ALICE[0]: (ALICE[1], False), BOB[0]: (BOB[1], False)}
    with start_api_server(tmp_path_factory.mktemp("davlocks"), users) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def _req(
    http: aiohttp.ClientSession,
    server: ApiServer,
    method: str,
    path: str,
    body: str = "",
    *,
    who: tuple[str, str] = ALICE,
    **headers: str,
) -> tuple[int, Mapping[str, str], bytes]:
    token = base64.b64encode(f"{who[0]}:{who[1]}".encode()).decode()
    sent = {"Authorization": f"Basic {token}"}
    sent.update({k.replace("_", "-"): v for k, v in headers.items()})
    async with http.request(
        method, server.base + path, data=body.encode(), headers=sent
    ) as response:
        return response.status, response.headers.copy(), await response.read()


async def _lock(http: aiohttp.ClientSession, server: ApiServer, path: str, **headers: str) -> str:
    status, headers_back, body = await _req(http, server, "LOCK", path, LOCKINFO, **headers)
    assert status == 200, body
    token = headers_back["Lock-Token"].strip("<>")
    assert token.startswith("opaquelocktoken:")
    assert ET.fromstring(body).findtext(f".//{{{DAV}}}locktoken/{{{DAV}}}href") == token
    return token


async def test_options_advertise_class_2_and_calendar_scheduling(
    http: aiohttp.ClientSession, dav_server: ApiServer
) -> None:
    status, headers, _ = await _req(http, dav_server, "OPTIONS", CAL)
    assert status == 200
    classes = [c.strip() for c in headers["DAV"].split(",")]
    assert {"1", "2", "3", "calendar-access", "addressbook"} <= set(classes)
    # RFC 6638 §2: calendar-auto-schedule; calendar-schedule is its drafts' name.
    assert {"calendar-auto-schedule", "calendar-schedule"} <= set(classes)
    assert "LOCK" in headers["Allow"] and "UNLOCK" in headers["Allow"]


async def test_locked_event_needs_the_token_to_change(
    http: aiohttp.ClientSession, dav_server: ApiServer
) -> None:
    path = CAL + "locked.ics"
    assert (await _req(http, dav_server, "PUT", path, _event("locked-1")))[0] == 201
    token = await _lock(http, dav_server, path, Depth="0")
    changed = _event("locked-1", "Changed")
    status, _, body = await _req(http, dav_server, "PUT", path, changed)
    assert status == 423 and b"lock-token-submitted" in body
    assert (await _req(http, dav_server, "DELETE", path))[0] == 423
    status, _, _ = await _req(http, dav_server, "PUT", path, changed, If="(<opaquelocktoken:x>)")
    assert status == 412  # an If header that does not hold
    status, _, _ = await _req(http, dav_server, "PUT", path, changed, If=f"(<{token}>)")
    assert status == 204
    status, _, got = await _req(http, dav_server, "GET", path)
    assert status == 200 and b"Changed" in got
    # The lock is visible to PROPFIND.
    find = (
        '<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:lockdiscovery/>'
        "<D:supportedlock/></D:prop></D:propfind>"
    )
    status, _, body = await _req(http, dav_server, "PROPFIND", path, find, Depth="0")
    tree = ET.fromstring(body)
    assert status == 207
    assert tree.findtext(f".//{{{DAV}}}activelock/{{{DAV}}}locktoken/{{{DAV}}}href") == token
    assert tree.find(f".//{{{DAV}}}supportedlock/{{{DAV}}}lockentry") is not None
    # A second exclusive lock conflicts.
    status, _, body = await _req(http, dav_server, "LOCK", path, LOCKINFO, Depth="0")
    assert status == 423 and b"no-conflicting-lock" in body
    # UNLOCK with a wrong token is refused; with the right one the event is free again.
    status, _, _ = await _req(http, dav_server, "UNLOCK", path, Lock_Token="<opaquelocktoken:x>")
    assert status == 409
    assert (await _req(http, dav_server, "UNLOCK", path, Lock_Token=f"<{token}>"))[0] == 204
    assert (await _req(http, dav_server, "PUT", path, _event("locked-1", "Free")))[0] == 204
    assert (await _req(http, dav_server, "DELETE", path))[0] == 204


async def test_locked_collection_guards_new_members_and_properties(
    http: aiohttp.ClientSession, dav_server: ApiServer
) -> None:
    token = await _lock(http, dav_server, CAL)  # Depth: infinity
    path = CAL + "new-under-lock.ics"
    assert (await _req(http, dav_server, "PUT", path, _event("new-1")))[0] == 423
    status, _, _ = await _req(http, dav_server, "PUT", path, _event("new-1"), If=f"(<{token}>)")
    assert status == 201
    patch = (
        '<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:"><D:set><D:prop>'
        "<D:displayname>Locked</D:displayname></D:prop></D:set></D:propertyupdate>"
    )
    assert (await _req(http, dav_server, "PROPPATCH", CAL, patch))[0] == 423
    status, _, _ = await _req(http, dav_server, "PROPPATCH", CAL, patch, If=f"(<{token}>)")
    assert status == 207
    # The deep lock covers the member: deleting it needs the token as well.
    assert (await _req(http, dav_server, "DELETE", path))[0] == 423
    tagged = f"<{dav_server.base}{CAL}> (<{token}>)"
    assert (await _req(http, dav_server, "DELETE", path, If=tagged))[0] == 204
    assert (await _req(http, dav_server, "UNLOCK", CAL, Lock_Token=f"<{token}>"))[0] == 204


async def test_vcards_lock_too(http: aiohttp.ClientSession, dav_server: ApiServer) -> None:
    path = BOOK + "carol.vcf"
    card = "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:carol\r\nFN:Carol\r\nEND:VCARD\r\n"
    assert (await _req(http, dav_server, "PUT", path, card))[0] == 201
    token = await _lock(http, dav_server, path, Depth="0")
    assert (await _req(http, dav_server, "PUT", path, card.replace("Carol", "C")))[0] == 423
    assert (await _req(http, dav_server, "UNLOCK", path, Lock_Token=f"<{token}>"))[0] == 204
    assert (await _req(http, dav_server, "DELETE", path))[0] == 204


async def test_another_user_can_neither_lock_nor_unlock(
    http: aiohttp.ClientSession, dav_server: ApiServer
) -> None:
    path = CAL + "mine.ics"
    assert (await _req(http, dav_server, "PUT", path, _event("mine-1")))[0] == 201
    token = await _lock(http, dav_server, path, Depth="0")
    status, _, _ = await _req(http, dav_server, "UNLOCK", path, who=BOB, Lock_Token=f"<{token}>")
    assert status == 404
    assert (await _req(http, dav_server, "LOCK", path, LOCKINFO, who=BOB))[0] == 404
    assert (await _req(http, dav_server, "PUT", path, _event("mine-1")))[0] == 423
    assert (await _req(http, dav_server, "UNLOCK", path, Lock_Token=f"<{token}>"))[0] == 204


async def test_unmapped_and_non_lockable_resources(
    http: aiohttp.ClientSession, dav_server: ApiServer
) -> None:
    assert (await _req(http, dav_server, "LOCK", CAL + "nothing.ics", LOCKINFO))[0] == 404
    home = "/dav/calendars/alice@example.test/"
    assert (await _req(http, dav_server, "LOCK", home, LOCKINFO))[0] == 405
    assert (await _req(http, dav_server, "LOCK", CAL, "<D:x xmlns:D='DAV:'/>"))[0] == 400


async def test_lock_timeout_refresh_and_expiry(
    http: aiohttp.ClientSession, dav_server: ApiServer
) -> None:
    path = CAL + "brief.ics"
    assert (await _req(http, dav_server, "PUT", path, _event("brief-1")))[0] == 201
    status, headers, body = await _req(
        http, dav_server, "LOCK", path, LOCKINFO, Depth="0", Timeout="Second-600"
    )
    assert status == 200
    assert ET.fromstring(body).findtext(f".//{{{DAV}}}timeout") == "Second-600"
    token = headers["Lock-Token"].strip("<>")
    # A refresh (empty body, token in If) takes the new timeout.
    status, _, body = await _req(
        http, dav_server, "LOCK", path, If=f"(<{token}>)", Timeout="Second-1"
    )
    assert status == 200
    assert ET.fromstring(body).findtext(f".//{{{DAV}}}timeout") in ("Second-0", "Second-1")
    assert (await _req(http, dav_server, "PUT", path, _event("brief-1", "Early")))[0] == 423
    await asyncio.sleep(1.2)  # the lock's own one-second timeout, not a readiness wait
    assert (await _req(http, dav_server, "PUT", path, _event("brief-1", "Late")))[0] == 204
    assert (await _req(http, dav_server, "UNLOCK", path, Lock_Token=f"<{token}>"))[0] == 409
