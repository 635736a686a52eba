"""The webmail calendar in a real browser (Playwright + Chromium) against ``rmail serve``:
events made in the pages are seen over CalDAV (the ``caldav`` library), recurring events
are expanded in the grid, edits bump SEQUENCE, visibility persists, forms need the CSRF
token, another user's event is not found, and an invitation in mail can be accepted."""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import re
import shutil
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import aiohttp
import caldav
import pytest
from api_helpers import ApiServer, start_api_server
from caldav.elements import ical
from mx_peer import refused_port
from smtp_helpers import wait_until

from rmail.delivery import Delivery
from rmail.store.queue import Queue

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

ALICE = ("alice@example.test", "alice-pw")
BOB = ("bob@example.test", "bob-pw")
MONTH = "2026-03-10"

pytestmark = pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="no Chromium")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    users = {ALICE[0]: (ALICE[1], False), BOB[0]: (BOB[1], False)}
    # Mail for remote.test waits in the queue (its "MX" refuses connections), where the
    # tests find the invitations the scheduling service sent.
    refused = {"routes": {"remote.test": f"127.0.0.1:{refused_port()}"}}
    with start_api_server(tmp_path_factory.mktemp("wmcal"), users, relay=refused) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


def _login(browser: Any, server: ApiServer, who: tuple[str, str] = ALICE) -> Any:
    """A new browser context, logged in through the login form; returns its page."""
    context = browser.new_context()
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto(f"{server.base}/webmail/login")
    page.fill("input[name=username]", who[0])
    page.fill("input[name=password]", who[1])
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/webmail/mail/INBOX.*"))
    return page


@pytest.fixture
def alice(browser: Any, server: ApiServer) -> Iterator[Any]:
    page = _login(browser, server, ALICE)
    yield page
    page.context.close()


def _month(page: Any, server: ApiServer, date: str = MONTH) -> None:
    page.goto(f"{server.base}/webmail/calendar/month?date={date}")
    page.wait_for_selector(".cal-grid.month")


def _create(page: Any, **fields: str) -> None:
    """Fill the month view's new-event form and submit it."""
    if not page.is_visible("form.event-form input[name=title]"):
        page.click("#new-event > summary")
    form = page.locator("#new-event form.event-form")
    for name, value in fields.items():
        if name == "all_day":
            form.locator("input[name=all_day]").check()
        elif name in ("repeat", "calendar"):
            form.locator(f"select[name={name}]").select_option(value)
        else:
            form.locator(f"[name={name}]").fill(value)
    form.locator("button[type=submit]").click()
    page.wait_for_load_state()


def _dav_calendar(server: ApiServer, who: tuple[str, str] = ALICE, name: str = "default") -> Any:
    client = caldav.DAVClient(url=server.base + "/dav/", username=who[0], password=who[1])
    for calendar in client.principal().calendars():
        if str(calendar.url).rstrip("/").endswith("/" + name):
            return calendar
    raise AssertionError(f"no calendar {name}")


def _dav_event(server: ApiServer, uid: str, name: str = "default") -> Any:
    return _dav_calendar(server, name=name).event_by_uid(uid).icalendar_component


def test_event_made_in_the_month_view_is_seen_over_caldav(alice: Any, server: ApiServer) -> None:
    _month(alice, server)
    _create(
        alice,
        title="Dentist",
        start_date="2026-03-12",
        start_time="14:00",
        end_date="2026-03-12",
        end_time="15:00",
        location="Main street 1",
        reminder="30",
    )
    event = alice.locator(
        '.cal-grid.month td[data-date="2026-03-12"] .cal-event', has_text="Dentist"
    )
    assert event.count() == 1
    uid = event.get_attribute("data-uid")
    assert uid and event.get_attribute("data-calendar") == "default"
    assert event.get_attribute("href").startswith(server.base + "/webmail/calendar/event/")

    component = _dav_event(server, uid)
    assert str(component["SUMMARY"]) == "Dentist"
    assert str(component["LOCATION"]) == "Main street 1"
    assert component["DTSTART"].dt == datetime.datetime(2026, 3, 12, 14, tzinfo=datetime.UTC)
    assert int(component["SEQUENCE"]) == 0
    assert component.get("DTSTAMP") is not None
    alarm = next(iter(component.walk("VALARM")))
    assert alarm["TRIGGER"].dt == -datetime.timedelta(minutes=30)


def test_recurring_event_shows_every_occurrence_in_each_view(alice: Any, server: ApiServer) -> None:
    _month(alice, server)
    _create(
        alice,
        title="Standup",
        start_date="2026-03-02",
        start_time="09:30",
        end_time="09:45",
        repeat="weekly",
        count="4",
    )
    occurrences = alice.locator(".cal-grid.month .cal-event", has_text="Standup")
    assert occurrences.count() == 4
    days = [
        occurrences.nth(i).locator("xpath=ancestor::td").get_attribute("data-date")
        for i in range(4)
    ]
    assert days == ["2026-03-02", "2026-03-09", "2026-03-16", "2026-03-23"]
    uid = occurrences.first.get_attribute("data-uid")
    assert {occurrences.nth(i).get_attribute("data-uid") for i in range(4)} == {uid}

    alice.goto(f"{server.base}/webmail/calendar/week?date=2026-03-18")
    assert alice.locator(".cal-grid.week .cal-event", has_text="Standup").count() == 1
    alice.goto(f"{server.base}/webmail/calendar/day?date=2026-03-23")
    assert alice.locator(".cal-grid.day .cal-event", has_text="Standup").count() == 1
    alice.goto(f"{server.base}/webmail/calendar/day?date=2026-03-30")
    assert alice.locator(".cal-grid.day .cal-event", has_text="Standup").count() == 0
    alice.goto(f"{server.base}/webmail/calendar/agenda?date=2026-03-01")
    assert alice.locator(".agenda-list .cal-event", has_text="Standup").count() == 4
    # The next month has none (COUNT=4 ends in March); prev/next links are absolute.
    _month(alice, server)
    next_href = alice.get_attribute("a.cal-next", "href")
    assert next_href == f"{server.base}/webmail/calendar/month?date=2026-04-10"
    alice.click("a.cal-next")
    assert alice.locator(".cal-grid.month .cal-event", has_text="Standup").count() == 0
    assert "RRULE" in str(_dav_event(server, uid).to_ical())


def test_edit_bumps_the_sequence_and_delete_removes_the_event(
    alice: Any, server: ApiServer
) -> None:
    _month(alice, server)
    _create(alice, title="Lunch", start_date="2026-03-20", start_time="12:00", end_time="13:00")
    alice.click(".cal-grid.month .cal-event:has-text('Lunch')")
    detail = alice.locator(".event-detail")
    uid = detail.get_attribute("data-uid")
    assert detail.get_attribute("data-calendar") == "default"
    alice.click(".edit-event > summary")
    form = alice.locator(".edit-event form.event-form")
    form.locator("[name=title]").fill("Long lunch")
    form.locator("[name=end_time]").fill("14:30")
    form.locator("[name=attendees]").fill("carol@remote.test, dave@remote.test")
    form.locator("button.event-save").click()
    alice.wait_for_selector(".event-detail .event-title:has-text('Long lunch')")
    assert alice.get_attribute(".event-detail", "data-sequence") == "1"

    component = _dav_event(server, uid)
    assert str(component["SUMMARY"]) == "Long lunch"
    assert int(component["SEQUENCE"]) == 1
    assert component["DTEND"].dt == datetime.datetime(2026, 3, 20, 14, 30, tzinfo=datetime.UTC)
    attendees = {str(a).lower(): a.params["PARTSTAT"] for a in component["ATTENDEE"]}
    assert attendees == {
        "mailto:carol@remote.test": "NEEDS-ACTION",
        "mailto:dave@remote.test": "NEEDS-ACTION",
    }
    assert str(component["ORGANIZER"]).lower() == "mailto:alice@example.test"
    # A scheduling object resource, like one saved over CalDAV: it has a Schedule-Tag.
    event = _dav_calendar(server).event_by_uid(uid)
    tag = event.client.request(str(event.url), "GET").headers.get("Schedule-Tag")
    assert tag and tag.startswith('"')
    # The scheduling service mails the invitation to both (remote: through the queue).
    _wait_for_itip(server, "REQUEST", {"carol@remote.test", "dave@remote.test"})

    alice.click("button.event-delete")
    alice.wait_for_selector(".cal-grid.month")
    assert alice.locator(f'.cal-event[data-uid="{uid}"]').count() == 0
    with pytest.raises(caldav.lib.error.NotFoundError):
        _dav_event(server, uid)
    _wait_for_itip(server, "CANCEL", {"carol@remote.test", "dave@remote.test"})


def _wait_for_itip(server: ApiServer, method: str, recipients: set[str]) -> None:
    """An iMIP message of ``method`` to exactly ``recipients`` waits in the relay queue."""
    queue = Queue(server.store.root)

    def found() -> bool:
        for entry in queue.entries():
            message = queue.message(entry.id)
            addresses = {r.address for r in entry.recipients}
            if f"METHOD:{method}".encode() in message and addresses == recipients:
                return True
        return False

    wait_until(found, 15, f"an iMIP {method} to {sorted(recipients)} in the queue")


def test_hidden_calendar_stays_hidden_across_page_loads(alice: Any, server: ApiServer) -> None:
    _month(alice, server)
    alice.click(".cal-tools > summary:has-text('New calendar')")
    alice.fill(".cal-tools input[name=title]", "Work")
    alice.click(".cal-tools button:has-text('Create')")
    row = alice.locator(".cal-row", has_text="Work")
    work = row.get_attribute("data-calendar")
    assert work and work.startswith("work-") and row.get_attribute("data-visible") == "true"
    _create(
        alice,
        title="Review",
        start_date="2026-03-17",
        start_time="10:00",
        end_time="11:00",
        calendar=work,
    )
    assert alice.locator(f'.cal-event[data-calendar="{work}"]', has_text="Review").count() == 1
    # The colour is the calendar's CalDAV colour, served to the page as CSS.
    row.locator(".cal-settings > summary").click()
    row.locator("input[type=color]").fill("#aa3300")
    row.locator("button:has-text('Save')").click()
    css = alice.request.get(alice.get_attribute("link[href*='colors.css']", "href")).text()
    assert f'[data-calendar="{work}"] {{ --cal-color: #aa3300; }}' in css
    color = ical.CalendarColor()
    props = _dav_calendar(server, name=work).get_properties([color])
    assert props[color.tag].upper().startswith("#AA3300")

    alice.locator(f'.cal-row[data-calendar="{work}"] button.cal-toggle').click()
    hidden = f'.cal-row[data-calendar="{work}"][data-visible="false"]'
    alice.wait_for_selector(hidden)
    assert alice.locator(f'.cal-event[data-calendar="{work}"]').count() == 0
    assert alice.locator('.cal-row[data-calendar="default"][data-visible="true"]').count() == 1
    # A fresh load, and another view: still hidden.
    alice.goto(f"{server.base}/webmail/calendar/week?date=2026-03-17")
    assert alice.locator(hidden).count() == 1
    assert alice.locator(f'.cal-event[data-calendar="{work}"]').count() == 0
    alice.locator(f'.cal-row[data-calendar="{work}"] button.cal-toggle').click()
    alice.wait_for_selector(f'.cal-row[data-calendar="{work}"][data-visible="true"]')
    assert alice.locator(f'.cal-event[data-calendar="{work}"]', has_text="Review").count() == 1


async def _webmail_session(http: aiohttp.ClientSession, base: str, who: tuple[str, str]) -> None:
    async with http.post(
        base + "/webmail/login",
        data={"username": who[0], "password": who[1]},
        allow_redirects=False,
    ) as response:
        assert response.status == 303


def test_a_post_without_the_csrf_token_is_refused(server: ApiServer) -> None:
    async def run() -> None:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            await _webmail_session(http, server.base, ALICE)
            fields = {"title": "Forged", "start_date": "2026-03-05", "start_time": "10:00"}
            for path in ("/events", "/calendars", "/invitation"):
                async with http.post(
                    server.base + "/webmail/calendar" + path, data=fields
                ) as response:
                    assert response.status == 403, path
            async with http.post(
                server.base + "/webmail/calendar/events", data={**fields, "csrf": "wrong"}
            ) as response:
                assert response.status == 403
            async with http.get(server.base + "/webmail/calendar/month?date=2026-03-05") as got:
                page = await got.text()
            assert "Forged" not in page
            token = re.search(r'name="csrf" value="([^"]+)"', page)
            assert token is not None
            async with http.post(
                server.base + "/webmail/calendar/events",
                data={**fields, "csrf": token.group(1)},
                allow_redirects=False,
            ) as response:
                assert response.status == 303

    # In a thread of its own: Playwright's sync API keeps an event loop in this one.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()


def test_another_users_event_is_not_found(alice: Any, browser: Any, server: ApiServer) -> None:
    _month(alice, server)
    _create(alice, title="Private", start_date="2026-03-25", start_time="08:00")
    alice.click(".cal-event:has-text('Private')")
    url = alice.url
    assert "/webmail/calendar/event/default/" in url
    bob = _login(browser, server, BOB)
    try:
        response = bob.goto(url)
        assert response.status == 404
        bob.goto(f"{server.base}/webmail/calendar/month?date={MONTH}")
        assert bob.locator(".cal-event").count() == 0
        csrf = bob.get_attribute("input[name=csrf]", "value")
        posted = bob.request.post(url, form={"csrf": csrf, "action": "delete"})
        assert posted.status == 404
    finally:
        bob.context.close()
    alice.goto(url)
    assert alice.locator(".event-detail .event-title").inner_text() == "Private"


INVITE = """BEGIN:VCALENDAR\r
VERSION:2.0\r
PRODID:-//test//EN\r
METHOD:REQUEST\r
BEGIN:VEVENT\r
UID:invite-42@remote.test\r
DTSTAMP:20260301T080000Z\r
DTSTART:20260318T150000Z\r
DTEND:20260318T160000Z\r
SEQUENCE:0\r
SUMMARY:Project kick-off\r
LOCATION:Room 4\r
ORGANIZER;CN=Olga:mailto:olga@remote.test\r
ATTENDEE;PARTSTAT=ACCEPTED:mailto:olga@remote.test\r
ATTENDEE;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:alice@example.test\r
END:VEVENT\r
END:VCALENDAR\r
"""


def test_an_invitation_in_mail_is_accepted_into_the_calendar(alice: Any, server: ApiServer) -> None:
    message = EmailMessage()
    message["From"] = "Olga <olga@remote.test>"
    message["To"] = ALICE[0]
    message["Subject"] = "Invitation: Project kick-off"
    message["Message-ID"] = "<invite-42@remote.test>"
    message.set_content("You are invited to the project kick-off.")
    message.add_alternative(INVITE.encode(), "text", "calendar", params={"method": "REQUEST"})
    report = Delivery(server.store).deliver_sync(message.as_bytes(), [ALICE[0]], "olga@remote.test")
    assert report.ok

    alice.goto(f"{server.base}/webmail/mail/INBOX")
    alice.click("a.message-link:has-text('Project kick-off')")
    invitation = alice.locator("section.invitation")
    assert invitation.get_attribute("data-uid") == "invite-42@remote.test"
    assert "Room 4" in invitation.inner_text()
    alice.click("button.invite-accept")
    alice.wait_for_selector('.event-detail[data-uid="invite-42@remote.test"]')
    assert alice.get_attribute(".my-partstat", "data-partstat") == "ACCEPTED"
    _wait_for_itip(server, "REPLY", {"olga@remote.test"})

    _month(alice, server)
    event = alice.locator('td[data-date="2026-03-18"] .cal-event[data-uid="invite-42@remote.test"]')
    assert event.count() == 1
    component = _dav_event(server, "invite-42@remote.test")
    partstats = {str(a).lower(): a.params.get("PARTSTAT") for a in component["ATTENDEE"]}
    assert partstats["mailto:alice@example.test"] == "ACCEPTED"
    assert str(component["ORGANIZER"]).lower() == "mailto:olga@remote.test"

    # The message now says so; answering again changes the answer in place.
    alice.goto(f"{server.base}/webmail/mail/INBOX")
    alice.click("a.message-link:has-text('Project kick-off')")
    assert alice.get_attribute("section.invitation", "data-partstat") == "ACCEPTED"
    alice.click("button.invite-decline")
    alice.wait_for_selector('.my-partstat[data-partstat="DECLINED"]')
    component = _dav_event(server, "invite-42@remote.test")
    partstats = {str(a).lower(): a.params.get("PARTSTAT") for a in component["ATTENDEE"]}
    assert partstats["mailto:alice@example.test"] == "DECLINED"
